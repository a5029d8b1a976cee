//! Signed playback URLs at the edge (`streamcdn_access::playback`): a request for a
//! provider with playback keys must carry a valid token (`/t/<token>/<provider>/...`),
//! checked here with the keys the provider's servers published in the registry (re-read
//! in the background every [`KEYS_FRESH_FOR`], never on a request's path once known), and
//! is then served as the path
//! without the token, so every viewer shares one cached copy. Anything else is `403`,
//! counted by reason, before the cache or an upstream is asked.
//!
//! Lower tiers fetch without tokens: they present the deployment's tier credential
//! ([`TIER_HEADER`], `streamcdn_access::deployment::tier_credential`) and are let through.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::hmac;
use streamcdn_access::playback::{self, Refusal};
use streamcdn_registry::Registry;

use streamcdn_edge::TIER_HEADER;
/// How long a provider's published keys are used before they are read again.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(2);
/// How long the first request for a provider waits for its keys.
const FIRST_READ_WITHIN: Duration = Duration::from_secs(2);

/// A provider's playback keys, as bytes.
type Keys = Arc<Vec<Vec<u8>>>;

pub struct PlaybackAccess {
    registry: Registry,
    /// The credential as an HMAC key over a fixed message, so the presented one is
    /// compared in constant time.
    credential: hmac::Tag,
    keys: Mutex<HashMap<String, (Instant, Keys)>>,
    /// Providers whose keys are being re-read.
    refreshing: Mutex<HashSet<String>>,
}

const CREDENTIAL_CONTEXT: &[u8] = b"tier";

fn credential_tag(credential: &str) -> hmac::Tag {
    hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, credential.as_bytes()),
        CREDENTIAL_CONTEXT,
    )
}

impl PlaybackAccess {
    pub fn new(registry: Registry, credential: &str) -> Arc<Self> {
        Arc::new(PlaybackAccess {
            registry,
            credential: credential_tag(credential),
            keys: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(HashSet::new()),
        })
    }

    fn is_tier(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, p.as_bytes());
            hmac::verify(&key, CREDENTIAL_CONTEXT, self.credential.as_ref()).is_ok()
        })
    }

    /// The provider's playback keys (empty: open playback). Known keys are answered at
    /// once and, once older than [`KEYS_FRESH_FOR`], re-read in the background (one
    /// read per provider at a time): a registry that is slow or down never holds a
    /// viewer's request. Only a provider never seen waits for the registry, at most
    /// [`FIRST_READ_WITHIN`]; `None` if it could not be read.
    async fn keys(self: &Arc<Self>, provider: &str) -> Option<Keys> {
        let cached = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(provider)
            .cloned();
        if let Some((read, keys)) = cached {
            if read.elapsed() >= KEYS_FRESH_FOR {
                self.refresh_in_background(provider);
            }
            return Some(keys);
        }
        let read = tokio::time::timeout(FIRST_READ_WITHIN, self.read(provider)).await;
        read.ok().flatten()
    }

    fn refresh_in_background(self: &Arc<Self>, provider: &str) {
        let started = self
            .refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(provider.to_owned());
        if !started {
            return;
        }
        let (access, provider) = (self.clone(), provider.to_owned());
        tokio::spawn(async move {
            access.read(&provider).await;
            access
                .refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&provider);
        });
    }

    /// Reads the provider's keys from the registry into the cache.
    async fn read(&self, provider: &str) -> Option<Keys> {
        match self.registry.playback_keys(provider).await {
            Ok(keys) => {
                let keys: Keys = Arc::new(keys.into_iter().map(String::into_bytes).collect());
                let mut all = self.keys.lock().unwrap_or_else(|e| e.into_inner());
                // Bounded: names come from requests.
                if all.len() > 10_000 {
                    all.clear();
                }
                all.insert(provider.to_owned(), (Instant::now(), keys.clone()));
                Some(keys)
            }
            Err(e) => {
                tracing::warn!(provider, error = %e, "cannot read playback keys; the last known apply");
                None
            }
        }
    }
}

/// The provider's keys could not be read yet: neither open nor refuse.
fn unavailable() -> Response {
    metrics::counter!("streamcdn_edge_token_checks_total", "result" => "keys_unavailable")
        .increment(1);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot check access now: the registry does not answer\n",
    )
        .into_response()
}

fn refused(reason: Refusal) -> Response {
    metrics::counter!("streamcdn_edge_token_checks_total", "result" => reason.label()).increment(1);
    (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response()
}

/// The first path segment, when it can name a provider.
fn provider_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix('/')?.split('/').next()?;
    streamcdn_urls::is_valid_name(name).then_some(name)
}

/// Middleware in front of the edge: checks tokens, strips them.
pub async fn check(
    State(access): State<Arc<PlaybackAccess>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(TIER_HEADER)
        .and_then(|v| v.to_str().ok());
    if access.is_tier(presented) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    match playback::split(&path) {
        Some((token, rest)) => {
            let Some(provider) = provider_of(rest) else {
                return refused(Refusal::OtherStream);
            };
            let Some(keys) = access.keys(provider).await else {
                return unavailable();
            };
            if !keys.is_empty() {
                let client = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip());
                let Some(client) = client else {
                    return refused(Refusal::OtherClient);
                };
                if let Err(reason) = playback::check(
                    token,
                    rest,
                    &keys,
                    client,
                    streamcdn_support::clock::now_secs(),
                ) {
                    return refused(reason);
                }
                metrics::counter!("streamcdn_edge_token_checks_total", "result" => "ok")
                    .increment(1);
            }
            // Served as the path without its token: one cached copy for every viewer.
            let target = match request.uri().query() {
                Some(query) => format!("{rest}?{query}"),
                None => rest.to_owned(),
            };
            match target.parse::<Uri>() {
                Ok(uri) => *request.uri_mut() = uri,
                Err(_) => return refused(Refusal::Malformed),
            }
            next.run(request).await
        }
        None => {
            if let Some(provider) = provider_of(&path) {
                match access.keys(provider).await {
                    Some(keys) if !keys.is_empty() => return refused(Refusal::Missing),
                    Some(_) => {}
                    None => return unavailable(),
                }
            }
            next.run(request).await
        }
    }
}
