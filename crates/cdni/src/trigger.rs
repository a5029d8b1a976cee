//! One accepted CI/T Trigger Command and the targets it must reach (our servers and
//! the dCDNs we cascade to), as a sans-IO state machine: events and `now` in, effects
//! out. The status is derived from the targets, never set:
//!
//! - `pending` until a target is sent the command; `active` while any is unfinished;
//! - `complete` when every target completed, `processed` when every target finished
//!   and one of them only reported `processed` (§2.3: an intermediate CDN then reports
//!   `processed` too), `failed` when every target finished and one failed (§4.7);
//! - on cancel (§4.3): targets not yet sent are dropped, those in flight are asked to
//!   stop; `cancelling` while any is in flight, then `cancelled` if any was stopped, or
//!   what the finished targets say if none was. A `complete` or `failed` trigger is
//!   never changed; a `processed` one is cancelled at the targets that reported
//!   `processed` (the RFC allows cancelling it).
//!
//! Targets come in stages, sent in order: a stage starts when every earlier one has
//! finished, so parents are handled before their children. A target that cannot be
//! reached is retried with backoff for as long as the trigger lives (§4.7: keep it
//! `active` until it is acted upon or cancelled).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::pid::CdnPid;
use crate::target::Assignment;
pub use crate::target::TargetId;
use crate::wire::{
    AbsoluteTime, Action, Command, Envelope, ErrorCode, ErrorDescription, References,
    StatusResource, TriggerSpec, TriggerStatus, TriggerType,
};

/// Unique among all triggers a collection ever held: a status resource's URI is never
/// reused (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TriggerId(pub u64);

/// The longest wait between two attempts at an unreachable target.
pub const MAX_RETRY_DELAY_SECS: u64 = 60;
/// Errors kept per trigger; dCDNs may report many.
pub const MAX_ERRORS: usize = 1_000;

/// How a target finished, as it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// Accepted, with no further report to come (§5.2.3).
    Processed,
    Failed(Vec<ErrorDescription>),
    Cancelled,
}

impl Outcome {
    /// A dCDN's final status as the outcome of that target; `None` while it runs.
    pub fn from_remote(status: &StatusResource) -> Option<Outcome> {
        Some(match status.status {
            TriggerStatus::Pending | TriggerStatus::Active | TriggerStatus::Cancelling => {
                return None
            }
            TriggerStatus::Complete => Outcome::Complete,
            TriggerStatus::Processed => Outcome::Processed,
            TriggerStatus::Failed => Outcome::Failed(status.errors.clone()),
            TriggerStatus::Cancelled => Outcome::Cancelled,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Begin sending (the shell persists the trigger first, so a crash loses nothing).
    Start,
    Reported {
        target: TargetId,
        outcome: Outcome,
    },
    /// Sending to the target failed; it will be retried.
    Unreachable {
        target: TargetId,
    },
    /// A timer from [`Effect::RetryAt`] fired.
    RetryDue {
        target: TargetId,
    },
    /// A cancel command or a DELETE from the uCDN.
    Cancel,
    /// Our estimate of when the activity will be complete (`etime`).
    Estimated {
        etime: AbsoluteTime,
    },
    /// After a restart: what was in flight is sent again, timers are set again.
    Resumed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SendToTarget {
        trigger: TriggerId,
        target: TargetId,
    },
    CancelAtTarget {
        trigger: TriggerId,
        target: TargetId,
    },
    RetryAt {
        trigger: TriggerId,
        target: TargetId,
        at: AbsoluteTime,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetState {
    /// Not sent yet.
    Queued,
    InFlight {
        attempt: u32,
    },
    AwaitingRetry {
        attempt: u32,
        at: AbsoluteTime,
    },
    Finished(Finish),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finish {
    Complete,
    Processed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Target {
    id: TargetId,
    stage: usize,
    state: TargetState,
    /// What this target is sent.
    #[serde(default, skip_serializing_if = "is_default")]
    references: References,
}

fn is_default(references: &References) -> bool {
    *references == References::default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    id: TriggerId,
    spec: TriggerSpec,
    envelope: Envelope,
    ctime: AbsoluteTime,
    mtime: AbsoluteTime,
    etime: Option<AbsoluteTime>,
    status: TriggerStatus,
    errors: Vec<ErrorDescription>,
    targets: Vec<Target>,
    started: bool,
    cancel_requested: bool,
    /// Failed at creation: never acted upon.
    refused: bool,
}

impl Trigger {
    /// A trigger for an accepted command, reaching `stages` in order. With no target
    /// there is nothing to do: `complete` at once (§4.1). A type we do not support is
    /// `failed` with `eunsupported` (§5.2.2).
    pub fn accept<A: Into<Assignment>>(
        id: TriggerId,
        spec: TriggerSpec,
        envelope: Envelope,
        stages: Vec<Vec<A>>,
        now: AbsoluteTime,
    ) -> Trigger {
        if let TriggerType::Unsupported(name) = &spec.trigger_type {
            let description = format!("trigger type {name:?} is not supported");
            return Trigger::refuse(
                id,
                spec,
                envelope,
                ErrorCode::Eunsupported,
                description,
                now,
            );
        }
        let mut seen = HashSet::new();
        let targets = stages
            .into_iter()
            .enumerate()
            .flat_map(|(stage, assigned)| {
                assigned
                    .into_iter()
                    .map(move |assignment| (stage, assignment.into()))
            })
            .filter(|(_, assignment): &(usize, Assignment)| seen.insert(assignment.target.clone()))
            .map(|(stage, assignment)| Target {
                id: assignment.target,
                stage,
                state: TargetState::Queued,
                references: assignment.references,
            })
            .collect();
        let mut trigger = Trigger::new(id, spec, envelope, targets, now);
        trigger.status = trigger.derive_status();
        trigger
    }

    /// A `failed` trigger with one error about all it names: the command was accepted
    /// but will not be acted upon (e.g. `eperm` for another participant's content, §4.1).
    pub fn refuse(
        id: TriggerId,
        spec: TriggerSpec,
        envelope: Envelope,
        error: ErrorCode,
        description: String,
        now: AbsoluteTime,
    ) -> Trigger {
        let mut trigger = Trigger::new(id, spec, envelope, Vec::new(), now);
        trigger.refused = true;
        trigger.status = TriggerStatus::Failed;
        let error = ErrorDescription::for_whole(&trigger.spec, error, Some(description));
        trigger.errors.push(error);
        trigger
    }

    fn new(
        id: TriggerId,
        spec: TriggerSpec,
        envelope: Envelope,
        targets: Vec<Target>,
        now: AbsoluteTime,
    ) -> Self {
        Trigger {
            id,
            spec,
            envelope,
            ctime: now,
            mtime: now,
            etime: None,
            status: TriggerStatus::Pending,
            errors: Vec::new(),
            targets,
            started: false,
            cancel_requested: false,
            refused: false,
        }
    }

    pub fn id(&self) -> TriggerId {
        self.id
    }

    pub fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    pub fn status(&self) -> TriggerStatus {
        self.status
    }

    pub fn ctime(&self) -> AbsoluteTime {
        self.ctime
    }

    pub fn mtime(&self) -> AbsoluteTime {
        self.mtime
    }

    pub fn errors(&self) -> &[ErrorDescription] {
        &self.errors
    }

    pub fn targets(&self) -> impl Iterator<Item = (&TargetId, TargetState)> {
        self.targets.iter().map(|t| (&t.id, t.state))
    }

    /// What `target` is sent: its share of the references (see [`Assignment`]); the
    /// whole command's for a target given none (kept before shares were).
    pub fn references_for(&self, target: &TargetId) -> Option<&References> {
        let target = self.targets.iter().find(|t| &t.id == target)?;
        Some(if is_default(&target.references) {
            &self.spec.references
        } else {
            &target.references
        })
    }

    /// The command to send a dCDN target: ours, with our PID appended to `cdn-path`.
    pub fn cascaded_command(&self, us: CdnPid) -> Command {
        let received = Command {
            action: Action::Trigger(self.spec.clone()),
            envelope: self.envelope.clone(),
        };
        received.cascaded_by(us)
    }

    /// The Trigger Status Resource (§5.1.2).
    pub fn status_resource(&self) -> StatusResource {
        StatusResource {
            trigger: self.spec.clone(),
            ctime: self.ctime,
            mtime: self.mtime,
            etime: self.etime,
            status: self.status,
            errors: self.errors.clone(),
        }
    }

    pub fn on_event(&mut self, event: Event, now: AbsoluteTime) -> Vec<Effect> {
        let before = (self.status, self.errors.len(), self.etime);
        let mut effects = Vec::new();
        match event {
            Event::Start => {
                self.started = !self.refused;
                self.dispatch(&mut effects);
            }
            Event::Reported { target, outcome } => self.report(&target, outcome, &mut effects),
            Event::Unreachable { target } => {
                let (trigger, cancel_requested) = (self.id, self.cancel_requested);
                if let Some(t) = self.target_mut(&target) {
                    if let TargetState::InFlight { attempt } = t.state {
                        if cancel_requested {
                            // Cancelled: no point in trying again.
                            t.state = TargetState::Finished(Finish::Cancelled);
                        } else {
                            let at = now.saturating_add(retry_delay(attempt));
                            t.state = TargetState::AwaitingRetry { attempt, at };
                            effects.push(Effect::RetryAt {
                                trigger,
                                target,
                                at,
                            });
                        }
                    }
                }
            }
            Event::RetryDue { target } => {
                let trigger = self.id;
                if let Some(t) = self.target_mut(&target) {
                    if let TargetState::AwaitingRetry { attempt, .. } = t.state {
                        t.state = TargetState::InFlight {
                            attempt: attempt.saturating_add(1),
                        };
                        effects.push(Effect::SendToTarget { trigger, target });
                    }
                }
            }
            Event::Cancel => self.cancel(&mut effects),
            Event::Estimated { etime } => self.etime = Some(etime),
            Event::Resumed => self.resume(&mut effects),
        }
        self.status = self.derive_status();
        if self.status == TriggerStatus::Cancelled && before.0 != TriggerStatus::Cancelled {
            let error = ErrorDescription::for_whole(
                &self.spec,
                ErrorCode::Ecancelled,
                Some("cancelled by the uCDN".into()),
            );
            self.push_errors(vec![error]);
        }
        // mtime is when the resource last changed, and never goes back with the clock.
        if (self.status, self.errors.len(), self.etime) != before {
            self.mtime = self.mtime.max(now);
        }
        effects
    }

    fn target_mut(&mut self, id: &TargetId) -> Option<&mut Target> {
        self.targets.iter_mut().find(|t| &t.id == id)
    }

    fn push_errors(&mut self, errors: Vec<ErrorDescription>) {
        let room = MAX_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(errors.into_iter().take(room));
    }

    fn report(&mut self, target: &TargetId, outcome: Outcome, effects: &mut Vec<Effect>) {
        let Some(t) = self.target_mut(target) else {
            return;
        };
        // Only a target that was sent the command can report; the first report counts.
        if !matches!(
            t.state,
            TargetState::InFlight { .. } | TargetState::AwaitingRetry { .. }
        ) {
            return;
        }
        let (finish, errors) = match outcome {
            Outcome::Complete => (Finish::Complete, Vec::new()),
            Outcome::Processed => (Finish::Processed, Vec::new()),
            Outcome::Failed(errors) => (Finish::Failed, errors),
            Outcome::Cancelled => (Finish::Cancelled, Vec::new()),
        };
        t.state = TargetState::Finished(finish);
        self.push_errors(errors);
        self.dispatch(effects);
    }

    /// Sends the queued targets of the first stage that has not finished.
    fn dispatch(&mut self, effects: &mut Vec<Effect>) {
        if !self.started || self.cancel_requested {
            return;
        }
        let unfinished = |t: &&mut Target| !matches!(t.state, TargetState::Finished(_));
        let Some(stage) = self
            .targets
            .iter_mut()
            .filter(unfinished)
            .map(|t| t.stage)
            .min()
        else {
            return;
        };
        for t in self.targets.iter_mut().filter(|t| t.stage == stage) {
            if t.state == TargetState::Queued {
                t.state = TargetState::InFlight { attempt: 1 };
                effects.push(Effect::SendToTarget {
                    trigger: self.id,
                    target: t.id.clone(),
                });
            }
        }
    }

    fn cancel(&mut self, effects: &mut Vec<Effect>) {
        let cancellable = match self.status {
            TriggerStatus::Pending | TriggerStatus::Active => !self.refused,
            TriggerStatus::Processed => true,
            // §4.3: complete and failed stay as they are; the rest is already cancelled.
            TriggerStatus::Complete
            | TriggerStatus::Failed
            | TriggerStatus::Cancelling
            | TriggerStatus::Cancelled => false,
        };
        if !cancellable {
            return;
        }
        self.cancel_requested = true;
        for t in &mut self.targets {
            match t.state {
                TargetState::Queued | TargetState::AwaitingRetry { .. } => {
                    t.state = TargetState::Finished(Finish::Cancelled);
                }
                TargetState::InFlight { .. } => {
                    effects.push(Effect::CancelAtTarget {
                        trigger: self.id,
                        target: t.id.clone(),
                    });
                }
                TargetState::Finished(Finish::Processed) => {
                    // It runs on without reporting: ask it to stop, expect no answer.
                    t.state = TargetState::Finished(Finish::Cancelled);
                    effects.push(Effect::CancelAtTarget {
                        trigger: self.id,
                        target: t.id.clone(),
                    });
                }
                TargetState::Finished(_) => {}
            }
        }
    }

    fn resume(&mut self, effects: &mut Vec<Effect>) {
        for t in &self.targets {
            let (trigger, target) = (self.id, t.id.clone());
            match t.state {
                TargetState::InFlight { .. } if self.cancel_requested => {
                    effects.push(Effect::CancelAtTarget { trigger, target });
                }
                TargetState::InFlight { .. } => {
                    effects.push(Effect::SendToTarget { trigger, target })
                }
                TargetState::AwaitingRetry { at, .. } => effects.push(Effect::RetryAt {
                    trigger,
                    target,
                    at,
                }),
                TargetState::Queued | TargetState::Finished(_) => {}
            }
        }
        self.dispatch(effects);
    }

    fn derive_status(&self) -> TriggerStatus {
        if self.refused {
            return TriggerStatus::Failed;
        }
        let any = |wanted: fn(&TargetState) -> bool| self.targets.iter().any(|t| wanted(&t.state));
        let in_flight = any(|s| matches!(s, TargetState::InFlight { .. }));
        let cancelled = any(|s| *s == TargetState::Finished(Finish::Cancelled));
        if self.cancel_requested {
            if in_flight {
                return TriggerStatus::Cancelling;
            }
            if cancelled {
                return TriggerStatus::Cancelled;
            }
        }
        if any(|s| !matches!(s, TargetState::Finished(_))) {
            return if self.targets.iter().all(|t| t.state == TargetState::Queued) {
                TriggerStatus::Pending
            } else {
                TriggerStatus::Active
            };
        }
        // A target that cancelled without being asked to did not do the work.
        if cancelled || any(|s| *s == TargetState::Finished(Finish::Failed)) {
            TriggerStatus::Failed
        } else if any(|s| *s == TargetState::Finished(Finish::Processed)) {
            TriggerStatus::Processed
        } else {
            TriggerStatus::Complete
        }
    }
}

/// 1, 2, 4 … seconds after each failed attempt, at most [`MAX_RETRY_DELAY_SECS`].
fn retry_delay(attempt: u32) -> u64 {
    1u64.checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u64::MAX)
        .min(MAX_RETRY_DELAY_SECS)
}
