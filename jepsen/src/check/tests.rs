//! The checkers on small synthetic histories: valid ones pass, and each kind of violation is
//! flagged by the checker that owns it.

use super::*;
use crate::history::{Answer, Args, Event, Expiry, GrantView, Kind, Part, Window, LEGACY_TTL_MS};

/// Builds histories: each operation is invoked and completed at harness times it is given.
struct H {
    events: Vec<Event>,
    next: u64,
    t: u64,
}

fn reserve(node: &str, amount: u64) -> Args {
    Args::Reserve {
        node: node.into(),
        min: amount,
        max: amount,
        exact: true,
        ttl_ms: LEGACY_TTL_MS,
    }
}

fn charged(charged: u64) -> Answer {
    Answer::Charged {
        charged,
        debt: Some(0),
        plan: Some(vec![]),
    }
}

/// A fresh settle's answer of a hold of `held` with `actual`.
fn settled(reservation_id: u64, held: u64, actual: u64) -> Answer {
    Answer::Settled {
        reservation_id,
        charged: actual,
        released: Some(held.saturating_sub(actual)),
        overrun: Some(actual.saturating_sub(held)),
        late: Some(false),
        debt: Some(0),
        plan: Some(vec![]),
    }
}

fn granted(reservation_id: u64, amount: u64) -> Answer {
    Answer::Granted {
        reservation_id,
        amount,
        expires_at_ms: None,
        plan: Some(vec![]),
    }
}

fn denied(requested: u64) -> Answer {
    Answer::Denied {
        node_id: 2,
        remaining: 0,
        requested,
        rule: None,
    }
}

fn account(held: u64, spent: u64, cap: u64) -> Answer {
    Answer::Account {
        held,
        spent,
        cap: Some(cap),
        limit_spent: Some(spent),
        limit_held: Some(held),
        window: None,
        debt: None,
        pool: None,
    }
}

impl H {
    /// A root `r` (cap 100) and a child `r/a` (cap 50), at log indices 1..=4.
    fn new() -> H {
        let mut h = H {
            events: Vec::new(),
            next: 1,
            t: 0,
        };
        h.ok(
            0,
            "n0",
            Args::CreateNode {
                path: "r".into(),
                funded: false,
            },
            Answer::Done,
            1,
        );
        h.ok(
            0,
            "n1",
            Args::CreateNode {
                path: "r/a".into(),
                funded: false,
            },
            Answer::Done,
            2,
        );
        let cap = |node: &str, amount| Args::SetLimit {
            node: node.into(),
            amount,
            window: Window::Lifetime,
        };
        h.ok(0, "c0", cap("r", 100), Answer::Done, 3);
        h.ok(0, "c1", cap("r/a", 50), Answer::Done, 4);
        h
    }

    fn invoke(&mut self, worker: u32, rid: Option<&str>, args: Args) -> Event {
        let mut e = Event::invoke(self.next, worker, rid.map(str::to_owned), args);
        self.next += 1;
        self.t += 10;
        e.t_ns = self.t;
        self.events.push(e.clone());
        e
    }

    fn complete(
        &mut self,
        invoke: &Event,
        kind: Kind,
        answer: Option<Answer>,
        index: Option<u64>,
        dup: bool,
    ) {
        let mut e = Event::completion(invoke, kind);
        self.t += 10;
        e.t_ns = self.t;
        e.answer = answer;
        e.log_index = index;
        e.duplicate = dup;
        if kind != Kind::Ok {
            e.error = Some("timed out".into());
        }
        self.events.push(e);
    }

    fn ok(&mut self, worker: u32, rid: &str, args: Args, answer: Answer, index: u64) {
        let i = self.invoke(worker, Some(rid), args);
        self.complete(&i, Kind::Ok, Some(answer), Some(index), false);
    }

    fn read(&mut self, node: &str, answer: Answer) {
        let i = self.invoke(9, None, Args::Show { node: node.into() });
        self.complete(&i, Kind::Ok, Some(answer), None, false);
    }

    /// Final reads of both nodes: (held, spent) of r and r/a, and the holds at r/a.
    fn finish(&mut self, r: (u64, u64), a: (u64, u64), holds: Vec<(u64, u64)>) {
        for (node, (held, spent), cap) in [("r", r, 100), ("r/a", a, 50)] {
            let i = self.final_op(None, Args::Show { node: node.into() });
            self.complete(&i, Kind::Ok, Some(account(held, spent, cap)), None, false);
        }
        let i = self.final_op(None, Args::Holds { node: "r".into() });
        self.complete(
            &i,
            Kind::Ok,
            Some(Answer::Holds { holds: vec![] }),
            None,
            false,
        );
        let i = self.final_op(None, Args::Holds { node: "r/a".into() });
        self.complete(&i, Kind::Ok, Some(Answer::Holds { holds }), None, false);
    }

    fn final_op(&mut self, rid: Option<&str>, args: Args) -> Event {
        let mut e = Event::invoke(self.next, 0, rid.map(str::to_owned), args);
        e.final_phase = true;
        self.next += 1;
        self.t += 10;
        e.t_ns = self.t;
        self.events.push(e.clone());
        e
    }

    /// The verdicts of the checkers here. The exact search (`wgl.rs`, tested in
    /// tests/wgl.rs) is left out: it also checks every denial's `remaining`, which these
    /// hand-made answers do not spell out.
    fn verdicts(&self) -> HashMap<&'static str, Verdict> {
        check(&self.events, None)
            .into_iter()
            .filter(|v| v.checker != "linearizability-wgl")
            .map(|v| (v.checker, v))
            .collect()
    }
}

fn failing(h: &H) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = h
        .verdicts()
        .into_values()
        .filter(|v| !v.valid)
        .map(|v| v.checker)
        .collect();
    out.sort_unstable();
    out
}

/// A grant, a justified denial, a settle, a read, and a final state that matches.
fn valid() -> H {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 30), granted(1, 30), 5);
    h.ok(2, "w2", reserve("r/a", 30), denied(30), 5);
    h.read("r/a", account(30, 0, 50));
    let settle = Args::Commit {
        reservation_id: 1,
        actual: 10,
    };
    let answer = settled(1, 30, 10);
    h.ok(1, "w3", settle, answer, 6);
    h.ok(
        2,
        "w4",
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
        charged(5),
        7,
    );
    h.read("r", account(0, 15, 100));
    h.finish((0, 15), (0, 10), vec![]);
    h
}

#[test]
fn a_valid_history_passes_every_checker() {
    let h = valid();
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    let v = h.verdicts();
    assert!(v["linearizability"].checked >= 5);
    assert!(v["no-overspend"].checked >= 2);
}

#[test]
fn a_grant_beyond_a_cap_is_an_overspend() {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 30), granted(1, 30), 5);
    h.ok(2, "w2", reserve("r/a", 30), granted(2, 30), 6);
    h.finish((60, 0), (60, 0), vec![(1, 30), (2, 30)]);
    assert_eq!(failing(&h), vec!["no-overspend"]);
}

#[test]
fn reservation_ids_order_grants_inside_one_entry() {
    // Same entry: only the reservation ids say that grant 2 came after grant 1.
    let mut h = H::new();
    let a = h.invoke(1, Some("w1"), reserve("r/a", 30));
    let b = h.invoke(2, Some("w2"), reserve("r/a", 30));
    h.complete(&a, Kind::Ok, Some(granted(1, 30)), Some(5), false);
    h.complete(&b, Kind::Ok, Some(granted(2, 30)), Some(5), false);
    h.finish((60, 0), (60, 0), vec![(1, 30), (2, 30)]);
    assert!(failing(&h).contains(&"no-overspend"), "{:#?}", h.verdicts());
}

#[test]
fn a_denial_with_room_everywhere_is_not_linearizable() {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 10), denied(10), 4);
    h.finish((0, 0), (0, 0), vec![]);
    assert_eq!(failing(&h), vec!["linearizability"]);
}

#[test]
fn a_log_order_against_real_time_is_flagged() {
    let mut h = H::new();
    h.ok(
        1,
        "w1",
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
        charged(5),
        8,
    );
    h.ok(
        2,
        "w2",
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
        charged(5),
        7,
    );
    h.finish((0, 10), (0, 0), vec![]);
    let v = h.verdicts();
    assert!(!v["linearizability"].valid);
    assert!(v["linearizability"].violations[0].contains("real-time"));
}

/// A retry of a denied request is answered with the first denial, decided at an index before
/// the retry was sent; the request was invoked with its first attempt, so that is in order.
#[test]
fn a_retry_answered_with_the_first_denial_keeps_the_real_time_order() {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 50), granted(1, 50), 5);
    let first = h.invoke(2, Some("w2"), reserve("r/a", 10));
    h.complete(&first, Kind::Info, None, None, false);
    h.ok(
        1,
        "w3",
        Args::Release { reservation_id: 1 },
        Answer::Released {
            reservation_id: 1,
            amount: 50,
        },
        7,
    );
    // The first attempt was denied at 6; the retry, sent after the release at 7, gets it.
    h.ok(2, "w2", reserve("r/a", 10), denied(10), 6);
    h.finish((0, 0), (0, 0), vec![]);
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    // Without the first attempt, the same answer breaks the real-time order.
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 50), granted(1, 50), 5);
    h.ok(
        1,
        "w3",
        Args::Release { reservation_id: 1 },
        Answer::Released {
            reservation_id: 1,
            amount: 50,
        },
        7,
    );
    h.ok(2, "w2", reserve("r/a", 10), denied(10), 6);
    h.finish((0, 0), (0, 0), vec![]);
    assert_eq!(failing(&h), vec!["linearizability"]);
}

#[test]
fn a_stale_read_is_flagged() {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 30), granted(1, 30), 5);
    // Invoked after the grant was acknowledged, yet it does not see it.
    h.read("r/a", account(0, 0, 50));
    h.finish((30, 0), (30, 0), vec![(1, 30)]);
    assert_eq!(failing(&h), vec!["linearizability"]);
}

#[test]
fn a_read_concurrent_with_a_grant_may_see_it_or_not() {
    for seen in [0, 30] {
        let mut h = H::new();
        let w = h.invoke(1, Some("w1"), reserve("r/a", 30));
        h.read("r/a", account(seen, 0, 50));
        h.complete(&w, Kind::Ok, Some(granted(1, 30)), Some(5), false);
        h.finish((30, 0), (30, 0), vec![(1, 30)]);
        assert_eq!(failing(&h), Vec::<&str>::new(), "seen {seen}");
    }
}

#[test]
fn an_acknowledged_hold_missing_at_the_end_is_lost() {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 30), granted(1, 30), 5);
    h.finish((0, 0), (0, 0), vec![]);
    let f = failing(&h);
    assert!(f.contains(&"no-lost-ack"), "{f:?}");
    assert!(f.contains(&"conservation"), "{f:?}");
}

#[test]
fn a_forgotten_request_id_is_a_lost_acknowledgement() {
    let mut h = valid();
    let retry = h.final_op(
        Some("w4"),
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
    );
    h.complete(&retry, Kind::Ok, Some(charged(5)), Some(9), false);
    assert_eq!(failing(&h), vec!["no-lost-ack"]);
    let mut h = valid();
    let retry = h.final_op(
        Some("w4"),
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
    );
    h.complete(&retry, Kind::Ok, Some(charged(5)), Some(9), true);
    assert_eq!(failing(&h), Vec::<&str>::new());
}

#[test]
fn one_request_applied_twice_breaks_idempotency() {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 10), granted(1, 10), 5);
    h.ok(1, "w1", reserve("r/a", 10), granted(2, 10), 6);
    h.finish((20, 0), (20, 0), vec![(1, 10), (2, 10)]);
    assert!(failing(&h).contains(&"idempotency"), "{:#?}", h.verdicts());
}

#[test]
fn a_hold_no_request_was_answered_with_breaks_idempotency() {
    // What a command applied twice under another request id leaves behind.
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 10), granted(1, 10), 5);
    h.finish((20, 0), (20, 0), vec![(1, 10), (2, 10)]);
    let f = failing(&h);
    assert!(f.contains(&"idempotency"), "{f:?}");
    assert!(f.contains(&"conservation"), "{f:?}");
}

#[test]
fn spend_that_no_settle_explains_breaks_conservation() {
    let mut h = valid();
    h.events.retain(|e| !e.final_phase);
    h.finish((0, 25), (0, 10), vec![]);
    assert_eq!(failing(&h), vec!["conservation"]);
}

#[test]
fn a_settle_that_misreports_is_not_linearizable() {
    let mut h = H::new();
    h.ok(1, "w1", reserve("r/a", 30), granted(1, 30), 5);
    let settle = Args::Commit {
        reservation_id: 1,
        actual: 10,
    };
    let mut wrong = settled(1, 30, 10);
    if let Answer::Settled { released, .. } = &mut wrong {
        *released = Some(30);
    }
    h.ok(1, "w2", settle, wrong, 6);
    h.finish((0, 10), (0, 10), vec![]);
    assert_eq!(failing(&h), vec!["linearizability"]);
}

#[test]
fn an_indeterminate_grant_resolved_by_a_duplicate_counts_as_applied() {
    let mut h = H::new();
    let first = h.invoke(1, Some("w1"), reserve("r/a", 30));
    h.complete(&first, Kind::Info, None, None, false);
    let retry = h.invoke(1, Some("w1"), reserve("r/a", 30));
    h.complete(&retry, Kind::Ok, Some(granted(1, 30)), Some(7), true);
    // A denial in between is justified only by that hold.
    h.ok(2, "w2", reserve("r/a", 30), denied(30), 8);
    h.finish((30, 0), (30, 0), vec![(1, 30)]);
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    // Leaving it out of the final state is a lost hold.
    h.events.retain(|e| !e.final_phase);
    h.finish((0, 0), (0, 0), vec![]);
    assert!(failing(&h).contains(&"conservation"));
}

#[test]
fn an_unresolved_request_may_or_may_not_have_applied() {
    for applied in [false, true] {
        let mut h = H::new();
        let c = h.invoke(
            1,
            Some("w1"),
            Args::Charge {
                node: "r/a".into(),
                amount: 5,
            },
        );
        h.complete(&c, Kind::Info, None, None, false);
        let s = if applied { 5 } else { 0 };
        h.finish((0, s), (0, s), vec![]);
        assert_eq!(failing(&h), Vec::<&str>::new(), "applied {applied}");
    }
}

#[test]
fn replicas_that_differ_do_not_converge() {
    let view = |id, index, digest: &str| ReplicaView {
        id,
        applied_index: Some(index),
        state_digest: Some(digest.into()),
    };
    assert!(check_convergence(&[view(1, 9, "ab"), view(2, 9, "ab")]).valid);
    assert!(!check_convergence(&[view(1, 9, "ab"), view(2, 9, "cd")]).valid);
    assert!(!check_convergence(&[view(1, 9, "ab"), view(2, 8, "ab")]).valid);
    let silent = ReplicaView {
        id: 3,
        applied_index: None,
        state_digest: None,
    };
    assert!(!check_convergence(&[view(1, 9, "ab"), silent]).valid);
}

/// A correct, sequential budget: the answers a correct cluster gives, one entry per command.
struct Sim {
    h: H,
    spent: [u64; 2],
    held: [u64; 2],
    holds: Vec<(u64, usize, u64)>,
    next_rid: u64,
    index: u64,
    requests: u64,
}

const CAPS: [u64; 2] = [100, 50];
const NODES: [&str; 2] = ["r", "r/a"];

impl Sim {
    fn lineage(leaf: usize) -> Vec<usize> {
        if leaf == 1 {
            vec![1, 0]
        } else {
            vec![0]
        }
    }

    fn fits(&self, leaf: usize, amount: u64) -> bool {
        Sim::lineage(leaf)
            .iter()
            .all(|&n| self.spent[n] + self.held[n] + amount <= CAPS[n])
    }

    fn rid(&mut self) -> String {
        self.requests += 1;
        format!("s{}", self.requests)
    }

    /// One random step; returns the op id of a denial, if it was one.
    fn step(&mut self, rng: &mut crate::rng::Rng) -> Option<u64> {
        let leaf = rng.range(0, 1) as usize;
        let roll = rng.range(0, 99);
        if roll < 40 {
            let amount = rng.range(1, 40);
            let rid = self.rid();
            let op = self.h.next;
            if self.fits(leaf, amount) {
                self.index += 1;
                let r = self.next_rid;
                self.next_rid += 1;
                for n in Sim::lineage(leaf) {
                    self.held[n] += amount;
                }
                self.holds.push((r, leaf, amount));
                self.h.ok(
                    1,
                    &rid,
                    reserve(NODES[leaf], amount),
                    granted(r, amount),
                    self.index,
                );
                None
            } else {
                self.h.ok(
                    1,
                    &rid,
                    reserve(NODES[leaf], amount),
                    denied(amount),
                    self.index,
                );
                Some(op)
            }
        } else if roll < 70 && !self.holds.is_empty() {
            let k = rng.range(0, self.holds.len() as u64 - 1) as usize;
            let (r, leaf, h) = self.holds.swap_remove(k);
            let actual = rng.range(0, h + 5);
            let rid = self.rid();
            self.index += 1;
            for n in Sim::lineage(leaf) {
                self.held[n] -= h;
                self.spent[n] += actual;
            }
            let answer = settled(r, h, actual);
            let args = Args::Commit {
                reservation_id: r,
                actual,
            };
            self.h.ok(1, &rid, args, answer, self.index);
            None
        } else if roll < 85 {
            let amount = rng.range(1, 10);
            let rid = self.rid();
            let args = Args::Charge {
                node: NODES[leaf].into(),
                amount,
            };
            if self.fits(leaf, amount) {
                self.index += 1;
                for n in Sim::lineage(leaf) {
                    self.spent[n] += amount;
                }
                self.h.ok(1, &rid, args, charged(amount), self.index);
            } else {
                self.h.ok(1, &rid, args, denied(amount), self.index);
            }
            None
        } else {
            let answer = account(self.held[leaf], self.spent[leaf], CAPS[leaf]);
            self.h.read(NODES[leaf], answer);
            None
        }
    }

    fn run(seed: u64, steps: usize) -> (Sim, Vec<u64>) {
        let mut rng = crate::rng::Rng::new(seed);
        let mut sim = Sim {
            h: H::new(),
            spent: [0; 2],
            held: [0; 2],
            holds: Vec::new(),
            next_rid: 1,
            index: 4,
            requests: 0,
        };
        let mut denials = Vec::new();
        for _ in 0..steps {
            denials.extend(sim.step(&mut rng));
        }
        (sim, denials)
    }

    fn finish(&mut self) {
        let at_a: Vec<(u64, u64)> = self
            .holds
            .iter()
            .filter(|h| h.1 == 1)
            .map(|h| (h.0, h.2))
            .collect();
        let mut at_r: Vec<(u64, u64)> = self
            .holds
            .iter()
            .filter(|h| h.1 == 0)
            .map(|h| (h.0, h.2))
            .collect();
        self.h.finish(
            (self.held[0], self.spent[0]),
            (self.held[1], self.spent[1]),
            at_a,
        );
        // `finish` reports r's holds as empty: put r's own holds in.
        for e in self.h.events.iter_mut().rev() {
            if let Some(Answer::Holds { holds }) = &mut e.answer {
                if holds.is_empty() && !at_r.is_empty() {
                    holds.append(&mut at_r);
                }
            }
        }
    }
}

#[test]
fn random_correct_histories_pass() {
    for seed in 0..200 {
        let (mut sim, _) = Sim::run(seed, 60);
        sim.finish();
        assert_eq!(
            failing(&sim.h),
            Vec::<&str>::new(),
            "seed {seed}: {:#?}",
            sim.h.verdicts()
        );
    }
}

#[test]
fn random_histories_with_a_wrong_grant_fail() {
    let mut caught = 0;
    for seed in 0..200 {
        let (mut sim, denials) = Sim::run(seed, 60);
        let Some(&op) = denials.first() else { continue };
        // The cluster granted what a correct one denied (and kept the hold).
        let (leaf, amount) = sim
            .h
            .events
            .iter()
            .find_map(|e| match (&e.args, e.op == op) {
                (Some(Args::Reserve { node, min, .. }), true) => {
                    Some((usize::from(node == "r/a"), *min))
                }
                (Some(Args::Charge { node, amount }), true) => {
                    Some((usize::from(node == "r/a") + 2, *amount))
                }
                _ => None,
            })
            .expect("the denied op");
        if leaf >= 2 {
            continue; // a charge: keep the mutation to reservations
        }
        for e in sim.h.events.iter_mut() {
            if e.op == op && e.kind == Kind::Ok {
                e.answer = Some(granted(10_000, amount));
                e.log_index = e.log_index.map(|i| i + 1);
            }
        }
        for n in Sim::lineage(leaf) {
            sim.held[n] += amount;
        }
        sim.holds.push((10_000, leaf, amount));
        sim.finish();
        let f = failing(&sim.h);
        assert!(!f.is_empty(), "seed {seed}: a wrong grant passed");
        caught += 1;
    }
    assert!(caught > 20, "too few histories had a denial: {caught}");
}

// ---- Expiry by TTL, windows, grants ----------------------------------------------------------

const SECOND_NS: u64 = 1_000_000_000;

fn reserve_ttl(node: &str, amount: u64, ttl_ms: u64) -> Args {
    Args::Reserve {
        node: node.into(),
        min: amount,
        max: amount,
        exact: true,
        ttl_ms,
    }
}

fn expiry(reservation_id: u64, amount: u64, log_index: u64) -> Expiry {
    Expiry {
        reservation_id,
        node_id: 2,
        amount,
        log_index,
        at_ms: 0,
    }
}

fn late_settled(reservation_id: u64, actual: u64) -> Answer {
    Answer::Settled {
        reservation_id,
        charged: actual,
        released: Some(0),
        overrun: Some(actual),
        late: Some(true),
        debt: Some(0),
        plan: Some(vec![]),
    }
}

fn funded_grant(reservation_id: u64, amount: u64, plan: Vec<Part>) -> Answer {
    Answer::Granted {
        reservation_id,
        amount,
        expires_at_ms: None,
        plan: Some(plan),
    }
}

fn funded_charge(node: &str, amount: u64) -> Args {
    Args::Charge {
        node: node.into(),
        amount,
    }
}

fn funded_charged(amount: u64, plan: Vec<Part>) -> Answer {
    Answer::Charged {
        charged: amount,
        debt: Some(0),
        plan: Some(plan),
    }
}

fn funding_denied(requested: u64) -> Answer {
    Answer::Denied {
        node_id: 2,
        remaining: 0,
        requested,
        rule: Some("funding".into()),
    }
}

/// A node without caps, in a funded tree: `pool` is what its grants have (remaining, held).
fn funded_account(held: u64, spent: u64, pool: Option<(u64, u64)>) -> Answer {
    Answer::Account {
        held,
        spent,
        cap: None,
        limit_spent: None,
        limit_held: None,
        window: None,
        debt: Some(0),
        pool,
    }
}

fn grant_view(id: u64, amount: u64, remaining: u64, held: u64) -> GrantView {
    GrantView {
        id,
        amount,
        remaining,
        held,
        expired: false,
    }
}

impl H {
    fn sleep(&mut self, ns: u64) {
        self.t += ns;
    }

    /// The final phase's reading of the `hold_expired` events.
    fn expiries(&mut self, expired: Vec<Expiry>) {
        let i = self.final_op(None, Args::Expiries { marker: "m".into() });
        self.complete(
            &i,
            Kind::Ok,
            Some(Answer::Expiries { expired }),
            None,
            false,
        );
    }

    /// A release refused because its hold expired.
    fn refused_release(&mut self, rid: &str, reservation_id: u64) {
        let i = self.invoke(1, Some(rid), Args::Release { reservation_id });
        self.complete(&i, Kind::Fail, None, None, false);
        let error = format!(
            "FailedPrecondition: reservation {reservation_id} expired and was already released"
        );
        self.events.last_mut().expect("the completion").error = Some(error);
    }

    /// A funded root `f` whose first grant (id 1) has `amount`, and a child `f/a`, at log
    /// indices 1..=3.
    fn funded(amount: u64) -> H {
        let mut h = H {
            events: Vec::new(),
            next: 1,
            t: 0,
        };
        let node = |path: &str, funded| Args::CreateNode {
            path: path.into(),
            funded,
        };
        h.ok(0, "n0", node("f", true), Answer::Done, 1);
        h.ok(0, "n1", node("f/a", false), Answer::Done, 2);
        let grant = Args::AddGrant {
            node: "f".into(),
            amount,
        };
        h.ok(0, "g1", grant, Answer::GrantAdded { grant_id: 1 }, 3);
        h
    }

    /// Final reads of the funded tree: (held, spent) of both nodes (every hold is at `f/a`),
    /// the holds at `f/a`, and the grants of `f`.
    fn finish_funded(&mut self, f: (u64, u64), holds: Vec<(u64, u64)>, grants: Vec<GrantView>) {
        let pool = (
            grants.iter().map(|g| g.remaining).sum(),
            grants.iter().map(|g| g.held).sum(),
        );
        for (node, pool) in [("f", Some(pool)), ("f/a", None)] {
            let i = self.final_op(None, Args::Show { node: node.into() });
            let answer = funded_account(f.0, f.1, pool);
            self.complete(&i, Kind::Ok, Some(answer), None, false);
        }
        for (node, holds) in [("f", vec![]), ("f/a", holds)] {
            let i = self.final_op(None, Args::Holds { node: node.into() });
            self.complete(&i, Kind::Ok, Some(Answer::Holds { holds }), None, false);
        }
        let i = self.final_op(None, Args::Grants { node: "f".into() });
        self.complete(&i, Kind::Ok, Some(Answer::Grants { grants }), None, false);
    }
}

/// A hold of 40 under a cap of 50 expires; a second hold of 40 then fits.
fn expired_room_used_again() -> H {
    let mut h = H::new();
    h.ok(1, "w1", reserve_ttl("r/a", 40, 1_000), granted(1, 40), 5);
    h.sleep(2 * SECOND_NS);
    h.ok(2, "w2", reserve("r/a", 40), granted(2, 40), 7);
    h.read("r/a", account(40, 0, 50));
    h.finish((40, 0), (40, 0), vec![(2, 40)]);
    h
}

#[test]
fn an_expired_holds_room_is_used_again() {
    let mut h = expired_room_used_again();
    h.expiries(vec![expiry(1, 40, 6)]);
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    // The expiry is what makes room: without it the second hold is an overspend.
    let mut h = expired_room_used_again();
    h.expiries(vec![]);
    let f = failing(&h);
    assert!(f.contains(&"no-overspend"), "{f:?}");
}

#[test]
fn without_the_events_an_expiry_floats_after_the_ttl() {
    let h = expired_room_used_again();
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    // Before the TTL could pass, the hold still counts: no room for the second one.
    let mut h = H::new();
    h.ok(1, "w1", reserve_ttl("r/a", 40, 1_000), granted(1, 40), 5);
    h.ok(2, "w2", reserve("r/a", 40), granted(2, 40), 7);
    h.sleep(2 * SECOND_NS);
    h.finish((40, 0), (40, 0), vec![(2, 40)]);
    assert!(failing(&h).contains(&"no-overspend"), "{:#?}", h.verdicts());
}

#[test]
fn an_expiry_before_the_ttl_is_not_linearizable() {
    let mut h = H::new();
    h.ok(1, "w1", reserve_ttl("r/a", 40, 1_000), granted(1, 40), 5);
    // Answered at index 7 well before the TTL could pass, yet the expiry sits at index 6.
    h.ok(2, "w2", funded_charge("r/a", 5), charged(5), 7);
    h.sleep(2 * SECOND_NS);
    h.finish((0, 5), (0, 5), vec![]);
    h.expiries(vec![expiry(1, 40, 6)]);
    assert_eq!(failing(&h), vec!["linearizability"], "{:#?}", h.verdicts());
}

#[test]
fn a_hold_that_outlives_its_ttl_breaks_conservation() {
    let mut h = H::new();
    h.ok(1, "w1", reserve_ttl("r/a", 40, 1_000), granted(1, 40), 5);
    h.sleep(5 * SECOND_NS);
    h.finish((40, 0), (40, 0), vec![(1, 40)]);
    h.expiries(vec![]);
    assert_eq!(failing(&h), vec!["conservation"], "{:#?}", h.verdicts());
}

#[test]
fn a_late_settle_needs_an_expiry_before_it() {
    let history = |expired: Vec<Expiry>| {
        let mut h = H::new();
        h.ok(1, "w1", reserve_ttl("r/a", 40, 1_000), granted(1, 40), 5);
        h.sleep(2 * SECOND_NS);
        let settle = Args::Commit {
            reservation_id: 1,
            actual: 10,
        };
        h.ok(1, "w2", settle, late_settled(1, 10), 7);
        h.finish((0, 10), (0, 10), vec![]);
        h.expiries(expired);
        h
    };
    let h = history(vec![expiry(1, 40, 6)]);
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    let h = history(vec![]);
    assert!(
        failing(&h).contains(&"linearizability"),
        "{:#?}",
        h.verdicts()
    );
    // The expiry after the late settle: the settle could not have been late.
    let h = history(vec![expiry(1, 40, 8)]);
    assert!(
        failing(&h).contains(&"linearizability"),
        "{:#?}",
        h.verdicts()
    );
}

#[test]
fn a_release_refused_as_expired_needs_an_expiry() {
    let history = |expired: Option<Vec<Expiry>>| {
        let mut h = H::new();
        h.ok(1, "w1", reserve_ttl("r/a", 40, 1_000), granted(1, 40), 5);
        h.sleep(2 * SECOND_NS);
        h.refused_release("w2", 1);
        h.finish((0, 0), (0, 0), vec![]);
        if let Some(expired) = expired {
            h.expiries(expired);
        }
        h
    };
    for h in [history(Some(vec![expiry(1, 40, 6)])), history(None)] {
        assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    }
    let h = history(Some(vec![]));
    assert!(
        failing(&h).contains(&"linearizability"),
        "{:#?}",
        h.verdicts()
    );
}

#[test]
fn a_hold_settled_in_time_never_expires() {
    let mut h = H::new();
    h.ok(1, "w1", reserve_ttl("r/a", 40, 1_000), granted(1, 40), 5);
    let settle = Args::Commit {
        reservation_id: 1,
        actual: 10,
    };
    h.ok(1, "w2", settle, settled(1, 40, 10), 6);
    h.sleep(2 * SECOND_NS);
    h.finish((0, 10), (0, 10), vec![]);
    h.expiries(vec![expiry(1, 40, 7)]);
    assert!(
        failing(&h).contains(&"linearizability"),
        "{:#?}",
        h.verdicts()
    );
}

#[test]
fn an_expiry_of_a_hold_no_request_was_granted_breaks_idempotency() {
    let mut h = expired_room_used_again();
    h.expiries(vec![expiry(1, 40, 6), expiry(9, 10, 8)]);
    assert_eq!(failing(&h), vec!["idempotency"], "{:#?}", h.verdicts());
}

#[test]
fn a_window_that_resets_during_a_run_is_flagged() {
    // The checker treats every window as never resetting: a read whose limit counts less
    // than the account spent says that it did.
    let mut h = H::new();
    h.ok(2, "w2", funded_charge("r/a", 5), charged(5), 5);
    let mut reset = account(0, 5, 50);
    if let Answer::Account {
        limit_spent,
        window,
        ..
    } = &mut reset
    {
        *limit_spent = Some(0);
        *window = Some(Window::Lifetime);
    }
    h.read("r/a", reset);
    h.finish((0, 5), (0, 5), vec![]);
    assert_eq!(failing(&h), vec!["linearizability"], "{:#?}", h.verdicts());
}

/// Grant 1 (50) funds a hold of 40, settled at 30; a funding denial; grant 2 (100) is added; a
/// charge of 50 takes grant 1's last 20 and 30 of grant 2; a hold of 60 takes grant 2.
fn valid_funded() -> H {
    let mut h = H::funded(50);
    h.ok(
        1,
        "w1",
        reserve("f/a", 40),
        funded_grant(1, 40, vec![(1, 40)]),
        4,
    );
    h.ok(2, "w2", reserve("f/a", 20), funding_denied(20), 4);
    let settle = Args::Commit {
        reservation_id: 1,
        actual: 30,
    };
    let mut paid = settled(1, 40, 30);
    if let Answer::Settled { plan, .. } = &mut paid {
        *plan = Some(vec![(1, 30)]);
    }
    h.ok(1, "w1b", settle, paid, 5);
    h.read("f", funded_account(0, 30, Some((20, 0))));
    let topup = Args::AddGrant {
        node: "f".into(),
        amount: 100,
    };
    h.ok(0, "admin-1", topup, Answer::GrantAdded { grant_id: 2 }, 6);
    let charge = funded_charge("f/a", 50);
    h.ok(
        3,
        "w3",
        charge,
        funded_charged(50, vec![(1, 20), (2, 30)]),
        7,
    );
    h.ok(
        1,
        "w1c",
        reserve("f/a", 60),
        funded_grant(2, 60, vec![(2, 60)]),
        8,
    );
    h.read("f", funded_account(60, 80, Some((70, 60))));
    h
}

#[test]
fn a_funded_history_passes() {
    let mut h = valid_funded();
    let grants = vec![grant_view(1, 50, 0, 0), grant_view(2, 100, 70, 60)];
    h.finish_funded((60, 80), vec![(2, 60)], grants);
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    let v = h.verdicts();
    assert!(v["conservation"].checked >= 6, "{:#?}", v["conservation"]);
}

#[test]
fn grant_balances_the_replay_does_not_explain_break_conservation() {
    let mut h = valid_funded();
    // The sums still match the replay; grant by grant they do not.
    let grants = vec![grant_view(1, 50, 10, 0), grant_view(2, 100, 60, 60)];
    h.finish_funded((60, 80), vec![(2, 60)], grants);
    assert_eq!(failing(&h), vec!["conservation"], "{:#?}", h.verdicts());
}

#[test]
fn an_overdrawn_grant_is_an_overspend() {
    let mut h = H::funded(50);
    h.ok(
        1,
        "w1",
        funded_charge("f/a", 30),
        funded_charged(30, vec![(1, 30)]),
        4,
    );
    h.ok(
        2,
        "w2",
        funded_charge("f/a", 30),
        funded_charged(30, vec![(1, 30)]),
        5,
    );
    h.finish_funded((0, 60), vec![], vec![grant_view(1, 50, 0, 0)]);
    let f = failing(&h);
    assert!(f.contains(&"no-overspend"), "{:#?}", h.verdicts());
    let v = h.verdicts();
    let evidence = v["no-overspend"].violations.join("\n");
    assert!(evidence.contains("paid out 60"), "{evidence}");
}

#[test]
fn a_funding_denial_with_money_left_is_not_linearizable() {
    let mut h = H::funded(50);
    h.ok(1, "w1", reserve("f/a", 20), funding_denied(20), 3);
    h.finish_funded((0, 0), vec![], vec![grant_view(1, 50, 50, 0)]);
    assert_eq!(failing(&h), vec!["linearizability"], "{:#?}", h.verdicts());
}

#[test]
fn a_hold_funded_by_a_grant_that_was_not_there_fails() {
    // Grant 2 is added after the hold that names it.
    let mut h = H::funded(10);
    h.ok(
        1,
        "w1",
        reserve("f/a", 40),
        funded_grant(1, 40, vec![(2, 40)]),
        4,
    );
    let topup = Args::AddGrant {
        node: "f".into(),
        amount: 100,
    };
    h.ok(0, "admin-1", topup, Answer::GrantAdded { grant_id: 2 }, 5);
    let grants = vec![grant_view(1, 10, 10, 0), grant_view(2, 100, 100, 40)];
    h.finish_funded((40, 0), vec![(1, 40)], grants);
    assert!(failing(&h).contains(&"no-overspend"), "{:#?}", h.verdicts());
}

impl Sim {
    /// One step of expiry: a Tick expires an open hold (its TTL long past), or a hold that
    /// expired is settled late or refused a release.
    fn step_expiry(
        &mut self,
        rng: &mut crate::rng::Rng,
        expired: &mut Vec<(u64, usize, u64)>,
        events: &mut Vec<Expiry>,
    ) {
        if !expired.is_empty() && rng.chance(50) {
            let k = rng.range(0, expired.len() as u64 - 1) as usize;
            let (r, leaf, _) = expired.swap_remove(k);
            let rid = self.rid();
            if rng.chance(50) {
                let actual = rng.range(0, 20);
                self.index += 1;
                for n in Sim::lineage(leaf) {
                    self.spent[n] += actual;
                }
                let args = Args::Commit {
                    reservation_id: r,
                    actual,
                };
                self.h
                    .ok(1, &rid, args, late_settled(r, actual), self.index);
            } else {
                self.h.refused_release(&rid, r);
            }
        } else if !self.holds.is_empty() {
            self.h.sleep(2 * SECOND_NS);
            let k = rng.range(0, self.holds.len() as u64 - 1) as usize;
            let (r, leaf, h) = self.holds.swap_remove(k);
            self.index += 1;
            for n in Sim::lineage(leaf) {
                self.held[n] -= h;
            }
            events.push(expiry(r, h, self.index));
            expired.push((r, leaf, h));
        }
    }

    /// A correct history with expiries; returns it and the `hold_expired` events.
    fn run_with_expiry(seed: u64, steps: usize) -> (Sim, Vec<Expiry>) {
        let (mut sim, _) = Sim::run(seed, 0);
        let mut rng = crate::rng::Rng::new(seed);
        let mut expired = Vec::new();
        let mut events = Vec::new();
        for _ in 0..steps {
            if rng.chance(15) {
                sim.step_expiry(&mut rng, &mut expired, &mut events);
            } else {
                sim.step(&mut rng);
            }
        }
        // The holds that expired were reserved with a short TTL.
        let short: HashSet<u64> = events.iter().map(|e| e.reservation_id).collect();
        let granted: HashMap<u64, u64> = sim
            .h
            .events
            .iter()
            .filter_map(|e| match &e.answer {
                Some(Answer::Granted { reservation_id, .. }) => Some((e.op, *reservation_id)),
                _ => None,
            })
            .collect();
        for e in sim.h.events.iter_mut() {
            if let Some(Args::Reserve { ttl_ms, .. }) = &mut e.args {
                if granted.get(&e.op).is_some_and(|r| short.contains(r)) {
                    *ttl_ms = 1_000;
                }
            }
        }
        (sim, events)
    }
}

#[test]
fn random_correct_histories_with_expiries_pass() {
    let mut expiries = 0;
    for seed in 0..100 {
        let (mut sim, events) = Sim::run_with_expiry(seed, 80);
        expiries += events.len();
        sim.finish();
        // Without the events, the expiries float; with them, they are exact.
        assert_eq!(
            failing(&sim.h),
            Vec::<&str>::new(),
            "seed {seed} without events: {:#?}",
            sim.h.verdicts()
        );
        sim.h.expiries(events);
        assert_eq!(
            failing(&sim.h),
            Vec::<&str>::new(),
            "seed {seed}: {:#?}",
            sim.h.verdicts()
        );
    }
    assert!(expiries > 100, "too few expiries: {expiries}");
}

#[test]
fn a_leader_clock_ahead_lets_holds_expire_early() {
    let history = |ahead_ms: u64| {
        let mut h = H::new();
        let r = h.invoke(1, Some("w1"), reserve_ttl("r/a", 40, 1_000));
        let origin_ms = 1_000_000;
        for e in h.events.iter_mut().filter(|e| e.op == r.op) {
            e.sent_at_ms = Some(origin_ms);
        }
        // The leader applied it `ahead_ms` after the harness's clock.
        let expires_at_ms = origin_ms + ahead_ms + 1_000;
        let granted = Answer::Granted {
            reservation_id: 1,
            amount: 40,
            expires_at_ms: Some(expires_at_ms),
            plan: Some(vec![]),
        };
        h.complete(&r, Kind::Ok, Some(granted), Some(5), false);
        h.ok(2, "w2", funded_charge("r/a", 5), charged(5), 7);
        h.sleep(2 * SECOND_NS);
        h.finish((0, 5), (0, 5), vec![]);
        let mut early = expiry(1, 40, 6);
        early.at_ms = expires_at_ms;
        h.expiries(vec![early]);
        h
    };
    let h = history(5_000);
    assert_eq!(failing(&h), Vec::<&str>::new(), "{:#?}", h.verdicts());
    let h = history(0);
    assert_eq!(failing(&h), vec!["linearizability"], "{:#?}", h.verdicts());
}

#[test]
fn grants_are_checked_at_the_end_and_in_reads() {
    // An acknowledged grant missing at the end is lost.
    let mut h = valid_funded();
    h.finish_funded((60, 80), vec![(2, 60)], vec![grant_view(2, 100, 70, 60)]);
    assert!(failing(&h).contains(&"no-lost-ack"), "{:#?}", h.verdicts());
    // A grant holding more than it has left breaks I2.
    let mut h = H::funded(50);
    h.finish_funded((0, 0), vec![], vec![grant_view(1, 50, 10, 20)]);
    assert!(failing(&h).contains(&"no-overspend"), "{:#?}", h.verdicts());
    // A read of the pool that no prefix of the log explains.
    let mut h = valid_funded();
    h.read("f", funded_account(60, 80, Some((90, 60))));
    let grants = vec![grant_view(1, 50, 0, 0), grant_view(2, 100, 70, 60)];
    h.finish_funded((60, 80), vec![(2, 60)], grants);
    assert_eq!(failing(&h), vec!["linearizability"], "{:#?}", h.verdicts());
}

#[test]
fn a_settle_paid_by_other_grants_than_its_holds_fails() {
    let mut h = H::funded(50);
    let topup = Args::AddGrant {
        node: "f".into(),
        amount: 100,
    };
    h.ok(0, "admin-1", topup, Answer::GrantAdded { grant_id: 2 }, 4);
    h.ok(
        1,
        "w1",
        reserve("f/a", 40),
        funded_grant(1, 40, vec![(1, 40)]),
        5,
    );
    let settle = Args::Commit {
        reservation_id: 1,
        actual: 30,
    };
    let mut paid = settled(1, 40, 30);
    if let Answer::Settled { plan, .. } = &mut paid {
        *plan = Some(vec![(2, 30)]);
    }
    h.ok(1, "w1b", settle, paid, 6);
    let grants = vec![grant_view(1, 50, 50, 0), grant_view(2, 100, 70, 0)];
    h.finish_funded((0, 30), vec![], grants);
    assert_eq!(failing(&h), vec!["linearizability"], "{:#?}", h.verdicts());
}
