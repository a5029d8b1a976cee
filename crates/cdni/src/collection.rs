//! The Trigger Status Resources of every uCDN we serve (§3): each participant sees only
//! its own, through the collection of all and the filtered views, with ETags for `304`
//! polling (§4.2) and expiry `staleresourcetime` after a trigger finishes (§4.5).

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::pid::CdnPid;
use crate::target::Assignment;
use crate::trigger::{Effect, Event, Trigger, TriggerId};
use crate::wire::{
    AbsoluteTime, CollectionResource, Envelope, ErrorCode, TriggerSpec, TriggerStatus,
};

/// §4.5 recommends keeping finished triggers at least this long.
pub const DEFAULT_STALE_AFTER_SECS: u64 = 24 * 60 * 60;

/// The filtered views of §3. `cancelling` stays in Active, `cancelled` goes to Failed
/// (§4.3); `processed` is in Complete (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    All,
    Pending,
    Active,
    Complete,
    Failed,
}

impl View {
    pub fn holds(self, status: TriggerStatus) -> bool {
        use TriggerStatus as S;
        match self {
            View::All => true,
            View::Pending => status == S::Pending,
            View::Active => matches!(status, S::Active | S::Cancelling),
            View::Complete => matches!(status, S::Complete | S::Processed),
            View::Failed => matches!(status, S::Failed | S::Cancelled),
        }
    }

    /// Where the view lives under the collection's base URL.
    pub fn url(self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            View::All => base.to_owned(),
            View::Pending => format!("{base}/pending"),
            View::Active => format!("{base}/active"),
            View::Complete => format!("{base}/complete"),
            View::Failed => format!("{base}/failed"),
        }
    }
}

pub fn trigger_url(base: &str, id: TriggerId) -> String {
    format!("{}/{}", base.trim_end_matches('/'), id.0)
}

/// The trigger a status resource URL names, if it is one of ours under `base`.
pub fn trigger_id_from_url(base: &str, url: &str) -> Option<TriggerId> {
    let id = url
        .strip_prefix(base.trim_end_matches('/'))?
        .strip_prefix('/')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().map(TriggerId)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AccessError {
    #[error("no such trigger")]
    NotFound,
    #[error("the trigger belongs to another CDN")]
    Forbidden,
}

impl AccessError {
    pub fn http_status(self) -> u16 {
        match self {
            AccessError::NotFound => 404,
            AccessError::Forbidden => 403,
        }
    }
}

/// The answer to a cancel command (§4.3): `200` once every named trigger is inactive,
/// `202` while one is still `cancelling`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReply {
    pub effects: Vec<Effect>,
    pub still_active: bool,
}

impl CancelReply {
    pub fn http_status(&self) -> u16 {
        if self.still_active {
            202
        } else {
            200
        }
    }
}

/// A rendered resource and its entity tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub etag: String,
}

impl Rendered {
    fn new(body: Vec<u8>) -> Self {
        let digest = Md5::digest(&body);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Rendered {
            body,
            etag: format!("\"{hex}\""),
        }
    }

    /// Whether an `If-None-Match` header names this representation (weak comparison,
    /// RFC 9110 §13.1.2): then the answer is `304`.
    pub fn is_current(&self, if_none_match: &str) -> bool {
        streamcdn_urls::conditional::if_none_match(if_none_match, &self.etag)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Owned {
    owner: CdnPid,
    trigger: Trigger,
}

/// Every trigger this CIS holds, keyed by id, each owned by the uCDN that issued it (or
/// by us, for our operator's commands). Serializable, so the shell can keep it across
/// restarts; ids are never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    cdn_id: CdnPid,
    stale_after: u64,
    next_id: u64,
    triggers: BTreeMap<TriggerId, Owned>,
}

impl Collection {
    /// `stale_after` is the `staleresourcetime` we report and apply, in seconds.
    pub fn new(cdn_id: CdnPid, stale_after: u64) -> Self {
        Collection {
            cdn_id,
            stale_after,
            next_id: 0,
            triggers: BTreeMap::new(),
        }
    }

    fn insert(&mut self, owner: CdnPid, make: impl FnOnce(TriggerId) -> Trigger) -> TriggerId {
        let id = TriggerId(self.next_id);
        self.next_id += 1;
        self.triggers.insert(
            id,
            Owned {
                owner,
                trigger: make(id),
            },
        );
        id
    }

    /// Creates the trigger for an accepted command (see [`Trigger::accept`]).
    pub fn accept<A: Into<Assignment>>(
        &mut self,
        owner: CdnPid,
        spec: TriggerSpec,
        envelope: Envelope,
        stages: Vec<Vec<A>>,
        now: AbsoluteTime,
    ) -> TriggerId {
        self.insert(owner, |id| Trigger::accept(id, spec, envelope, stages, now))
    }

    /// Creates a `failed` trigger for a command we will not act upon (see
    /// [`Trigger::refuse`]).
    pub fn refuse(
        &mut self,
        owner: CdnPid,
        spec: TriggerSpec,
        envelope: Envelope,
        error: ErrorCode,
        description: String,
        now: AbsoluteTime,
    ) -> TriggerId {
        self.insert(owner, |id| {
            Trigger::refuse(id, spec, envelope, error, description, now)
        })
    }

    pub fn get(&self, owner: CdnPid, id: TriggerId) -> Result<&Trigger, AccessError> {
        match self.triggers.get(&id) {
            None => Err(AccessError::NotFound),
            Some(owned) if owned.owner != owner => Err(AccessError::Forbidden),
            Some(owned) => Ok(&owned.trigger),
        }
    }

    /// An event of our own side (a report, a timer). A trigger that is gone (deleted,
    /// expired) takes nothing.
    /// The uCDN a trigger belongs to.
    pub fn owner_of(&self, id: TriggerId) -> Option<CdnPid> {
        self.triggers.get(&id).map(|owned| owned.owner)
    }

    pub fn on_event(&mut self, id: TriggerId, event: Event, now: AbsoluteTime) -> Vec<Effect> {
        match self.triggers.get_mut(&id) {
            Some(owned) => owned.trigger.on_event(event, now),
            None => Vec::new(),
        }
    }

    /// A cancel command (§4.3): every URL must name one of `owner`'s triggers, or
    /// nothing is cancelled.
    pub fn cancel(
        &mut self,
        owner: CdnPid,
        urls: &[String],
        base: &str,
        now: AbsoluteTime,
    ) -> Result<CancelReply, AccessError> {
        let ids = urls
            .iter()
            .map(|url| {
                let id = trigger_id_from_url(base, url).ok_or(AccessError::NotFound)?;
                self.get(owner, id).map(|_| id)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut reply = CancelReply {
            effects: Vec::new(),
            still_active: false,
        };
        for id in ids {
            reply.effects.extend(self.on_event(id, Event::Cancel, now));
            let status = self.get(owner, id).map(Trigger::status)?;
            reply.still_active |= !status.is_final();
        }
        Ok(reply)
    }

    /// DELETE (§4.4): like a cancel, and the resource is gone at once.
    pub fn delete(
        &mut self,
        owner: CdnPid,
        id: TriggerId,
        now: AbsoluteTime,
    ) -> Result<Vec<Effect>, AccessError> {
        self.get(owner, id)?;
        let effects = self.on_event(id, Event::Cancel, now);
        self.triggers.remove(&id);
        Ok(effects)
    }

    /// Removes the triggers finished for `staleresourcetime` (§4.5).
    pub fn expire(&mut self, now: AbsoluteTime) -> Vec<TriggerId> {
        let stale: Vec<TriggerId> = self
            .triggers
            .iter()
            .filter(|(_, owned)| self.expiry_of(&owned.trigger).is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            self.triggers.remove(id);
        }
        stale
    }

    /// When [`Collection::expire`] next has something to do.
    pub fn next_expiry(&self) -> Option<AbsoluteTime> {
        self.triggers
            .values()
            .filter_map(|owned| self.expiry_of(&owned.trigger))
            .min()
    }

    fn expiry_of(&self, trigger: &Trigger) -> Option<AbsoluteTime> {
        // A finished trigger's last change is when it finished.
        trigger
            .status()
            .is_final()
            .then(|| trigger.mtime().saturating_add(self.stale_after))
    }

    /// After a restart: every trigger resumes (see [`Event::Resumed`]).
    pub fn resume(&mut self, now: AbsoluteTime) -> Vec<Effect> {
        let ids: Vec<TriggerId> = self.triggers.keys().copied().collect();
        ids.into_iter()
            .flat_map(|id| self.on_event(id, Event::Resumed, now))
            .collect()
    }

    /// `owner`'s triggers in `view`, as the Trigger Collection at `view.url(base)`. The
    /// collection of all links the filtered views and names us (§5.1.3).
    pub fn render_collection(&self, owner: CdnPid, view: View, base: &str) -> Rendered {
        let triggers = self
            .triggers
            .iter()
            .filter(|(_, owned)| owned.owner == owner && view.holds(owned.trigger.status()))
            .map(|(id, _)| trigger_url(base, *id))
            .collect();
        let link = |view: View| Some(view.url(base));
        let resource = match view {
            View::All => CollectionResource {
                triggers,
                staleresourcetime: Some(self.stale_after),
                coll_all: link(View::All),
                coll_pending: link(View::Pending),
                coll_active: link(View::Active),
                coll_complete: link(View::Complete),
                coll_failed: link(View::Failed),
                cdn_id: Some(self.cdn_id),
            },
            _ => CollectionResource {
                triggers,
                staleresourcetime: Some(self.stale_after),
                ..CollectionResource::default()
            },
        };
        Rendered::new(resource.to_json())
    }

    /// One of `owner`'s Trigger Status Resources.
    pub fn render_status(&self, owner: CdnPid, id: TriggerId) -> Result<Rendered, AccessError> {
        let trigger = self.get(owner, id)?;
        Ok(Rendered::new(trigger.status_resource().to_json()))
    }
}
