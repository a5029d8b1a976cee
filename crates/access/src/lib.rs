//! Access control, without I/O: signed playback URLs ([`playback`]), the admin API's
//! bearer tokens ([`admin`]) and the deployment key that servers sign their requests to
//! each other with ([`deployment`]). Pure over bytes, keys, the client's address and
//! `now`; the edge, the router and the admin listener are thin shells around it.

pub mod admin;
pub mod deployment;
pub mod playback;
