//! Access control, without I/O: signed playback URLs ([`playback`]) and the admin
//! API's bearer tokens ([`admin`]). Pure over bytes, keys, the client's address and
//! `now`; the edge and the admin listener are thin shells around it.

pub mod admin;
pub mod playback;
