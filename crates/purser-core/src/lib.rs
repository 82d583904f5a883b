//! purser-core: the deterministic hierarchical budget state machine that every Purser node runs.
//!
//! It is pure: [`State::apply`] takes a timestamp (the leader's, made monotonic here) and a
//! [`Command`], and returns an [`Outcome`] with its ordered [`Event`]s, or an [`Error`] that
//! changed nothing. No clock, random source, IO, threads or async inside, so every replica that
//! applies the same log ends byte-identical ([`State::digest`]).
//!
//! The rules it implements, and every choice where the SPEC is silent, are written down in
//! `docs/semantics.md` at the repository root.

//! Modules: `State` is one type whose methods are split by concern across files (`budget`,
//! `tree`, `grant`, `webhook`, `validate`, `invariants`, `query`); each adds an `impl State`
//! block and `state.rs` dispatches to them, so those files and `state.rs` refer to each other
//! by design. Every other dependency runs one way.

#![deny(clippy::expect_used)]
#![warn(clippy::too_many_lines)]

pub mod access;
mod budget;
pub mod command;
mod cow;
mod dedup;
pub mod error;
pub mod event;
#[doc(hidden)]
pub mod fixtures;
mod grant;
mod hash;
mod invariants;
pub mod outcome;
#[cfg(feature = "planted-bugs")]
pub mod planted;
mod query;
mod snapshot;
mod state;
pub mod time;
mod tree;
mod validate;
pub mod webhook;
mod window;

pub use access::{Access, Need, SecretHash, TokenView};
pub use command::*;
pub use error::{Error, ErrorKind, Result};
pub use event::*;
pub use hash::request_key;
pub use outcome::*;
pub use snapshot::{Frozen, SNAPSHOT_FORMAT_VERSION};
pub use state::{limits, Config, State};
pub use time::Period;
pub use window::SLIDING_BUCKETS;

/// Compiles the README's Rust snippet, so that the first code a newcomer reads stays correct.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeSnippet;
