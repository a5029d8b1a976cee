//! What an SRT caller asks for, read from its `streamid` (sans-IO: a pure parser).
//!
//! Two spellings name a publication:
//! - the SRT access-control syntax (Haivision's `docs/features/access-control.md`):
//!   `#!::r=<provider>/<stream>,m=publish,s=<key>`; `s` (the doc's "session ID", a
//!   secret the receiver verifies) carries the stream key, `u` and `h` are accepted and
//!   ignored, as are keys the doc does not define; `m` defaults to `request`, which is
//!   refused (only publishing is served);
//! - the plain form `<provider>/<stream>?key=<key>`, as an RTMP publish URL's path.

use thiserror::Error;

/// Longest `streamid` SRT carries (`SRTO_STREAMID`).
pub const MAX_STREAM_ID: usize = 512;

/// A caller's request to publish `provider/stream`, with the stream key it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub provider: String,
    pub stream: String,
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamIdError {
    #[error("no streamid: publish with streamid=#!::r=<provider>/<stream>,m=publish,s=<key>")]
    Missing,
    #[error("streamid longer than {MAX_STREAM_ID} bytes")]
    TooLong,
    #[error("streamid item {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("streamid names {0:?} twice")]
    Repeated(String),
    #[error("streamid has no resource: add r=<provider>/<stream>")]
    NoResource,
    #[error("resource {0:?} is not <provider>/<stream>")]
    BadResource(String),
    #[error("mode {0:?} is not served: only m=publish (the default mode is request)")]
    UnsupportedMode(String),
    #[error("type {0:?} is not served: only t=stream")]
    UnsupportedType(String),
    #[error("nested streamid syntax (#!:{{...}}) is not supported")]
    Nested,
}

impl StreamIdError {
    /// A caller asking for something other than publishing (a mode or a type we do not
    /// serve), rather than a malformed request.
    pub fn is_unsupported_mode(&self) -> bool {
        matches!(
            self,
            StreamIdError::UnsupportedMode(_) | StreamIdError::UnsupportedType(_)
        )
    }
}

const ACCESS_CONTROL: &str = "#!::";

impl PublishRequest {
    /// Reads a caller's `streamid` (`None` when it sent none).
    pub fn parse(stream_id: Option<&str>) -> Result<PublishRequest, StreamIdError> {
        let text = stream_id
            .filter(|s| !s.is_empty())
            .ok_or(StreamIdError::Missing)?;
        if text.len() > MAX_STREAM_ID {
            return Err(StreamIdError::TooLong);
        }
        if let Some(items) = text.strip_prefix(ACCESS_CONTROL) {
            return parse_access_control(items);
        }
        if text.starts_with("#!:") {
            return Err(StreamIdError::Nested);
        }
        let (resource, query) = text.split_once('?').unwrap_or((text, ""));
        let (provider, stream) = split_resource(resource)?;
        let key = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("key="))
            .map(str::to_owned);
        Ok(PublishRequest {
            provider,
            stream,
            key,
        })
    }
}

fn parse_access_control(items: &str) -> Result<PublishRequest, StreamIdError> {
    let (mut resource, mut mode, mut kind, mut key) = (None, None, None, None);
    let mut seen: Vec<&str> = Vec::new();
    for item in items.split(',') {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| StreamIdError::NotKeyValue(item.to_owned()))?;
        if seen.contains(&name) {
            return Err(StreamIdError::Repeated(name.to_owned()));
        }
        seen.push(name);
        match name {
            "r" => resource = Some(value),
            "m" => mode = Some(value),
            "t" => kind = Some(value),
            "s" => key = Some(value),
            _ => {}
        }
    }
    let mode = mode.unwrap_or("request");
    if mode != "publish" {
        return Err(StreamIdError::UnsupportedMode(mode.to_owned()));
    }
    if let Some(kind) = kind.filter(|&t| t != "stream") {
        return Err(StreamIdError::UnsupportedType(kind.to_owned()));
    }
    let (provider, stream) = split_resource(resource.ok_or(StreamIdError::NoResource)?)?;
    Ok(PublishRequest {
        provider,
        stream,
        key: key.map(str::to_owned),
    })
}

/// `<provider>/<stream>`: two non-empty names (their characters are the hub's to judge).
fn split_resource(resource: &str) -> Result<(String, String), StreamIdError> {
    let bad = || StreamIdError::BadResource(resource.to_owned());
    let (provider, stream) = resource.split_once('/').ok_or_else(bad)?;
    if provider.is_empty() || stream.is_empty() || stream.contains('/') {
        return Err(bad());
    }
    Ok((provider.to_owned(), stream.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stream_id: &str) -> Result<PublishRequest, StreamIdError> {
        PublishRequest::parse(Some(stream_id))
    }

    fn request(provider: &str, stream: &str, key: Option<&str>) -> PublishRequest {
        PublishRequest {
            provider: provider.into(),
            stream: stream.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn access_control_syntax_names_the_stream_and_key() {
        assert_eq!(
            parse("#!::r=demo/cam,m=publish,s=secret"),
            Ok(request("demo", "cam", Some("secret")))
        );
        // Any order; user, host and keys the convention does not define are ignored.
        assert_eq!(
            parse("#!::u=alice,s=a=b,m=publish,h=example.com,x-foo=1,r=demo/cam,t=stream"),
            Ok(request("demo", "cam", Some("a=b")))
        );
        assert_eq!(
            parse("#!::m=publish,r=demo/cam"),
            Ok(request("demo", "cam", None))
        );
    }

    #[test]
    fn only_publishing_is_served() {
        assert_eq!(
            parse("#!::r=demo/cam,s=k"),
            Err(StreamIdError::UnsupportedMode("request".into()))
        );
        assert_eq!(
            parse("#!::r=demo/cam,m=request"),
            Err(StreamIdError::UnsupportedMode("request".into()))
        );
        assert_eq!(
            parse("#!::r=demo/cam,m=bidirectional"),
            Err(StreamIdError::UnsupportedMode("bidirectional".into()))
        );
        assert_eq!(
            parse("#!::r=demo/cam,m=publish,t=file"),
            Err(StreamIdError::UnsupportedType("file".into()))
        );
        assert!(parse("#!::r=demo/cam").unwrap_err().is_unsupported_mode());
    }

    #[test]
    fn plain_form_is_an_rtmp_like_path() {
        assert_eq!(
            parse("demo/cam?key=secret"),
            Ok(request("demo", "cam", Some("secret")))
        );
        assert_eq!(
            parse("demo/cam?x=1&key=secret"),
            Ok(request("demo", "cam", Some("secret")))
        );
        assert_eq!(parse("demo/cam"), Ok(request("demo", "cam", None)));
    }

    #[test]
    fn malformed_stream_ids_say_what_is_wrong() {
        assert_eq!(PublishRequest::parse(None), Err(StreamIdError::Missing));
        assert_eq!(parse(""), Err(StreamIdError::Missing));
        assert_eq!(
            parse(&"a".repeat(MAX_STREAM_ID + 1)),
            Err(StreamIdError::TooLong)
        );
        assert_eq!(
            parse("#!::r=demo/cam,m=publish,junk"),
            Err(StreamIdError::NotKeyValue("junk".into()))
        );
        assert_eq!(
            parse("#!::r=demo/cam,r=demo/other,m=publish"),
            Err(StreamIdError::Repeated("r".into()))
        );
        assert_eq!(parse("#!::m=publish"), Err(StreamIdError::NoResource));
        assert_eq!(parse("#!:{r=demo/cam}"), Err(StreamIdError::Nested));
        for bad in ["demo", "demo/", "/cam", "demo/cam/x", "?key=k"] {
            assert!(
                matches!(parse(bad), Err(StreamIdError::BadResource(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator over the characters that matter to the parser.
        let alphabet = b"#!:{}=,/?&rmstkey-publish";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut text = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for i in 0..(state % 40) {
                let pick = (state.rotate_left(i as u32 * 5) % alphabet.len() as u64) as usize;
                text.push(alphabet[pick] as char);
            }
            let _ = PublishRequest::parse(Some(&text));
        }
    }
}
