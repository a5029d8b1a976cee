//! CDNI Control Interface / Triggers (RFC 8007, with errata 5053 and 5054), without
//! I/O: what a command invocation system needs to take, track, cascade and report
//! purge, invalidate and preposition commands, over bytes, state and `now`.
//!
//! - [`wire`]: the JSON objects and media types of §5, parsed from bytes with errors
//!   that name the field and carry the HTTP status (§4.1, §4.7).
//! - [`pattern`]: PatternMatch (§5.2.4), linear in practice, no backtracking.
//! - [`pid`]: CDN PIDs (`AS64496:1`) and `cdn-path` loop detection (§4.6).
//! - [`target`]: where a trigger goes (our servers by tier, partners) and what each gets.
//! - [`trigger`]: one trigger's state machine over its targets (§2.3, §4.3, §4.7).
//! - [`collection`]: every uCDN's triggers, views, ETags and expiry (§3, §4.2, §4.5).
//! - [`configuration`]: which configurations a command addresses, and `eperm`.
//! - [`control`]: the control request the CIS sends its own servers, and their reply.
//!
//! The HTTP/mTLS service around it (federation listener, admin API, edge control
//! endpoint, persistence, timers) lives elsewhere and only moves bytes and effects.

pub mod collection;
pub mod configuration;
pub mod control;
pub mod pattern;
pub mod pid;
pub mod target;
pub mod trigger;
pub mod wire;

pub use collection::{AccessError, CancelReply, Collection, Rendered, View};
pub use configuration::{Addressed, Catalog, Configuration};
pub use pattern::{AnyHostPattern, PatternMatch};
pub use pid::{CdnPath, CdnPid};
pub use target::{Assignment, ServerTarget, TargetId, Tier};
pub use trigger::{Effect, Event, Outcome, TargetState, Trigger, TriggerId};
pub use wire::{
    parse_collection, parse_command, parse_operator_command, parse_status, Action, Command,
    Envelope, ErrorCode, ErrorDescription, StatusResource, TriggerSpec, TriggerStatus, TriggerType,
    WireError,
};
