//! Model-based property tests of purser-core.
//!
//! `model/reference.rs` is a second, deliberately simple and slow implementation of
//! `docs/semantics.md` (every settle kept as a record, window spend summed by brute force, held
//! summed over open holds on current paths, errors applied to a throw-away clone). It uses
//! purser-core's types only, never its functions, and has its own calendar (`model/cal.rs`).
//!
//! `agrees_with_reference_model` runs random trees and 50–200 random commands
//! (`model/gen.rs`) on the real [`State`] and on the model, and after every command checks
//! (`model/harness.rs`): equal results (error kind, or outcome and every event); equal node
//! views, usage, grants and holds; the clock; `check_invariants`; I1 (hard limits hold unless
//! the model knows an overrun, late settle or admin change caused it), I2 (through the views
//! and `check_invariants`), I3 (grant money conserved: credited − forfeited − paid == what
//! the grants hold; debt created − paid == debt owed; `spent_total` from the settle records),
//! and I4 (the same request id and payload never takes effect twice).
//! `deterministic_and_restorable` replays sequences on two replicas and on a replica restored
//! from a snapshot taken at a random point, and checks that every denial `fast_denial`
//! predicts (the leader's log-free path) is exactly what apply answers.
//!
//! Knobs: `PROPTEST_CASES` (sequences per property), `PURSER_MODEL_STATS=1` (print what each
//! sequence exercised), `PURSER_MODEL_NARROW=...` (skip known open findings, see
//! `model/narrow.rs`; strict by default).

mod model {
    pub mod cal;
    pub mod gen;
    pub mod harness;
    pub mod narrow;
    pub mod reference;
    pub mod scenarios;
}

use model::gen::{scenario, Builder};
use model::harness::Run;
use model::reference::Model;
use proptest::prelude::*;
use purser_core::State;

/// CI default, overridable with `PROPTEST_CASES` (as for every proptest of the workspace).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(2000),
        max_shrink_iters: 4000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// The real state machine and the reference model agree after every command.
    #[test]
    fn agrees_with_reference_model(sc in scenario(50, 200)) {
        let mut run = Run::new();
        if let Err(f) = run.run(&sc) {
            prop_assert!(false, "{}", f);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(500),
        max_shrink_iters: 2000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// Same log, same state: two replicas stay byte-identical, and a replica restored from a
    /// snapshot at any point continues exactly like the original.
    #[test]
    fn deterministic_and_restorable(sc in scenario(50, 150)) {
        let mut model = Model::new();
        let mut builder = Builder::new();
        let mut a = State::new();
        let mut b = State::new();
        let mut c: Option<State> = None;
        // Frozen at the cut: its encoding must stay what the state was then, while the
        // state it shares its chunks with goes on.
        let mut frozen: Option<(purser_core::Frozen, Vec<u8>)> = None;
        let cut = sc.steps.len() * usize::from(sc.cut) / 256;
        let mut now = sc.base;
        for (i, step) in sc.steps.iter().enumerate() {
            if i == cut {
                let snap = a.snapshot();
                let restored = State::restore(&snap).map_err(|e| TestCaseError::fail(format!("restore: {e:?}")))?;
                prop_assert_eq!(restored.snapshot(), snap.clone(), "restore(snapshot).snapshot() != snapshot");
                prop_assert_eq!(restored.digest(), a.digest());
                prop_assert!(restored.check_invariants().is_ok());
                c = Some(restored);
                frozen = Some((a.freeze(), snap.clone()));
            }
            let at = builder.time(now.max(model.now), &step.dt);
            let Some(cmd) = builder.build(&model, at, step) else { continue };
            // The batcher sizes entries by the count, without encoding.
            prop_assert_eq!(cmd.encoded_len(), cmd.encode().len());
            let _ = model.apply(at, &cmd);
            now = now.max(model.now);
            let fast = a.fast_denial(at, &cmd);
            let ra = a.apply(at, cmd.clone());
            if let Some(denial) = fast {
                // The leader answers this denial without a log entry: apply must agree.
                let expected = Ok(purser_core::Applied { outcome: purser_core::Outcome::Denied(denial), events: Vec::new() });
                prop_assert_eq!(&ra, &expected, "fast denial disagrees with apply for {:?}", cmd);
            }
            let rb = b.apply(at, cmd.clone());
            prop_assert_eq!(&ra, &rb, "replicas answered differently to {:?}", cmd);
            prop_assert_eq!(a.digest(), b.digest(), "replicas diverged after {:?}", cmd);
            if let Some(c) = c.as_mut() {
                let rc = c.apply(at, cmd.clone());
                prop_assert_eq!(&ra, &rc, "restored replica answered differently to {:?}", cmd);
                prop_assert_eq!(a.digest(), c.digest(), "restored replica diverged after {:?}", cmd);
            }
        }
        prop_assert_eq!(a.snapshot(), b.snapshot());
        if let Some(c) = c {
            prop_assert_eq!(a.snapshot(), c.snapshot());
        }
        if let Some((frozen, snap)) = frozen {
            prop_assert_eq!(frozen.encode(), snap.clone(), "a frozen copy changed with the state");
            prop_assert_eq!(frozen.snapshot().map_err(|e| TestCaseError::fail(e.to_string()))?, snap);
        }
    }
}

/// A state large enough that its maps are split into every shard and its nodes into many
/// chunks: frozen, then written to (new holds and request ids, settled and released ones, a
/// tick), the frozen copy still encodes byte for byte the state at the freeze, and restores to
/// a state with that state's digest.
#[test]
fn a_frozen_state_encodes_what_it_held_while_writes_go_on() {
    use purser_core::fixtures::{reserve_usd, standard_tree, XorShift};
    use purser_core::{Actual, Command, Config, Op, Outcome};
    let mut now = 1_780_000_000_000;
    let (mut state, users) = standard_tree(now, Config::default());
    let mut rng = XorShift(7);
    let mut open = Vec::new();
    let mut seq = 0;
    let mut step = |state: &mut State, now: u64, open: &mut Vec<u64>, rng: &mut XorShift| {
        seq += 1;
        let user = users[rng.below(users.len() as u64) as usize];
        let reserve = reserve_usd(user, 10);
        if let Ok(Outcome::Reserved(r)) = state
            .apply(now, Command::new(format!("r{seq}"), now, reserve))
            .map(|a| a.outcome)
        {
            open.push(r.reservation_id);
        }
        if open.len() > 5_000 {
            let reservation_id = open.swap_remove(rng.below(open.len() as u64) as usize);
            let op = if rng.below(2) == 0 {
                Op::Release { reservation_id }
            } else {
                Op::Settle {
                    reservation_id,
                    actual: Actual::Amount(5),
                }
            };
            state
                .apply(now, Command::new(format!("s{seq}"), now, op))
                .expect("settle or release");
        }
    };
    for _ in 0..60_000 {
        now += 1;
        step(&mut state, now, &mut open, &mut rng);
    }
    let expected = state.snapshot();
    let digest = state.digest();
    let frozen = state.freeze();
    for _ in 0..20_000 {
        now += 3;
        step(&mut state, now, &mut open, &mut rng);
    }
    state.apply(now, Command::tick()).expect("tick");
    assert_ne!(state.digest(), digest, "the writes changed the state");
    assert!(
        frozen.encode() == expected,
        "a frozen copy changed with the state"
    );
    let restored = State::restore(&frozen.snapshot().expect("a sound snapshot")).expect("restores");
    assert_eq!(restored.digest(), digest);
}

#[test]
fn scenario_roles_and_moves() {
    model::scenarios::roles_and_moves();
}

#[test]
fn scenario_renewals_and_debt() {
    model::scenarios::renewals_and_debt();
}

#[test]
fn scenario_sliding_and_rate_retry() {
    model::scenarios::sliding_and_rate_retry();
}

// ---- open findings, as minimal deterministic reproductions ------------------------------------
// Each is also reachable by the properties above; these name the rule that is broken.

mod findings {
    use super::model::cal::{self, MINUTE};
    use super::model::scenarios::{grant, limit, root};
    use purser_core::{Command, ConfigPatch, ErrorKind, NodeRef, Op, Outcome, Period, Rollover};
    use purser_core::{State, Window};

    fn state_with_root(t: u64) -> State {
        let mut s = State::new();
        s.apply(t, Command::new("root", t, root("acme", true)))
            .expect("root");
        s
    }

    /// R-POOL: `recur (day|week|month|year)`; an hourly recurrence is not a valid grant.
    #[test]
    fn hourly_grant_recurrence_is_refused() {
        let t = cal::at(2024, 1, 31, 22);
        let mut s = state_with_root(t);
        let r = s.apply(
            t,
            Command::new(
                "g",
                t,
                grant(1, 5, Some(Period::Hour), Rollover::None, None, None),
            ),
        );
        assert_eq!(
            r.map(|a| a.outcome).map_err(|e| e.kind),
            Err(ErrorKind::InvalidArgument)
        );
    }

    /// R-LIMIT: windows are lifetime, `calendar(hour|day|week|month)`, sliding and first-use.
    #[test]
    fn yearly_limit_window_is_refused() {
        let t = cal::at(2024, 1, 31, 22);
        let mut s = state_with_root(t);
        let op = Op::SetLimit {
            node: NodeRef::Id(1),
            limit: limit(Window::Calendar(Period::Year), 5, true),
        };
        let r = s.apply(t, Command::new("l", t, op));
        assert_eq!(
            r.map(|a| a.outcome).map_err(|e| e.kind),
            Err(ErrorKind::InvalidArgument)
        );
    }

    /// A root paused by request "q" at `t`, and that request, to retry.
    fn paused_once(t: u64) -> (State, Command) {
        let mut s = state_with_root(t);
        let first = Command::new(
            "q",
            t,
            Op::PauseNode {
                node: NodeRef::Id(1),
            },
        );
        assert_eq!(
            s.apply(t, first.clone()).map(|a| a.outcome),
            Ok(Outcome::Done)
        );
        (s, first)
    }

    /// I4: a request applies at most once. Raising `request_retention_ms` makes an old retry
    /// acceptable again (its `sent_at` is within the new retention) although its record was
    /// only kept for the old retention, so it applies a second time.
    #[test]
    fn raising_the_retention_does_not_reapply_old_requests() {
        let t = cal::at(2024, 1, 31, 22);
        let (mut s, first) = paused_once(t);
        let t1 = t + MINUTE;
        s.apply(
            t1,
            Command::new(
                "r",
                t1,
                Op::ResumeNode {
                    node: NodeRef::Id(1),
                },
            ),
        )
        .expect("resume");
        let patch = ConfigPatch {
            request_retention_ms: Some(60 * MINUTE),
            ..Default::default()
        };
        s.apply(t1, Command::new("cfg", t1, Op::SetConfig(patch)))
            .expect("config");
        // The retry of "q" (same payload, same sent_at) 11 minutes after it applied.
        let t2 = t + 11 * MINUTE + 1;
        let retry = s.apply(t2, first).map(|a| a.outcome);
        assert!(
            !matches!(retry, Ok(Outcome::Done)),
            "request q applied twice (now paused again): {retry:?}"
        );
    }

    /// I4 under a retention cut: ids recorded under the longer retention are forgotten as if
    /// recorded under the new one (they would otherwise hold their memory, and every id behind
    /// them, for the old one), and a retry within the new retention still applies once.
    #[test]
    fn lowering_the_retention_forgets_sooner_and_still_answers_retries() {
        let t = cal::at(2024, 1, 31, 22);
        let (mut s, first) = paused_once(t);
        let patch = ConfigPatch {
            request_retention_ms: Some(MINUTE),
            ..Default::default()
        };
        let t1 = t + 1_000;
        s.apply(t1, Command::new("cfg", t1, Op::SetConfig(patch)))
            .expect("config");
        let retry = s.apply(t + 30_000, first.clone()).map(|a| a.outcome);
        assert!(
            matches!(retry, Ok(Outcome::Duplicate(_))),
            "a retry within the new retention: {retry:?}"
        );
        // Past the new retention and the clock skew, a tick forgets every id.
        let t2 = t1 + 3 * MINUTE;
        s.apply(t2, Command::tick()).expect("tick");
        assert_eq!(s.remembered_requests(), 0);
        let late = s.apply(t2, first).map_err(|e| e.kind);
        assert_eq!(late.map(|a| a.outcome), Err(ErrorKind::FailedPrecondition));
    }
}
