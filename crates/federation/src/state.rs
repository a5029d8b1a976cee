//! The command invocation system as a state machine, without I/O: callers' commands,
//! the answers of servers and partners, and timers go in with `now`; answers and
//! [`Action`]s (what to send, when to wake) come out. One owner holds it
//! (the `service` module); nothing here knows about sockets, tasks, files or the clock.
//!
//! A command is resolved against a [`World`] (what the registry said when it came):
//! the configurations it addresses (`cdni::Catalog`, `eperm` otherwise), the servers
//! carrying each (their `control` addresses, staged top tier, then mid-tier, then
//! edges) and the partners each is delegated to; every target gets its share of the
//! references once, at acceptance ([`streamcdn_cdni::Assignment`]). A partner is sent
//! the cascaded command, then its status resource is polled (`ETag`,
//! `If-None-Match`, backing off from [`POLL_FIRST`] to [`POLL_AT_MOST`]) until final.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamcdn_cdni::collection::{trigger_url, DEFAULT_STALE_AFTER_SECS};
use streamcdn_cdni::control::{ControlReply, Operation};
use streamcdn_cdni::wire::{AbsoluteTime, References};
use streamcdn_cdni::{
    parse_command, parse_operator_command, Action as CdniAction, CdnPid, Collection, Command,
    Effect, ErrorCode, ErrorDescription, Event, Outcome, Rendered, StatusResource, TargetId,
    TargetState, TriggerId, TriggerStatus, TriggerType, View,
};
use streamcdn_urls::authority::Authority;
use thiserror::Error;

pub use crate::participant::{OwnConfiguration, Participant, World};

/// Polling a partner's status resource: first at once, then after this, then 1.5×
/// longer each time up to [`POLL_AT_MOST`].
pub const POLL_FIRST: Duration = Duration::from_millis(10);
pub const POLL_AT_MOST: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch (the deployment's clock).
pub type Millis = u64;

fn secs(now: Millis) -> AbsoluteTime {
    now / 1000
}

/// Which interface a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// The operator's admin API: the caller is this participant.
    Admin,
    /// The federation listener: the caller is the partner its certificate names.
    Federation,
}

/// Who is asking, and the absolute URL of the collection as they reached us (status
/// resource URLs and cancel commands are absolute, §5.1.1).
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: CdnPid,
    pub interface: Interface,
    /// The collection's absolute URL.
    pub base: String,
    /// The collection's path (cancel commands name triggers by it).
    pub path: &'static str,
}

/// What one server is asked for a trigger: its share of the content URLs and patterns.
/// `metadata.*` names configuration metadata, which servers do not cache; a
/// `content.ccid` names no objects here either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlOrder {
    pub trigger_id: String,
    pub operation: Operation,
    pub urls: Vec<String>,
    pub patterns: Vec<streamcdn_cdni::PatternMatch>,
    pub configuration: Option<String>,
}

/// What the shell is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask one of our servers, at `control`; report with [`Cis::server_answered`].
    Control {
        trigger: TriggerId,
        target: TargetId,
        control: String,
        order: ControlOrder,
    },
    /// Send a partner the cascaded command; report with [`Cis::partner_commanded`].
    CommandPartner {
        trigger: TriggerId,
        target: TargetId,
        partner: CdnPid,
        command: Command,
    },
    /// Read a partner's status resource after `after`; report with
    /// [`Cis::partner_polled`].
    PollPartner {
        trigger: TriggerId,
        target: TargetId,
        partner: CdnPid,
        location: String,
        etag: Option<String>,
        after: Duration,
    },
    /// Ask a partner to cancel what it runs for us (no report expected).
    CancelAtPartner { partner: CdnPid, command: Vec<u8> },
    /// Call [`Cis::retry_due`] at `at`.
    WakeAt {
        trigger: TriggerId,
        target: TargetId,
        at: Millis,
    },
}

/// A partner's answer to a cascaded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerAnswer {
    /// `201`, with the status resource's absolute URL.
    Created(String),
    /// A client error: it will not act on it.
    Refused(String),
    /// Not reached, or a server error: tried again.
    Unreachable,
}

/// A partner's status resource, read.
#[derive(Debug, Clone, PartialEq)]
pub enum PollAnswer {
    Status {
        status: Box<StatusResource>,
        etag: Option<String>,
    },
    NotModified,
    /// `404` or `403`: the partner no longer has it for us.
    Gone(String),
    /// Not reached, an unexpected answer or a body that does not parse: asked again.
    Failed,
}

/// The answer to an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Plain text (`<text>\n`).
    Problem { status: u16, text: String },
    /// A Trigger Status Resource.
    Status {
        status: u16,
        rendered: Rendered,
        location: Option<String>,
    },
    /// `204`.
    Done,
}

fn problem(status: u16, text: impl Into<String>) -> Answer {
    Answer::Problem {
        status,
        text: text.into(),
    }
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("the kept triggers do not parse: {0}")]
    Unreadable(#[from] serde_json::Error),
}

/// What is kept: the triggers, and the status resource each partner gave us.
#[derive(Deserialize)]
struct Kept {
    collection: Collection,
    /// `<trigger>|<target>` → the partner's status resource URL.
    #[serde(default)]
    remote: BTreeMap<String, String>,
}

/// [`Kept`], borrowed from the state for writing.
#[derive(Serialize)]
struct KeptRef<'a> {
    collection: &'a Collection,
    remote: &'a BTreeMap<String, String>,
}

fn remote_key(trigger: TriggerId, target: &TargetId) -> String {
    format!("{}|{target}", trigger.0)
}

/// Where the polling of one partner's status resource stands (not kept: a restart
/// begins again without an `ETag`).
struct Poll {
    etag: Option<String>,
    wait: Duration,
}

/// The CIS's state: every trigger, what partners gave us, and what is to be done.
pub struct Cis {
    participant: Participant,
    collection: Collection,
    remote: BTreeMap<String, String>,
    polls: HashMap<(TriggerId, TargetId), Poll>,
    /// When each trigger of this run was accepted, for the time to its final status.
    accepted: HashMap<TriggerId, Millis>,
    actions: VecDeque<Action>,
    /// Changes made to what is kept, counted ([`Cis::changes`]).
    changes: u64,
    /// The count the last [`Cis::snapshot`] took.
    snapshot_at: u64,
}

impl Cis {
    /// The state as kept (`None`: nothing kept yet).
    pub fn open(participant: Participant, kept: Option<&[u8]>) -> Result<Cis, StateError> {
        let kept = match kept {
            None => Kept {
                collection: Collection::new(participant.us, DEFAULT_STALE_AFTER_SECS),
                remote: BTreeMap::new(),
            },
            Some(bytes) => match serde_json::from_slice::<Kept>(bytes) {
                Ok(kept) => kept,
                // Written before partners existed: the collection alone.
                Err(_) => Kept {
                    collection: serde_json::from_slice(bytes)?,
                    remote: BTreeMap::new(),
                },
            },
        };
        Ok(Cis {
            participant,
            collection: kept.collection,
            remote: kept.remote,
            polls: HashMap::new(),
            accepted: HashMap::new(),
            actions: VecDeque::new(),
            changes: 0,
            snapshot_at: 0,
        })
    }

    pub fn participant(&self) -> &Participant {
        &self.participant
    }

    pub fn collection(&self) -> &Collection {
        &self.collection
    }

    /// After a restart (or taking over from another CIS): every trigger carries on
    /// where it was kept.
    pub fn resume(&mut self, now: Millis) -> usize {
        let effects = self.collection.resume(secs(now));
        let resumed = effects.len();
        self.carry_out(effects, now);
        resumed
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// How many changes were made to what is kept so far: a caller whose job moved it
    /// waits for a [`Cis::snapshot`] taken at this count or later to be kept.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The state to keep, if it changed since the last call (finished triggers past
    /// `staleresourcetime` are dropped first). Written straight from the state, not
    /// through a `serde_json::Value`: the document holds every trigger of the day.
    pub fn snapshot(&mut self, now: Millis) -> Option<Vec<u8>> {
        if self.snapshot_at == self.changes {
            return None;
        }
        self.snapshot_at = self.changes;
        self.collection.expire(secs(now));
        serde_json::to_vec(&KeptRef {
            collection: &self.collection,
            remote: &self.remote,
        })
        .ok()
    }

    fn changed(&mut self) {
        self.changes += 1;
    }

    /// A command from `caller` (`POST` to the collection).
    pub fn command(
        &mut self,
        caller: &Caller,
        content_type: Option<&str>,
        body: &[u8],
        world: Result<&World, &str>,
        now: Millis,
    ) -> Answer {
        let us = self.participant.us;
        let parsed = match caller.interface {
            Interface::Admin => parse_operator_command(content_type, body),
            Interface::Federation => parse_command(content_type, body, us),
        };
        let command = match parsed {
            Ok(c) => c,
            Err(e) => {
                metrics::counter!("streamcdn_cis_commands_total", "type" => "invalid").increment(1);
                return problem(e.http_status(), e.to_string());
            }
        };
        if caller.interface == Interface::Federation
            && command.envelope.cdn_path.pids().last() != Some(&caller.who)
        {
            metrics::counter!("streamcdn_cis_commands_total", "type" => "invalid").increment(1);
            return problem(
                400,
                format!("cdn-path must end with the sender's id {}", caller.who),
            );
        }
        match command.action {
            CdniAction::Cancel(urls) => {
                metrics::counter!("streamcdn_cis_commands_total", "type" => "cancel").increment(1);
                // By path: the client may have reached us under another host name.
                let paths: Vec<String> = urls.iter().map(|u| path_of(u).to_owned()).collect();
                match self
                    .collection
                    .cancel(caller.who, &paths, caller.path, secs(now))
                {
                    Ok(reply) => {
                        self.changed();
                        let status = reply.http_status();
                        self.carry_out(reply.effects, now);
                        problem(status, "cancelled")
                    }
                    Err(e) => problem(e.http_status(), e.to_string()),
                }
            }
            CdniAction::Trigger(spec) => {
                metrics::counter!("streamcdn_cis_commands_total", "type" => spec.trigger_type.as_str().to_owned())
                    .increment(1);
                let world = match world {
                    Ok(world) => world,
                    Err(e) => return problem(503, format!("node directory unavailable: {e}")),
                };
                let catalog = self.participant.catalog(&world.deployments);
                let id = match catalog.resolve(caller.who, &spec.references) {
                    Err(refused) => {
                        metrics::counter!("streamcdn_cis_refused_total", "error" => "eperm")
                            .increment(1);
                        let description = refused.description.unwrap_or_default();
                        self.collection.refuse(
                            caller.who,
                            spec,
                            command.envelope,
                            ErrorCode::Eperm,
                            description,
                            secs(now),
                        )
                    }
                    Ok(addressed) => {
                        let stages = self.participant.assignments(&addressed, world);
                        self.collection.accept(
                            caller.who,
                            spec,
                            command.envelope,
                            stages,
                            secs(now),
                        )
                    }
                };
                self.accepted.insert(id, now);
                self.changed();
                // Nothing a command starts goes out before the shell has kept the
                // state holding it (it holds a request's actions until then): a crash
                // loses nothing that was acknowledged.
                self.on_event(id, Event::Start, now);
                let Ok(rendered) = self.collection.render_status(caller.who, id) else {
                    return problem(500, "the trigger vanished");
                };
                Answer::Status {
                    status: 201,
                    rendered,
                    location: Some(trigger_url(&caller.base, id)),
                }
            }
        }
    }

    /// `DELETE` of a trigger (§4.4).
    pub fn delete(&mut self, caller: &Caller, id: TriggerId, now: Millis) -> Answer {
        match self.collection.delete(caller.who, id, secs(now)) {
            Ok(effects) => {
                metrics::counter!("streamcdn_cis_commands_total", "type" => "delete").increment(1);
                self.changed();
                self.carry_out(effects, now);
                Answer::Done
            }
            Err(e) => problem(e.http_status(), e.to_string()),
        }
    }

    pub fn render_collection(&self, caller: &Caller, view: View) -> Rendered {
        self.collection
            .render_collection(caller.who, view, &caller.base)
    }

    pub fn render_status(&self, caller: &Caller, id: TriggerId) -> Result<Rendered, Answer> {
        self.collection
            .render_status(caller.who, id)
            .map_err(|e| problem(e.http_status(), e.to_string()))
    }

    /// Each target of a trigger and where it stands (not part of RFC 8007: for the
    /// CLI's progress and for operators). A partner learns how many of our servers
    /// carry its content and their tiers, not their addresses.
    pub fn servers(
        &self,
        caller: &Caller,
        id: TriggerId,
    ) -> Result<Vec<(String, &'static str)>, Answer> {
        let trigger = self
            .collection
            .get(caller.who, id)
            .map_err(|e| problem(e.http_status(), e.to_string()))?;
        Ok(trigger
            .targets()
            .enumerate()
            .map(|(i, (target, state))| {
                let server = match (caller.interface, target) {
                    (Interface::Federation, TargetId::Server(server)) => {
                        format!("{} server {}", server.tier.as_str(), i + 1)
                    }
                    _ => target.to_string(),
                };
                (server, state_label(state))
            })
            .collect())
    }

    /// A server's answer to [`Action::Control`]: its reply, or why it was not reached.
    pub fn server_answered(
        &mut self,
        trigger: TriggerId,
        target: TargetId,
        answer: Result<ControlReply, String>,
        now: Millis,
    ) {
        let event = match answer {
            Ok(reply) => {
                metrics::counter!("streamcdn_cis_sends_total", "outcome" => "done").increment(1);
                let outcome = if reply.errors.is_empty() {
                    Outcome::Complete
                } else {
                    let control = match &target {
                        TargetId::Server(server) => server.control.as_str(),
                        TargetId::Partner(_) => "",
                    };
                    Outcome::Failed(
                        reply
                            .errors
                            .iter()
                            .map(|e| ErrorDescription {
                                error: ErrorCode::Econtent,
                                references: References::default(),
                                description: Some(format!("{control}: {e}")),
                            })
                            .collect(),
                    )
                };
                Event::Reported { target, outcome }
            }
            Err(e) => {
                metrics::counter!("streamcdn_cis_sends_total", "outcome" => "unreachable")
                    .increment(1);
                tracing::warn!(trigger = trigger.0, server = %target, error = %e, "server not reached; retrying");
                Event::Unreachable { target }
            }
        };
        self.on_event(trigger, event, now);
    }

    /// A partner's answer to [`Action::CommandPartner`].
    pub fn partner_commanded(
        &mut self,
        trigger: TriggerId,
        target: TargetId,
        answer: PartnerAnswer,
        now: Millis,
    ) {
        let TargetId::Partner(partner) = target else {
            return;
        };
        match answer {
            PartnerAnswer::Created(location) => {
                metrics::counter!("streamcdn_cis_partner_calls_total", "outcome" => "created")
                    .increment(1);
                self.remote
                    .insert(remote_key(trigger, &target), location.clone());
                self.changed();
                self.follow(trigger, target, partner, location, None, Duration::ZERO);
            }
            PartnerAnswer::Refused(description) => {
                metrics::counter!("streamcdn_cis_partner_calls_total", "outcome" => "refused")
                    .increment(1);
                let outcome = failed(description);
                self.on_event(trigger, Event::Reported { target, outcome }, now);
            }
            PartnerAnswer::Unreachable => {
                metrics::counter!("streamcdn_cis_partner_calls_total", "outcome" => "unreachable")
                    .increment(1);
                tracing::warn!(trigger = trigger.0, %partner, "partner not reached; retrying");
                self.on_event(trigger, Event::Unreachable { target }, now);
            }
        }
    }

    /// A partner's status resource, read for [`Action::PollPartner`].
    pub fn partner_polled(
        &mut self,
        trigger: TriggerId,
        target: TargetId,
        answer: PollAnswer,
        now: Millis,
    ) {
        let key = (trigger, target.clone());
        let Some(poll) = self.polls.remove(&key) else {
            return;
        };
        let TargetId::Partner(partner) = target else {
            return;
        };
        if !self.waits_for(trigger, &target) {
            return;
        }
        let Some(location) = self.remote.get(&remote_key(trigger, &target)).cloned() else {
            return;
        };
        let mut etag = poll.etag;
        match answer {
            PollAnswer::Status { status, etag: tag } => {
                if let Some(outcome) = Outcome::from_remote(&status) {
                    return self.on_event(trigger, Event::Reported { target, outcome }, now);
                }
                etag = tag;
            }
            PollAnswer::Gone(why) => {
                let outcome = failed(format!("{partner}: status resource {location} {why}"));
                return self.on_event(trigger, Event::Reported { target, outcome }, now);
            }
            PollAnswer::NotModified | PollAnswer::Failed => {}
        }
        let wait = poll.wait;
        self.follow(trigger, target, partner, location, etag, wait);
    }

    /// The time [`Action::WakeAt`] asked for has come.
    pub fn retry_due(&mut self, trigger: TriggerId, target: TargetId, now: Millis) {
        self.on_event(trigger, Event::RetryDue { target }, now);
    }

    /// Whether `trigger` still waits for `target`'s report.
    fn waits_for(&self, trigger: TriggerId, target: &TargetId) -> bool {
        let Some(owner) = self.collection.owner_of(trigger) else {
            return false;
        };
        self.collection.get(owner, trigger).is_ok_and(|found| {
            found
                .targets()
                .any(|(t, s)| t == target && matches!(s, TargetState::InFlight { .. }))
        })
    }

    fn follow(
        &mut self,
        trigger: TriggerId,
        target: TargetId,
        partner: CdnPid,
        location: String,
        etag: Option<String>,
        after: Duration,
    ) {
        let next = if after.is_zero() {
            POLL_FIRST
        } else {
            after.mul_f32(1.5).min(POLL_AT_MOST)
        };
        self.polls.insert(
            (trigger, target.clone()),
            Poll {
                etag: etag.clone(),
                wait: next,
            },
        );
        self.actions.push_back(Action::PollPartner {
            trigger,
            target,
            partner,
            location,
            etag,
            after,
        });
    }

    /// Applies an event of our side and carries out what follows.
    fn on_event(&mut self, id: TriggerId, event: Event, now: Millis) {
        let status = |collection: &Collection| {
            let owner = collection.owner_of(id)?;
            collection
                .get(owner, id)
                .ok()
                .map(|t| (t.status(), t.spec().trigger_type.clone()))
        };
        let before = status(&self.collection);
        let effects = self.collection.on_event(id, event, secs(now));
        let after = status(&self.collection);
        // Targets' states changed if nothing else did.
        self.changed();
        if let (Some((was, _)), Some((is, kind))) = (before, after) {
            if !was.is_final() && is.is_final() {
                self.count_finished(id, is, &kind, now);
            }
        }
        self.carry_out(effects, now);
    }

    fn count_finished(
        &mut self,
        id: TriggerId,
        status: TriggerStatus,
        kind: &TriggerType,
        now: Millis,
    ) {
        let status = format!("{status:?}").to_lowercase();
        if let Some(accepted) = self.accepted.remove(&id) {
            metrics::histogram!("streamcdn_cis_trigger_duration_seconds", "type" => kind.as_str().to_owned())
                .record(now.saturating_sub(accepted) as f64 / 1000.0);
        }
        tracing::info!(trigger = id.0, %status, "trigger finished");
        metrics::counter!("streamcdn_cis_triggers_finished_total", "status" => status).increment(1);
    }

    fn carry_out(&mut self, effects: Vec<Effect>, now: Millis) {
        // A target's state changes with every effect: what is kept changed.
        if !effects.is_empty() {
            self.changed();
        }
        for effect in effects {
            match effect {
                Effect::SendToTarget { trigger, target } => self.send(trigger, target, now),
                Effect::RetryAt {
                    trigger,
                    target,
                    at,
                } => self.actions.push_back(Action::WakeAt {
                    trigger,
                    target,
                    at: at.saturating_mul(1000),
                }),
                Effect::CancelAtTarget { trigger, target } => {
                    // A server's operation is over when it answers; a partner is asked
                    // to cancel, and the polling in flight sees its final status.
                    if let TargetId::Partner(partner) = target {
                        if let Some(location) = self.remote.get(&remote_key(trigger, &target)) {
                            let command = serde_json::json!({
                                "cancel": [location],
                                "cdn-path": [self.participant.us.to_string()],
                            });
                            let command = serde_json::to_vec(&command).unwrap_or_default();
                            self.actions
                                .push_back(Action::CancelAtPartner { partner, command });
                        }
                    }
                }
            }
        }
    }

    fn send(&mut self, trigger: TriggerId, target: TargetId, now: Millis) {
        let Some(owner) = self.collection.owner_of(trigger) else {
            return;
        };
        let Ok(found) = self.collection.get(owner, trigger) else {
            return;
        };
        let share = found.references_for(&target).cloned().unwrap_or_default();
        match &target {
            TargetId::Server(server) => {
                let order = ControlOrder {
                    trigger_id: trigger.0.to_string(),
                    operation: operation_of(&found.spec().trigger_type),
                    urls: share.content_urls.clone().unwrap_or_default(),
                    patterns: share.content_patterns.clone().unwrap_or_default(),
                    configuration: server.configuration.clone(),
                };
                let control = server.control.clone();
                self.actions.push_back(Action::Control {
                    trigger,
                    target,
                    control,
                    order,
                });
            }
            TargetId::Partner(partner) => {
                let partner = *partner;
                if let Some(location) = self.remote.get(&remote_key(trigger, &target)).cloned() {
                    // It has the command already (before a restart, or a retry).
                    return self.follow(trigger, target, partner, location, None, Duration::ZERO);
                }
                if !self.participant.partners.contains_key(&partner) {
                    let outcome = failed(format!("{partner} is not a configured partner"));
                    return self.on_event(trigger, Event::Reported { target, outcome }, now);
                }
                let mut command = found.cascaded_command(self.participant.us);
                if let CdniAction::Trigger(spec) = &mut command.action {
                    spec.references = share;
                }
                self.actions.push_back(Action::CommandPartner {
                    trigger,
                    target,
                    partner,
                    command,
                });
            }
        }
    }
}

fn failed(description: String) -> Outcome {
    Outcome::Failed(vec![ErrorDescription {
        error: ErrorCode::Ecdn,
        references: References::default(),
        description: Some(description),
    }])
}

fn operation_of(trigger_type: &TriggerType) -> Operation {
    match trigger_type {
        TriggerType::Purge => Operation::Purge,
        TriggerType::Invalidate => Operation::Invalidate,
        // Unsupported types are refused at creation and never sent.
        TriggerType::Preposition | TriggerType::Unsupported(_) => Operation::Preposition,
    }
}

fn state_label(state: TargetState) -> &'static str {
    use streamcdn_cdni::trigger::Finish;
    match state {
        TargetState::Queued => "queued",
        TargetState::InFlight { .. } => "sent",
        TargetState::AwaitingRetry { .. } => "retrying",
        TargetState::Finished(Finish::Complete) => "complete",
        TargetState::Finished(Finish::Processed) => "processed",
        TargetState::Finished(Finish::Failed) => "failed",
        TargetState::Finished(Finish::Cancelled) => "cancelled",
    }
}

/// The absolute URL's path and query (or the text itself if it is not absolute).
pub fn path_of(url: &str) -> &str {
    match Authority::parse(url) {
        Some(absolute) if absolute.rest.starts_with('/') => absolute.rest,
        Some(_) => "/",
        None => url,
    }
}

/// A view's name under the collection (`pending`, `active`, …).
pub fn view_named(name: &str) -> Option<View> {
    Some(match name {
        "pending" => View::Pending,
        "active" => View::Active,
        "complete" => View::Complete,
        "failed" => View::Failed,
        _ => return None,
    })
}

/// A trigger's id as the last segment of its status resource's path.
pub fn trigger_named(item: &str) -> Option<TriggerId> {
    if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    item.parse().ok().map(TriggerId)
}

#[cfg(test)]
mod tests;
