//! Rule-by-rule scenario tests of `docs/semantics.md`: one readable scenario per rule, with
//! exact numbers. The DSL lives in `tests/common/mod.rs`.

#![allow(clippy::unwrap_used)]

mod common;

#[path = "rules/access.rs"]
mod access;
#[path = "rules/amount.rs"]
mod amount;
#[path = "rules/determinism.rs"]
mod determinism;
#[path = "rules/events.rs"]
mod events;
#[path = "rules/limit.rs"]
mod limit;
#[path = "rules/pool.rs"]
mod pool;
#[path = "rules/rate.rs"]
mod rate;
#[path = "rules/reserve.rs"]
mod reserve;
#[path = "rules/role.rs"]
mod role;
#[path = "rules/tree.rs"]
mod tree;
#[path = "rules/webhook.rs"]
mod webhook;
