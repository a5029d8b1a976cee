//! The deployment's key: one secret shared by every server of a deployment through the
//! registry, which authenticates what servers ask of each other. The router signs the
//! probe requests it sends edges and the RUM jobs it gives browsers; the command
//! invocation system signs the control requests it sends caches; lower tiers present
//! the [`tier_credential`] derived from it to their parents.
//!
//! - [`sign`] and [`verify_signature`]: a lowercase hex HMAC-SHA256 of the bytes sent,
//!   checked in constant time before anything else is parsed.
//! - [`ReplayGuard`]: the nonces of accepted requests, each kept while its request could
//!   still pass the [`MAX_SKEW_MS`] timestamp check, so a captured request works once.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use ring::hmac;

/// Length of a [`DeploymentKey`] in bytes (the HMAC-SHA256 block-size-safe choice).
pub const KEY_LEN: usize = 32;
/// How far a signed request's timestamp may be from the receiver's clock, either way:
/// long enough for modest clock skew, short enough that the replay guard stays small.
pub const MAX_SKEW_MS: u64 = 30_000;
/// What the tier credential signs; changing it changes every deployment's credential.
const TIER_CREDENTIAL_MESSAGE: &[u8] = b"streamcdn tier credential v1";

/// The deployment's key: 32 random bytes, kept in the registry as hex.
#[derive(Clone, PartialEq, Eq)]
pub struct DeploymentKey([u8; KEY_LEN]);

/// Never prints the secret (configs and errors get logged).
impl fmt::Debug for DeploymentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeploymentKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("deployment key must be {expected} hex digits, got {got} characters")]
    Length { expected: usize, got: usize },
    #[error("deployment key is not hex")]
    NotHex,
}

impl DeploymentKey {
    /// A new random key (from the thread's OS-seeded CSPRNG).
    pub fn generate() -> Self {
        Self(rand::random())
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex, 64 digits: the form stored in the registry.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != KEY_LEN * 2 {
            return Err(KeyError::Length {
                expected: KEY_LEN * 2,
                got: text.len(),
            });
        }
        let bytes = from_hex(text).ok_or(KeyError::NotHex)?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::NotHex)?;
        Ok(Self(bytes))
    }

    fn hmac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl FromStr for DeploymentKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// The signature of `body`: lowercase hex HMAC-SHA256 under the deployment key.
pub fn sign(key: &DeploymentKey, body: &[u8]) -> String {
    to_hex(hmac::sign(&key.hmac(), body).as_ref())
}

/// Why a signature was refused. The caller names the header it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature")]
    Missing,
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks `signature` (hex, either case) against `body` in constant time; `None` is a
/// request that came without one.
pub fn verify_signature(
    key: &DeploymentKey,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let tag = from_hex(signature.trim()).ok_or(SignatureError::Mismatch)?;
    hmac::verify(&key.hmac(), body, &tag).map_err(|_| SignatureError::Mismatch)
}

/// What lower tiers present to their parents so they fetch without viewers' tokens.
pub fn tier_credential(key: &DeploymentKey) -> String {
    sign(key, TIER_CREDENTIAL_MESSAGE)
}

/// Whether a request issued at `issued_at_ms` may still be taken at `now_ms`.
pub fn within_skew(issued_at_ms: u64, now_ms: u64) -> bool {
    issued_at_ms.abs_diff(now_ms) <= MAX_SKEW_MS
}

/// Why a [`ReplayGuard`] refused a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("request nonce {0} was already used")]
    Replayed(u64),
    #[error("too many requests within the replay window")]
    Full,
}

impl ReplayError {
    /// The HTTP status the receiver answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Replayed(_) => 401,
            Self::Full => 429,
        }
    }
}

/// Nonces of accepted requests, each kept until its request would be stale anyway
/// (`issued_at + MAX_SKEW_MS`). Bounded: when full of live nonces it refuses new
/// requests rather than forget one (forgetting would allow its replay). Only key holders
/// can add entries, so filling it takes a flood of genuine requests.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    /// nonce → expiry (ms).
    seen: HashMap<u64, u64>,
    by_expiry: BTreeSet<(u64, u64)>,
    capacity: usize,
}

impl Default for ReplayGuard {
    /// Room for ~270 requests a second over the 60 s window.
    fn default() -> Self {
        Self::new(16_384)
    }
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some(&(expiry, nonce)) = self.by_expiry.first() {
            if expiry >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&nonce);
        }
    }

    /// Admits the nonce of a request issued at `issued_at_ms` (already checked with
    /// [`within_skew`]), or refuses a replay.
    pub fn admit(&mut self, nonce: u64, issued_at_ms: u64, now_ms: u64) -> Result<(), ReplayError> {
        self.prune(now_ms);
        if self.seen.contains_key(&nonce) {
            return Err(ReplayError::Replayed(nonce));
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let expiry = issued_at_ms.saturating_add(MAX_SKEW_MS);
        self.seen.insert(nonce, expiry);
        self.by_expiry.insert((expiry, nonce));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn key() -> DeploymentKey {
        DeploymentKey::from_bytes([7; KEY_LEN])
    }

    #[test]
    fn key_hex_round_trip() {
        let k = DeploymentKey::generate();
        let hex = k.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(DeploymentKey::from_hex(&hex).unwrap(), k);
        assert_eq!(hex.parse::<DeploymentKey>().unwrap(), k);
        assert_eq!(DeploymentKey::from_hex(&hex.to_uppercase()).unwrap(), k);
        assert!(matches!(
            DeploymentKey::from_hex("abcd"),
            Err(KeyError::Length { .. })
        ));
        assert_eq!(
            DeploymentKey::from_hex(&"g".repeat(64)),
            Err(KeyError::NotHex)
        );
        assert_eq!(
            DeploymentKey::from_hex(&"é".repeat(32)),
            Err(KeyError::NotHex)
        );
        assert_ne!(DeploymentKey::generate(), k);
        assert_eq!(format!("{k:?}"), "DeploymentKey(..)");
    }

    #[test]
    fn sign_verify_round_trip() {
        let body = b"{\"nonce\":1}";
        let tag = sign(&key(), body);
        assert_eq!(tag.len(), 64);
        assert_eq!(tag, tag.to_lowercase());
        assert_eq!(verify_signature(&key(), body, Some(&tag)), Ok(()));
        // Upper-case hex and surrounding blanks are the same tag.
        let shouted = format!(" {} ", tag.to_uppercase());
        assert_eq!(verify_signature(&key(), body, Some(&shouted)), Ok(()));
    }

    #[test]
    fn missing_garbled_tampered_or_foreign_signatures_are_refused() {
        let body = b"{\"nonce\":1}";
        let tag = sign(&key(), body);
        assert_eq!(
            verify_signature(&key(), body, None),
            Err(SignatureError::Missing)
        );
        for bad in ["", "zz", &tag[..62], "not hex at all", &format!("{tag}00")] {
            assert_eq!(
                verify_signature(&key(), body, Some(bad)),
                Err(SignatureError::Mismatch),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify_signature(&key(), b"{\"nonce\":2}", Some(&tag)),
            Err(SignatureError::Mismatch)
        );
        let other = DeploymentKey::generate();
        assert_eq!(
            verify_signature(&other, body, Some(&tag)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tier_credential_is_the_signature_of_a_fixed_message() {
        // The wire value lower tiers send: it must not change between releases.
        assert_eq!(
            tier_credential(&key()),
            sign(&key(), b"streamcdn tier credential v1")
        );
        assert_ne!(
            tier_credential(&key()),
            tier_credential(&DeploymentKey::generate())
        );
    }

    #[test]
    fn skew_window_is_inclusive_both_ways() {
        assert!(within_skew(NOW, NOW + MAX_SKEW_MS));
        assert!(within_skew(NOW, NOW - MAX_SKEW_MS));
        assert!(!within_skew(NOW, NOW + MAX_SKEW_MS + 1));
        assert!(!within_skew(NOW, NOW - MAX_SKEW_MS - 1));
    }

    #[test]
    fn replayed_nonce_is_refused_until_it_expires() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.admit(42, NOW, NOW), Ok(()));
        assert_eq!(
            guard.admit(42, NOW, NOW + 5_000),
            Err(ReplayError::Replayed(42))
        );
        assert_eq!(ReplayError::Replayed(42).status(), 401);
        // Past its request's skew window the nonce is forgotten.
        assert_eq!(
            guard.admit(43, NOW + MAX_SKEW_MS, NOW + MAX_SKEW_MS + 1),
            Ok(())
        );
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn replay_guard_is_bounded() {
        let mut guard = ReplayGuard::new(2);
        assert_eq!(guard.admit(1, NOW, NOW), Ok(()));
        assert_eq!(guard.admit(2, NOW, NOW), Ok(()));
        assert_eq!(guard.admit(3, NOW, NOW), Err(ReplayError::Full));
        assert_eq!(ReplayError::Full.status(), 429);
        // After the window the old nonces expire and there is room again.
        let later = NOW + MAX_SKEW_MS + 1;
        assert_eq!(guard.admit(3, later, later), Ok(()));
        assert_eq!(guard.len(), 1);
    }
}
