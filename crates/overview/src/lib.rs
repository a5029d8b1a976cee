//! One view of the whole deployment, from any server's admin listener
//! (`GET /api/v1/deployment`, what the operator dashboard renders).
//!
//! A server holds only part of the picture: an ingest its live streams, the archiver
//! its queue, a router its routing and triggers, an edge its viewers. This crate asks
//! every server of the node directory for its part over its admin API, concurrently
//! and within a short timeout, signing each request as a peer of the deployment
//! ([`streamcdn_access::admin::PeerKey`]), and assembles one document in which every
//! part names the server it came from and the servers that could not be read are
//! listed with why.
//!
//! - [`sources`]: which admin paths each server is asked for, by its roles (no I/O).
//! - [`document`]: the document and [`document::assemble`], which merges the answers:
//!   streams with their holder and their viewers summed over the edges, recordings
//!   without duplicates (servers of a cluster share storage), node health from the
//!   routers (no I/O; unit-tested).
//! - [`fetch`]: the shell: the HTTP requests, the two rounds for triggers.
//! - [`api`]: the admin route.

pub mod api;
pub mod document;
pub mod fetch;
pub mod sources;
