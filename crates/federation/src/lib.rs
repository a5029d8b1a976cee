//! The federation's command invocation system (CIS), RFC 8007 CI/T: it takes commands
//! (purge, invalidate, preposition) from this participant's operator (admin API,
//! `/api/v1/triggers`) and from partners (the federation listener,
//! `/cdni/v1/triggers`, mutual TLS), runs each on every server of ours carrying the
//! content it names (top tier, then mid-tier, then edges) and on every partner the
//! configuration is delegated to, and reports the aggregated status.
//!
//! - [`state`]: the CIS as a state machine over commands, answers and `now` (no I/O);
//!   [`participant`]: the catalog of configurations and what a command resolves to.
//! - [`service`]: its one owner, an event loop fed by a channel; it keeps the state
//!   (`<data_dir>/cis/triggers.json`, or the registry when it is shared), carries out
//!   the actions (control requests to servers, calls to partners, timers), and holds
//!   the participant's CIS lease in the registry so one CIS of a participant is active.
//! - [`api`]: the RFC 8007 HTTP API for the operator and for partners, a thin shell
//!   over the loop's handle; [`shared`]: what its handlers share, who is calling.
//! - [`delegation`]: configurations between participants (`/cdni/v1/configurations`,
//!   pushed to partners) and `GET /api/v1/federation`.
//! - [`identity`]: the participant's mutual-TLS identity and the partners' clients.
//! - [`document`]: the RFC 8006-shaped configuration document exchanged on delegation.
//! - [`call`]: the plain HTTP client of the CIS and the `trigger` CLI.

pub mod api;
pub mod call;
pub mod delegation;
pub mod document;
pub mod identity;
pub mod participant;
pub mod service;
pub mod shared;
pub mod state;
