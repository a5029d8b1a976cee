//! The CI/T objects as JSON (RFC 8007 §5): commands, Trigger Status Resources and
//! Trigger Collections, their media types, and parsing from bytes with errors that
//! name the field and map to the HTTP answer (§4.1, §4.7).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::pattern::{PatternError, PatternMatch};
use crate::pid::{CdnPath, CdnPid, PidError};

/// Bounds on what a peer may send: whole bodies, the URLs, ccids and patterns of one
/// trigger together, each string, the hops of a `cdn-path`.
pub const MAX_BODY_BYTES: usize = 1 << 20;
pub const MAX_ENTRIES: usize = 10_000;
pub const MAX_STRING_BYTES: usize = 8 * 1024;
pub const MAX_CDN_PATH: usize = 32;

/// Seconds since the UNIX epoch (§5.2.5).
pub type AbsoluteTime = u64;

/// The `ptype` of `application/cdni` (§5.1, §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Command,
    Status,
    Collection,
}

impl PayloadType {
    pub fn ptype(self) -> &'static str {
        match self {
            PayloadType::Command => "ci-trigger-command",
            PayloadType::Status => "ci-trigger-status",
            PayloadType::Collection => "ci-trigger-collection",
        }
    }

    /// The `Content-Type` to send.
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadType::Command => "application/cdni; ptype=ci-trigger-command",
            PayloadType::Status => "application/cdni; ptype=ci-trigger-status",
            PayloadType::Collection => "application/cdni; ptype=ci-trigger-collection",
        }
    }

    /// Checks a received `Content-Type`: `application/cdni` (any case) with this
    /// `ptype` (quoted or not); other parameters are ignored.
    pub fn check(self, content_type: Option<&str>) -> Result<(), MediaTypeError> {
        let wrong = || MediaTypeError {
            expected: self.content_type(),
            got: content_type.map(|c| c.chars().take(100).collect()),
        };
        let mut parts = content_type.ok_or_else(wrong)?.split(';');
        let media_type = parts.next().unwrap_or_default().trim();
        let ptype = parts.find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("ptype")
                .then(|| value.trim().trim_matches('"'))
        });
        if media_type.eq_ignore_ascii_case("application/cdni") && ptype == Some(self.ptype()) {
            Ok(())
        } else {
            Err(wrong())
        }
    }
}

/// Answered `415 Unsupported Media Type`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("expected Content-Type {expected:?}, got {got:?}")]
pub struct MediaTypeError {
    pub expected: &'static str,
    pub got: Option<String>,
}

/// §5.2.2. A type we do not know is kept, so the command becomes a `failed` Trigger
/// Status Resource with `eunsupported` rather than a `400`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerType {
    Preposition,
    Invalidate,
    Purge,
    Unsupported(String),
}

impl TriggerType {
    pub fn as_str(&self) -> &str {
        match self {
            TriggerType::Preposition => "preposition",
            TriggerType::Invalidate => "invalidate",
            TriggerType::Purge => "purge",
            TriggerType::Unsupported(other) => other,
        }
    }
}

impl Serialize for TriggerType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TriggerType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Names are lowercase (§5): "Purge" is a type we do not support.
        Ok(match String::deserialize(deserializer)?.as_str() {
            "preposition" => TriggerType::Preposition,
            "invalidate" => TriggerType::Invalidate,
            "purge" => TriggerType::Purge,
            other => TriggerType::Unsupported(other.to_owned()),
        })
    }
}

/// §5.2.3, with the double-l spellings of §2.3, §4.3 and Appendix A (errata 5053);
/// the table's single-l spellings are read too, from peers that followed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerStatus {
    Pending,
    Active,
    Complete,
    Processed,
    Failed,
    #[serde(alias = "canceling")]
    Cancelling,
    #[serde(alias = "canceled")]
    Cancelled,
}

impl TriggerStatus {
    /// No further change will come from processing (a `processed` trigger may still be
    /// cancelled, §4.3).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TriggerStatus::Complete
                | TriggerStatus::Processed
                | TriggerStatus::Failed
                | TriggerStatus::Cancelled
        )
    }
}

/// §5.2.7, `ecancelled` spelled as errata 5054 has it (`ecanceled` is read too). A code
/// we do not know is kept: it is fatal, and the request is not retried unmodified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Emeta,
    Econtent,
    Eperm,
    Ereject,
    Ecdn,
    Ecancelled,
    Eunsupported,
    Unknown(String),
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Emeta => "emeta",
            ErrorCode::Econtent => "econtent",
            ErrorCode::Eperm => "eperm",
            ErrorCode::Ereject => "ereject",
            ErrorCode::Ecdn => "ecdn",
            ErrorCode::Ecancelled => "ecancelled",
            ErrorCode::Eunsupported => "eunsupported",
            ErrorCode::Unknown(other) => other,
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(deserializer)?.as_str() {
            "emeta" => ErrorCode::Emeta,
            "econtent" => ErrorCode::Econtent,
            "eperm" => ErrorCode::Eperm,
            "ereject" => ErrorCode::Ereject,
            "ecdn" => ErrorCode::Ecdn,
            "ecancelled" | "ecanceled" => ErrorCode::Ecancelled,
            "eunsupported" => ErrorCode::Eunsupported,
            other => ErrorCode::Unknown(other.to_owned()),
        })
    }
}

/// A property that is an array when present: `null` is not an empty array.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// What a trigger acts on (§5.2.1), and what an error is about (§5.2.6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct References {
    #[serde(
        rename = "metadata.urls",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_urls: Option<Vec<String>>,
    #[serde(
        rename = "content.urls",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub content_urls: Option<Vec<String>>,
    #[serde(
        rename = "content.ccid",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub content_ccid: Option<Vec<String>>,
    #[serde(
        rename = "metadata.patterns",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_patterns: Option<Vec<PatternMatch>>,
    #[serde(
        rename = "content.patterns",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub content_patterns: Option<Vec<PatternMatch>>,
}

impl References {
    /// Adds `other`'s references to ours.
    pub fn extend(&mut self, other: &References) {
        fn add<T: Clone>(ours: &mut Option<Vec<T>>, theirs: &Option<Vec<T>>) {
            if let Some(theirs) = theirs {
                ours.get_or_insert_with(Vec::new)
                    .extend(theirs.iter().cloned());
            }
        }
        add(&mut self.metadata_urls, &other.metadata_urls);
        add(&mut self.content_urls, &other.content_urls);
        add(&mut self.content_ccid, &other.content_ccid);
        add(&mut self.metadata_patterns, &other.metadata_patterns);
        add(&mut self.content_patterns, &other.content_patterns);
    }

    fn count(&self) -> usize {
        let len = |list: &Option<Vec<String>>| list.as_ref().map_or(0, Vec::len);
        let patterns = |list: &Option<Vec<PatternMatch>>| list.as_ref().map_or(0, Vec::len);
        len(&self.metadata_urls)
            + len(&self.content_urls)
            + len(&self.content_ccid)
            + patterns(&self.metadata_patterns)
            + patterns(&self.content_patterns)
    }
}

/// A Trigger Specification (§5.2.1). Properties we do not know are kept and passed on
/// (§5, §5.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerSpec {
    #[serde(rename = "type")]
    pub trigger_type: TriggerType,
    #[serde(flatten)]
    pub references: References,
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl<'de> Deserialize<'de> for TriggerSpec {
    /// By hand rather than derived with `flatten`, which would hide which property an
    /// error is about.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = Map::deserialize(deserializer)?;
        let trigger_type =
            take(&mut object, "type")?.ok_or_else(|| serde::de::Error::missing_field("type"))?;
        let references = References {
            metadata_urls: take(&mut object, "metadata.urls")?,
            content_urls: take(&mut object, "content.urls")?,
            content_ccid: take(&mut object, "content.ccid")?,
            metadata_patterns: take(&mut object, "metadata.patterns")?,
            content_patterns: take(&mut object, "content.patterns")?,
        };
        Ok(TriggerSpec {
            trigger_type,
            references,
            extensions: object,
        })
    }
}

fn take<T: for<'de> Deserialize<'de>, E: serde::de::Error>(
    object: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<T>, E> {
    object
        .remove(name)
        .map(|value| T::deserialize(value).map_err(|e| E::custom(format_args!("{name}: {e}"))))
        .transpose()
}

/// An Error Description (§5.2.6). `content.ccid` is carried too, so an error about a
/// ccid-only trigger can name what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDescription {
    pub error: ErrorCode,
    #[serde(flatten)]
    pub references: References,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ErrorDescription {
    /// An error about everything the trigger names, copied exactly (§5.2.6).
    pub fn for_whole(spec: &TriggerSpec, error: ErrorCode, description: Option<String>) -> Self {
        ErrorDescription {
            error,
            references: spec.references.clone(),
            description,
        }
    }
}

/// What a CI/T command asks (§5.1.1): exactly one of `trigger` or `cancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Trigger(TriggerSpec),
    /// URLs of Trigger Status Resources to cancel.
    Cancel(Vec<String>),
}

/// A CI/T command: what it asks, and its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub action: Action,
    pub envelope: Envelope,
}

/// What travels with a command besides its action: the CDNs it has passed through
/// (§4.6), and properties we do not know, to pass on (§5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub cdn_path: CdnPath,
    pub extensions: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct WireCommand {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    trigger: Option<TriggerSpec>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    cancel: Option<Vec<String>>,
    #[serde(
        rename = "cdn-path",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    cdn_path: Option<Vec<String>>,
    #[serde(flatten)]
    extensions: Map<String, Value>,
}

impl Command {
    /// The command as we cascade it to a dCDN: our PID appended to `cdn-path` (§4.6),
    /// everything else as received.
    pub fn cascaded_by(&self, us: CdnPid) -> Command {
        Command {
            action: self.action.clone(),
            envelope: Envelope {
                cdn_path: self.envelope.cdn_path.cascaded_by(us),
                extensions: self.envelope.extensions.clone(),
            },
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let (trigger, cancel) = match &self.action {
            Action::Trigger(spec) => (Some(spec.clone()), None),
            Action::Cancel(urls) => (None, Some(urls.clone())),
        };
        let wire = WireCommand {
            trigger,
            cancel,
            cdn_path: Some(
                self.envelope
                    .cdn_path
                    .pids()
                    .iter()
                    .map(CdnPid::to_string)
                    .collect(),
            ),
            extensions: self.envelope.extensions.clone(),
        };
        to_json(&wire)
    }
}

/// A Trigger Status Resource (§5.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResource {
    pub trigger: TriggerSpec,
    #[serde(deserialize_with = "seconds")]
    pub ctime: AbsoluteTime,
    #[serde(deserialize_with = "seconds")]
    pub mtime: AbsoluteTime,
    #[serde(
        default,
        deserialize_with = "some_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub etime: Option<AbsoluteTime>,
    pub status: TriggerStatus,
    /// An empty array is the same as none (§5.1.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDescription>,
}

/// Absolute Time is a JSON number (§5.2.5): a peer may send a fraction.
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AbsoluteTime, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if value.is_finite() && value >= 0.0 {
        Ok(value as AbsoluteTime)
    } else {
        Err(serde::de::Error::custom(
            "a time is a number of seconds since 1970",
        ))
    }
}

fn some_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AbsoluteTime>, D::Error> {
    seconds(deserializer).map(Some)
}

/// A Trigger Collection (§5.1.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionResource {
    pub triggers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleresourcetime: Option<u64>,
    #[serde(rename = "coll-all", default, skip_serializing_if = "Option::is_none")]
    pub coll_all: Option<String>,
    #[serde(
        rename = "coll-pending",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub coll_pending: Option<String>,
    #[serde(
        rename = "coll-active",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub coll_active: Option<String>,
    #[serde(
        rename = "coll-complete",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub coll_complete: Option<String>,
    #[serde(
        rename = "coll-failed",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub coll_failed: Option<String>,
    #[serde(rename = "cdn-id", default, skip_serializing_if = "Option::is_none")]
    pub cdn_id: Option<CdnPid>,
}

/// Why a received object is refused. [`WireError::http_status`] is the answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error(transparent)]
    MediaType(#[from] MediaTypeError),
    #[error("the body is {0} bytes, over the limit of {MAX_BODY_BYTES}")]
    TooLarge(usize),
    #[error("malformed JSON at {path}: {message}")]
    Json { path: String, message: String },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: Problem },
    /// §4.6: a dCDN rejects a command whose `cdn-path` already holds its own PID.
    #[error("cdn-path already holds our id {0}: the command has looped")]
    Loop(CdnPid),
}

impl WireError {
    /// `415` for the media type, `413` for size, `400` for the rest: malformed, or a
    /// loop (RFC 8007 names no code for that; §4.7 lists 400 for rejections).
    pub fn http_status(&self) -> u16 {
        match self {
            WireError::MediaType(_) => 415,
            WireError::TooLarge(_) => 413,
            WireError::Json { .. } | WireError::Invalid { .. } | WireError::Loop(_) => 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("missing")]
    Missing,
    #[error("empty")]
    Empty,
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("more than {MAX_CDN_PATH} hops")]
    PathTooLong,
    #[error("longer than {MAX_STRING_BYTES} bytes")]
    TooLong,
    #[error("not an absolute http or https URL")]
    NotHttpUrl,
    #[error("exactly one of \"trigger\" and \"cancel\" must be present")]
    NotExactlyOneAction,
    #[error("at least one of metadata.* and content.* must be present and non-empty")]
    NothingToActOn,
    #[error("patterns are not allowed in a preposition trigger")]
    PatternWithPreposition,
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(transparent)]
    Pid(#[from] PidError),
}

fn invalid(field: impl Into<String>, problem: Problem) -> WireError {
    WireError::Invalid {
        field: field.into(),
        problem,
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our types hold only strings, numbers, booleans and string-keyed maps.
    serde_json::to_vec(value).expect("CI/T objects serialize")
}

impl StatusResource {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

impl CollectionResource {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

fn decode<T: for<'de> Deserialize<'de>>(
    payload: PayloadType,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, WireError> {
    payload.check(content_type)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| WireError::Json {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    json.end().map_err(|e| WireError::Json {
        path: ".".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// A command POSTed by a peer to the collection (§4.1): media type, size, JSON,
/// the rules of §5.1.1 and §5.2.1, and loop detection for `receiver`, our PID (§4.6).
pub fn parse_command(
    content_type: Option<&str>,
    body: &[u8],
    receiver: CdnPid,
) -> Result<Command, WireError> {
    let wire: WireCommand = decode(PayloadType::Command, content_type, body)?;
    let cdn_path = wire
        .cdn_path
        .clone()
        .ok_or_else(|| invalid("cdn-path", Problem::Missing))?;
    if cdn_path.is_empty() {
        return Err(invalid("cdn-path", Problem::Empty));
    }
    let command = validate(wire, cdn_path)?;
    if command.envelope.cdn_path.contains(&receiver) {
        return Err(WireError::Loop(receiver));
    }
    Ok(command)
}

/// A command from our own operator (the admin API): the same JSON, but it starts here,
/// so `cdn-path` may be absent (we are the first to issue it).
pub fn parse_operator_command(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Command, WireError> {
    let wire: WireCommand = decode(PayloadType::Command, content_type, body)?;
    let cdn_path = wire.cdn_path.clone().unwrap_or_default();
    validate(wire, cdn_path)
}

/// A peer's Trigger Status Resource, as polled by the uCDN side.
pub fn parse_status(content_type: Option<&str>, body: &[u8]) -> Result<StatusResource, WireError> {
    decode(PayloadType::Status, content_type, body)
}

/// A peer's Trigger Collection, as polled by the uCDN side.
pub fn parse_collection(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<CollectionResource, WireError> {
    decode(PayloadType::Collection, content_type, body)
}

fn validate(wire: WireCommand, cdn_path: Vec<String>) -> Result<Command, WireError> {
    if cdn_path.len() > MAX_CDN_PATH {
        return Err(invalid("cdn-path", Problem::PathTooLong));
    }
    let pids = cdn_path
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            pid.parse()
                .map_err(|e: PidError| invalid(format!("cdn-path[{i}]"), e.into()))
        })
        .collect::<Result<Vec<CdnPid>, _>>()?;
    let action = match (wire.trigger, wire.cancel) {
        (Some(spec), None) => {
            validate_spec(&spec)?;
            Action::Trigger(spec)
        }
        (None, Some(urls)) => {
            if urls.is_empty() {
                return Err(invalid("cancel", Problem::Empty));
            }
            if urls.len() > MAX_ENTRIES {
                return Err(invalid("cancel", Problem::TooManyEntries));
            }
            check_urls("cancel", &urls)?;
            Action::Cancel(urls)
        }
        _ => return Err(invalid("trigger", Problem::NotExactlyOneAction)),
    };
    Ok(Command {
        action,
        envelope: Envelope {
            cdn_path: CdnPath::new(pids),
            extensions: wire.extensions,
        },
    })
}

fn validate_spec(spec: &TriggerSpec) -> Result<(), WireError> {
    let refs = &spec.references;
    if spec.trigger_type.as_str().len() > MAX_STRING_BYTES {
        return Err(invalid("trigger.type", Problem::TooLong));
    }
    if refs.count() > MAX_ENTRIES {
        return Err(invalid("trigger", Problem::TooManyEntries));
    }
    if refs.count() == 0 {
        return Err(invalid("trigger", Problem::NothingToActOn));
    }
    check_urls(
        "trigger.metadata.urls",
        refs.metadata_urls.as_deref().unwrap_or_default(),
    )?;
    check_urls(
        "trigger.content.urls",
        refs.content_urls.as_deref().unwrap_or_default(),
    )?;
    for (i, ccid) in refs.content_ccid.iter().flatten().enumerate() {
        let problem = match ccid.len() {
            0 => Problem::Empty,
            n if n > MAX_STRING_BYTES => Problem::TooLong,
            _ => continue,
        };
        return Err(invalid(format!("trigger.content.ccid[{i}]"), problem));
    }
    for (field, patterns) in [
        ("trigger.metadata.patterns", &refs.metadata_patterns),
        ("trigger.content.patterns", &refs.content_patterns),
    ] {
        if patterns.is_some() && spec.trigger_type == TriggerType::Preposition {
            return Err(invalid(field, Problem::PatternWithPreposition));
        }
        for (i, pattern) in patterns.iter().flatten().enumerate() {
            let field = || format!("{field}[{i}].pattern");
            if pattern.pattern.len() > MAX_STRING_BYTES {
                return Err(invalid(field(), Problem::TooLong));
            }
            pattern.validate().map_err(|e| invalid(field(), e.into()))?;
        }
    }
    Ok(())
}

fn check_urls(field: &str, urls: &[String]) -> Result<(), WireError> {
    for (i, url) in urls.iter().enumerate() {
        let problem = if url.len() > MAX_STRING_BYTES {
            Problem::TooLong
        } else if !is_http_url(url) {
            Problem::NotHttpUrl
        } else {
            continue;
        };
        return Err(invalid(format!("{field}[{i}]"), problem));
    }
    Ok(())
}

/// URLs in CI/T are HTTP/HTTPS URIs (§2): a scheme, a host, and no whitespace or
/// control characters.
fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return false;
    };
    !rest.is_empty()
        && !rest.starts_with(['/', '?', '#'])
        && !url.bytes().any(|b| b.is_ascii_control() || b == b' ')
}
