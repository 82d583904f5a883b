//! purser-proto: Purser's gRPC API, generated from `proto/purser/v1/*.proto` (the Budget,
//! Admin and Cluster services), and the conversions between its messages and the replicated
//! commands and outcomes of [`purser_core`].
//!
//! The server turns a request into a command with [`MutatingRequest::into_command`], applies
//! it, and answers with [`FromOutcome::from_outcome`]; a domain error becomes a status code in
//! exactly one place, [`status_from_error`].

#![deny(clippy::expect_used)]
#![warn(clippy::too_many_lines)]

pub mod convert;
pub mod report;
pub mod token;
pub mod webhook;

/// The generated messages, clients and servers of package `purser.v1`.
pub mod pb {
    // Generated code: new clippy lints or proto comments must not fail the workspace build.
    #![allow(clippy::all, clippy::pedantic, clippy::expect_used)]
    tonic::include_proto!("purser.v1");
}

/// Response metadata a follower sets to the leader's client address, on a redirect.
pub const LEADER_METADATA: &str = "purser-leader";
/// Response metadata naming the token a call acted for: the answer to a mutation says who
/// made it, as its event does (`token_id`).
pub const TOKEN_ID_METADATA: &str = "purser-token-id";

pub use convert::{
    digest_hex, status_from_error, ConvertError, FromOutcome, GrantsQuery, HoldsQuery,
    MutatingRequest, UnexpectedOutcome,
};
