//! How the servers of a deployment read each other's admin APIs (the deployment view,
//! `streamcdn_overview`): requests signed with a key derived from the deployment key,
//! let in as read-only callers (`streamcdn_access::admin::PeerKey`).

use streamcdn_access::admin::PeerKey;
use streamcdn_router::probe::{self, ProbeKey};

/// What the peer key is derived for: the deployment key signs this, and the result is
/// the peers' secret (so a peer's signature is never valid for another of the key's uses).
const PEER_KEY_PURPOSE: &[u8] = b"streamcdn admin peer v1";

/// The deployment's peer key for admin requests, from the deployment key.
pub fn peer_key(deployment_key: &ProbeKey) -> PeerKey {
    PeerKey::new(probe::sign(deployment_key, PEER_KEY_PURPOSE).as_bytes())
}
