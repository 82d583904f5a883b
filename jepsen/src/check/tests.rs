//! The checkers on small synthetic histories: valid ones pass, and each kind of violation is
//! flagged by the checker that owns it.

use super::*;
use crate::history::{Answer, Args, Event, Kind};

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
    }
}

fn granted(reservation_id: u64, amount: u64) -> Answer {
    Answer::Granted {
        reservation_id,
        amount,
    }
}

fn denied(requested: u64) -> Answer {
    Answer::Denied {
        node_id: 2,
        remaining: 0,
        requested,
    }
}

fn account(held: u64, spent: u64, cap: u64) -> Answer {
    Answer::Account {
        held,
        spent,
        cap: Some(cap),
        limit_spent: Some(spent),
        limit_held: Some(held),
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
            Args::CreateNode { path: "r".into() },
            Answer::Done,
            1,
        );
        h.ok(
            0,
            "n1",
            Args::CreateNode { path: "r/a".into() },
            Answer::Done,
            2,
        );
        let cap = |node: &str, amount| Args::SetLimit {
            node: node.into(),
            amount,
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

    fn verdicts(&self) -> HashMap<&'static str, Verdict> {
        check(&self.events, None)
            .into_iter()
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
    let answer = Answer::Settled {
        reservation_id: 1,
        charged: 10,
        released: Some(20),
        overrun: Some(0),
    };
    h.ok(1, "w3", settle, answer, 6);
    h.ok(
        2,
        "w4",
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
        Answer::Charged { charged: 5 },
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
        Answer::Charged { charged: 5 },
        8,
    );
    h.ok(
        2,
        "w2",
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
        Answer::Charged { charged: 5 },
        7,
    );
    h.finish((0, 10), (0, 0), vec![]);
    let v = h.verdicts();
    assert!(!v["linearizability"].valid);
    assert!(v["linearizability"].violations[0].contains("real-time"));
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
    h.complete(
        &retry,
        Kind::Ok,
        Some(Answer::Charged { charged: 5 }),
        Some(9),
        false,
    );
    assert_eq!(failing(&h), vec!["no-lost-ack"]);
    let mut h = valid();
    let retry = h.final_op(
        Some("w4"),
        Args::Charge {
            node: "r".into(),
            amount: 5,
        },
    );
    h.complete(
        &retry,
        Kind::Ok,
        Some(Answer::Charged { charged: 5 }),
        Some(9),
        true,
    );
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
    let wrong = Answer::Settled {
        reservation_id: 1,
        charged: 10,
        released: Some(30),
        overrun: Some(0),
    };
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
            let answer = Answer::Settled {
                reservation_id: r,
                charged: actual,
                released: Some(h.saturating_sub(actual)),
                overrun: Some(actual.saturating_sub(h)),
            };
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
                self.h.ok(
                    1,
                    &rid,
                    args,
                    Answer::Charged { charged: amount },
                    self.index,
                );
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
