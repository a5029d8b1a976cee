//! Small helpers that several crates need and no one of them owns: durable file writes
//! ([`durable`]) and the wall clock ([`clock`]). A leaf: it depends on no streamcdn
//! crate, so any crate may use it without a cycle or a role importing another role.

pub mod clock;
pub mod durable;
