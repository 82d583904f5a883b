//! The WGL search (`purser_jepsen::wgl`): hand-written histories — classic non-linearizable
//! ones are caught, their linearizable twins pass, and the search says "unknown" rather than
//! guess — and property tests that hold it to the brute force on small random histories.

mod common {
    // Building histories for the WGL tests. Commands and answers are written as JSON, so that
    // fields the history format gains take their defaults here too.

    use purser_jepsen::history::{Answer, Args, Event, Kind};
    use serde_json::{json, Value};

    pub fn args(v: Value) -> Args {
        serde_json::from_value(v).expect("a command")
    }

    pub fn answer(v: Value) -> Answer {
        serde_json::from_value(v).expect("an answer")
    }

    pub fn reserve(node: &str, min: u64, max: u64) -> Args {
        args(json!({"f": "reserve", "node": node, "min": min, "max": max, "exact": min == max}))
    }

    pub fn charge(node: &str, amount: u64) -> Args {
        args(json!({"f": "charge", "node": node, "amount": amount}))
    }

    pub fn commit(reservation_id: u64, actual: u64) -> Args {
        args(json!({"f": "commit", "reservation_id": reservation_id, "actual": actual}))
    }

    pub fn release(reservation_id: u64) -> Args {
        args(json!({"f": "release", "reservation_id": reservation_id}))
    }

    pub fn set_limit(node: &str, amount: u64) -> Args {
        args(json!({"f": "set_limit", "node": node, "amount": amount}))
    }

    pub fn create(path: &str) -> Args {
        args(json!({"f": "create_node", "path": path}))
    }

    pub fn show(node: &str) -> Args {
        args(json!({"f": "show", "node": node}))
    }

    pub fn holds(node: &str) -> Args {
        args(json!({"f": "holds", "node": node}))
    }

    pub fn granted(reservation_id: u64, amount: u64) -> Answer {
        answer(json!({"type": "granted", "reservation_id": reservation_id, "amount": amount}))
    }

    pub fn denied(node_id: u64, remaining: u64, requested: u64) -> Answer {
        answer(
            json!({"type": "denied", "node_id": node_id, "remaining": remaining,
                      "requested": requested}),
        )
    }

    pub fn settled(reservation_id: u64, charged: u64, released: u64, overrun: u64) -> Answer {
        answer(
            json!({"type": "settled", "reservation_id": reservation_id, "charged": charged,
                      "released": released, "overrun": overrun}),
        )
    }

    pub fn done() -> Answer {
        answer(json!({"type": "done"}))
    }

    /// `Show` of a node with a cap whose counter is its spend.
    pub fn account(held: u64, spent: u64, cap: u64) -> Answer {
        answer(
            json!({"type": "account", "held": held, "spent": spent, "cap": cap,
                      "limit_spent": spent, "limit_held": held}),
        )
    }

    /// A history under construction: each operation with the times it is given.
    pub struct H {
        pub events: Vec<Event>,
        next: u64,
        requests: u64,
    }

    /// How an operation ended.
    pub enum End {
        Ok(u64, Answer),
        Fail(u64),
        Info(u64),
        /// Never completed (no completion event).
        Never,
    }

    impl H {
        pub fn empty() -> H {
            H {
                events: Vec::new(),
                next: 1,
                requests: 0,
            }
        }

        /// `jt` (node 1, cap 100) → `jt/a` (node 2, cap 50), `jt/b` (node 3, no cap), created
        /// one after the other during the first 10 ns.
        pub fn new() -> H {
            let mut h = H::empty();
            let steps = [
                (create("jt"), 1),
                (set_limit("jt", 100), 2),
                (create("jt/a"), 3),
                (set_limit("jt/a", 50), 4),
                (create("jt/b"), 5),
            ];
            for (a, t) in steps {
                h.request(0, a, 2 * t - 1, End::Ok(2 * t, done()));
            }
            h
        }

        /// One attempt of a new request id; returns the request id.
        pub fn request(&mut self, worker: u32, args: Args, invoke: u64, end: End) -> String {
            self.requests += 1;
            let rid = format!("r{}", self.requests);
            self.attempt(worker, Some(&rid), args, invoke, end);
            rid
        }

        /// A read (no request id).
        pub fn read(&mut self, worker: u32, args: Args, invoke: u64, end: End) {
            self.attempt(worker, None, args, invoke, end);
        }

        /// One attempt of request `rid` (a retry when the id was used before).
        pub fn attempt(
            &mut self,
            worker: u32,
            rid: Option<&str>,
            args: Args,
            invoke: u64,
            end: End,
        ) {
            let op = self.next;
            self.next += 1;
            let mut inv = Event::invoke(op, worker, rid.map(str::to_owned), args);
            inv.t_ns = invoke;
            let done = match end {
                End::Ok(t, a) => {
                    let mut e = Event::completion(&inv, Kind::Ok);
                    e.t_ns = t;
                    e.answer = Some(a);
                    Some(e)
                }
                End::Fail(t) => {
                    let mut e = Event::completion(&inv, Kind::Fail);
                    e.t_ns = t;
                    e.error = Some("refused".into());
                    Some(e)
                }
                End::Info(t) => {
                    let mut e = Event::completion(&inv, Kind::Info);
                    e.t_ns = t;
                    e.error = Some("timed out".into());
                    Some(e)
                }
                End::Never => None,
            };
            self.events.push(inv);
            self.events.extend(done);
        }

        /// The events in time order, as a recorded history has them.
        pub fn history(&self) -> Vec<Event> {
            let mut events = self.events.clone();
            events.sort_by_key(|e| (e.t_ns, e.op));
            events
        }
    }
}

// Classic violations against their linearizable twins; unknown where it cannot decide.
mod hand_written {
    use super::common::*;

    use purser_jepsen::wgl::{self, Bounds, Outcome};
    use serde_json::json;

    fn valid(h: &H) -> bool {
        let report = wgl::analyze(&h.history(), Bounds::default());
        for r in &report.roots {
            assert!(
                !matches!(r.outcome, Outcome::Unknown { .. }),
                "undecided: {:?}",
                r.outcome
            );
        }
        // The brute force agrees on every hand-written history.
        assert_eq!(
            wgl::brute_force(&h.history()),
            Some(report.verdict.valid),
            "{:?}",
            report.verdict.violations
        );
        report.verdict.valid
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let mut h = H::new();
        h.request(1, reserve("jt/a", 10, 40), 20, End::Ok(21, granted(1, 40)));
        h.request(1, commit(1, 45), 22, End::Ok(23, settled(1, 45, 0, 5)));
        h.read(1, show("jt/a"), 24, End::Ok(25, account(0, 45, 50)));
        h.request(1, charge("jt/a", 10), 26, End::Ok(27, denied(2, 5, 10)));
        h.request(1, reserve("jt/b", 3, 70), 28, End::Ok(29, granted(2, 55)));
        h.read(
            1,
            holds("jt/b"),
            30,
            End::Ok(31, answer(json!({"type": "holds", "holds": [[2, 55]]}))),
        );
        h.read(1, show("jt"), 32, End::Ok(33, account(55, 45, 100)));
        let report = wgl::analyze(&h.history(), Bounds::default());
        assert!(report.verdict.valid, "{:?}", report.verdict.violations);
        assert_eq!(report.verdict.checker, "linearizability-wgl");
        assert_eq!(report.roots[0].outcome, Outcome::Linearizable);
        assert!(valid(&h));
    }

    #[test]
    fn a_read_that_sees_a_grant_before_it_was_invoked() {
        let mut h = H::new();
        h.read(1, show("jt/a"), 20, End::Ok(30, account(10, 0, 50)));
        h.request(2, reserve("jt/a", 10, 10), 40, End::Ok(50, granted(1, 10)));
        assert!(!valid(&h));
        // Overlapping, it may have seen it.
        let mut h = H::new();
        h.read(1, show("jt/a"), 20, End::Ok(45, account(10, 0, 50)));
        h.request(2, reserve("jt/a", 10, 10), 40, End::Ok(50, granted(1, 10)));
        assert!(valid(&h));
    }

    #[test]
    fn two_grants_that_together_exceed_a_cap() {
        let mut h = H::new();
        h.request(1, reserve("jt/a", 30, 30), 20, End::Ok(40, granted(1, 30)));
        h.request(2, reserve("jt/a", 30, 30), 25, End::Ok(45, granted(2, 30)));
        assert!(!valid(&h));
        // The same through the root: jt/a and jt/b are each within their caps, jt is not.
        let mut h = H::new();
        h.request(1, reserve("jt/a", 50, 50), 20, End::Ok(40, granted(1, 50)));
        h.request(2, reserve("jt/b", 60, 60), 25, End::Ok(45, granted(2, 60)));
        assert!(!valid(&h));
        let mut h = H::new();
        h.request(1, reserve("jt/a", 30, 30), 20, End::Ok(40, granted(1, 30)));
        h.request(
            2,
            reserve("jt/a", 30, 30),
            25,
            End::Ok(45, denied(2, 20, 30)),
        );
        assert!(valid(&h));
    }

    #[test]
    fn a_denial_while_room_existed_throughout() {
        let mut h = H::new();
        h.request(1, reserve("jt/a", 45, 45), 20, End::Ok(21, granted(1, 45)));
        h.request(
            1,
            release(1),
            30,
            End::Ok(
                31,
                answer(json!({"type": "released", "reservation_id": 1, "amount": 45})),
            ),
        );
        h.request(
            2,
            reserve("jt/a", 10, 10),
            40,
            End::Ok(50, denied(2, 5, 10)),
        );
        assert!(!valid(&h));
        // Concurrent with the release, the denial may come first.
        let mut h = H::new();
        h.request(1, reserve("jt/a", 45, 45), 20, End::Ok(21, granted(1, 45)));
        h.request(
            1,
            release(1),
            30,
            End::Ok(
                45,
                answer(json!({"type": "released", "reservation_id": 1, "amount": 45})),
            ),
        );
        h.request(
            2,
            reserve("jt/a", 10, 10),
            40,
            End::Ok(50, denied(2, 5, 10)),
        );
        assert!(valid(&h));
        // A denial must name the level that refused and what it had left.
        let mut h = H::new();
        h.request(1, reserve("jt/a", 45, 45), 20, End::Ok(21, granted(1, 45)));
        h.request(
            2,
            reserve("jt/a", 10, 10),
            40,
            End::Ok(50, denied(1, 5, 10)),
        );
        assert!(!valid(&h));
    }

    #[test]
    fn a_denied_request_that_took_effect_later() {
        // Seed 503490: denied, then its earlier attempt went through after a cap was raised.
        let mut h = H::new();
        h.request(1, reserve("jt/a", 30, 30), 20, End::Ok(21, granted(1, 30)));
        h.request(
            2,
            reserve("jt/a", 35, 35),
            30,
            End::Ok(31, denied(2, 20, 35)),
        );
        h.request(3, set_limit("jt/a", 100), 40, End::Ok(41, done()));
        h.read(1, show("jt/a"), 50, End::Ok(51, account(65, 0, 100)));
        assert!(!valid(&h));
        let mut h = H::new();
        h.request(1, reserve("jt/a", 30, 30), 20, End::Ok(21, granted(1, 30)));
        h.request(
            2,
            reserve("jt/a", 35, 35),
            30,
            End::Ok(31, denied(2, 20, 35)),
        );
        h.request(3, set_limit("jt/a", 100), 40, End::Ok(41, done()));
        // The next grant skips the id the phantom took.
        h.request(1, reserve("jt/a", 5, 5), 50, End::Ok(51, granted(3, 5)));
        assert!(!valid(&h));
    }

    #[test]
    fn an_indeterminate_request_may_apply_later_or_never() {
        let mut h = H::new();
        h.request(1, reserve("jt/a", 10, 10), 20, End::Info(30));
        h.read(2, show("jt/a"), 40, End::Ok(41, account(0, 0, 50)));
        h.read(2, show("jt/a"), 100, End::Ok(110, account(10, 0, 50)));
        assert!(valid(&h));
        // Not before it was sent, and not undone.
        let mut h = H::new();
        h.read(2, show("jt/a"), 12, End::Ok(15, account(10, 0, 50)));
        h.request(1, reserve("jt/a", 10, 10), 20, End::Never);
        assert!(!valid(&h));
        let mut h = H::new();
        h.request(1, reserve("jt/a", 10, 10), 20, End::Never);
        h.read(2, show("jt/a"), 40, End::Ok(41, account(10, 0, 50)));
        h.read(2, show("jt/a"), 50, End::Ok(51, account(0, 0, 50)));
        assert!(!valid(&h));
    }

    #[test]
    fn the_attempts_of_a_request_are_one_operation() {
        // A first attempt timed out, the retry was answered: the effect may come from either.
        let mut h = H::new();
        let rid = h.request(1, reserve("jt/a", 10, 10), 20, End::Info(30));
        h.read(2, show("jt/a"), 32, End::Ok(35, account(10, 0, 50)));
        h.attempt(
            1,
            Some(&rid),
            reserve("jt/a", 10, 10),
            40,
            End::Ok(50, granted(1, 10)),
        );
        assert!(valid(&h));
        // Not before the first was sent.
        let mut h = H::new();
        h.read(2, show("jt/a"), 12, End::Ok(15, account(10, 0, 50)));
        let rid = h.request(1, reserve("jt/a", 10, 10), 20, End::Info(30));
        h.attempt(
            1,
            Some(&rid),
            reserve("jt/a", 10, 10),
            40,
            End::Ok(50, granted(1, 10)),
        );
        assert!(!valid(&h));
        // A refused request never applied, and a duplicate answer changes nothing.
        let mut h = H::new();
        h.request(1, reserve("jt/a", 10, 10), 20, End::Fail(30));
        h.read(2, show("jt/a"), 40, End::Ok(50, account(10, 0, 50)));
        assert!(!valid(&h));
        let mut h = H::new();
        let rid = h.request(1, reserve("jt/a", 10, 10), 20, End::Ok(30, granted(1, 10)));
        h.attempt(
            0,
            Some(&rid),
            reserve("jt/a", 10, 10),
            60,
            End::Ok(70, granted(1, 10)),
        );
        if let Some(last) = h.events.last_mut() {
            last.duplicate = true;
        }
        h.read(2, show("jt/a"), 80, End::Ok(90, account(10, 0, 50)));
        assert!(valid(&h));
    }

    #[test]
    fn several_end_states_are_carried() {
        // Two concurrent cap raises: either may be last.
        for (cap, ok) in [(60, true), (70, true), (65, false)] {
            let mut h = H::new();
            h.request(1, set_limit("jt/a", 60), 20, End::Ok(30, done()));
            h.request(2, set_limit("jt/a", 70), 22, End::Ok(32, done()));
            h.read(1, show("jt/a"), 40, End::Ok(41, account(0, 0, cap)));
            assert_eq!(valid(&h), ok, "cap {cap}");
        }
    }

    #[test]
    fn a_commit_of_a_closed_hold_cannot_succeed() {
        let mut h = H::new();
        h.request(1, reserve("jt/a", 10, 10), 20, End::Ok(21, granted(1, 10)));
        h.request(
            1,
            release(1),
            22,
            End::Ok(
                23,
                answer(json!({"type": "released", "reservation_id": 1, "amount": 10})),
            ),
        );
        h.request(1, commit(1, 3), 24, End::Ok(25, settled(1, 3, 7, 0)));
        assert!(!valid(&h));
    }

    #[test]
    fn the_step_bound_gives_unknown() {
        let mut h = H::new();
        for w in 0..8 {
            h.read(
                w,
                show("jt"),
                20 + w as u64,
                End::Ok(100, account(0, 0, 100)),
            );
        }
        h.request(
            9,
            reserve("jt/a", 10, 10),
            200,
            End::Ok(201, granted(1, 10)),
        );
        let report = wgl::analyze(
            &h.history(),
            Bounds {
                steps: 5,
                carry: 16,
            },
        );
        assert!(report.verdict.valid);
        assert!(report.verdict.unchecked >= 9, "{:?}", report.verdict);
        assert!(
            matches!(&report.roots[0].outcome, Outcome::Unknown { reason, .. } if reason.contains("step bound")),
            "{:?}",
            report.roots[0].outcome
        );
        assert_eq!(report.notes().len(), 1);
        // Unbounded, it is decided.
        assert!(valid(&h));
    }

    #[test]
    fn a_command_the_model_does_not_know_makes_its_root_unknown() {
        let mut h = H::new();
        h.request(0, create("jf"), 12, End::Ok(13, done()));
        h.request(
            0,
            args(json!({"f": "add_grant", "node": "jf", "amount": 5})),
            14,
            End::Ok(15, answer(json!({"type": "grant_added", "grant_id": 1}))),
        );
        h.read(1, show("jt/a"), 20, End::Ok(30, account(10, 0, 50)));
        h.request(2, reserve("jt/a", 10, 10), 40, End::Ok(50, granted(1, 10)));
        let report = wgl::analyze(&h.history(), Bounds::default());
        let jf = report.roots.iter().find(|r| r.root == "jf").expect("jf");
        assert!(
            matches!(jf.outcome, Outcome::Unknown { .. }),
            "{:?}",
            jf.outcome
        );
        // The other root is still checked (and its node ids count jf's creation).
        let jt = report.roots.iter().find(|r| r.root == "jt").expect("jt");
        assert!(
            matches!(jt.outcome, Outcome::NotLinearizable { .. }),
            "{:?}",
            jt.outcome
        );
        assert!(!report.verdict.valid);
    }
}

// Runs of the model (linearizable by construction: each operation takes effect at a point
// inside its interval, or after its invocation when unanswered) and the same with one thing
// broken (often not linearizable): the search and the brute force must reach the same verdict.
mod properties {
    use super::common::*;

    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use purser_jepsen::history::{Args, Event, Kind};
    use purser_jepsen::wgl::{self, Bounds, Model, Outcome};
    use serde_json::{json, Value};

    /// One workload operation: what it does (`what`, `a`, `b` pick the command from the state at
    /// its point), when it runs, where inside its interval it takes effect, how it ends.
    #[derive(Clone, Debug)]
    struct Spec {
        what: u8,
        a: u64,
        b: u64,
        invoke: u64,
        len: u64,
        /// Percent of the way through the interval.
        point: u64,
        end: u8,
    }

    fn specs() -> impl Strategy<Value = Vec<Spec>> {
        prop::collection::vec(
            (
                0u8..13,
                0u64..1000,
                0u64..1000,
                0u64..120,
                1u64..80,
                0u64..=100,
                0u8..10,
            )
                .prop_map(|(what, a, b, invoke, len, point, end)| Spec {
                    what,
                    a,
                    b,
                    invoke,
                    len,
                    point,
                    end,
                }),
            2..=7,
        )
    }

    const LEAVES: [&str; 2] = ["jt/a", "jt/b"];
    const NODES: [&str; 3] = ["jt", "jt/a", "jt/b"];

    /// The command, chosen against the model's state (open holds) so that most of them make sense.
    fn command(s: &Spec, model: &Model) -> Args {
        let leaf = LEAVES[(s.b % 2) as usize];
        let open = model.open_holds();
        let pick_hold = |salt: u64| match open.len() {
            0 => (salt % 4 + 1, 10),
            n => open[(salt % n as u64) as usize],
        };
        match s.what {
            0..=2 => reserve(leaf, s.a % 30 + 1, s.a % 30 + 1),
            3 | 4 => {
                let min = s.a % 15 + 1;
                reserve(leaf, min, min + s.b % 30)
            }
            5 => charge(leaf, s.a % 10 + 1),
            6 | 7 => {
                let (id, amount) = pick_hold(s.a);
                commit(id, s.b % (amount + 5))
            }
            8 => release(pick_hold(s.a).0),
            9 => set_limit(["jt", "jt/a"][(s.b % 2) as usize], 40 + s.a % 40),
            10 | 11 => show(NODES[(s.b % 3) as usize]),
            _ => holds(NODES[(s.b % 3) as usize]),
        }
    }

    /// A run of the model: setup, then the operations at their points.
    fn run(specs: &[Spec]) -> H {
        let mut model = Model::new(&NODES);
        let mut h = H::empty();
        let setup = [
            create("jt"),
            set_limit("jt", 40),
            create("jt/a"),
            set_limit("jt/a", 25),
            create("jt/b"),
        ];
        for (t, args) in (1u64..).zip(setup) {
            let answer = model.apply(&args).expect("the setup applies");
            h.request(0, args, 2 * t, End::Ok(2 * t + 1, answer));
        }
        // end: 0..=5 answered, 6 unanswered and applied (possibly after its own info), 7
        // unanswered and never applied, 8 refused, 9 a timed-out attempt and an answered retry.
        let planned: Vec<(u64, u64, u64)> = specs
            .iter()
            .map(|s| {
                let invoke = 100 + s.invoke;
                let complete = invoke + s.len;
                let point = match s.end {
                    6 => invoke + s.point * 2,
                    7 | 8 => invoke,
                    _ => invoke + s.len * s.point / 100,
                };
                (invoke, complete, point)
            })
            .collect();
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by_key(|&i| (planned[i].2, i));
        let mut outcome = vec![None; specs.len()];
        for &i in &order {
            let args = command(&specs[i], &model);
            let answer = match specs[i].end {
                7 | 8 => None,
                _ => model.apply(&args),
            };
            outcome[i] = Some((args, answer));
        }
        for (i, s) in specs.iter().enumerate() {
            let (invoke, complete, _) = planned[i];
            let (args, answer) = outcome[i].clone().expect("every operation was run");
            let worker = i as u32 + 1;
            if args.is_read() {
                match answer {
                    Some(a) if s.end <= 5 => h.read(worker, args, invoke, End::Ok(complete, a)),
                    _ => h.read(worker, args, invoke, End::Info(complete)),
                }
                continue;
            }
            match (s.end, answer) {
                (6 | 7, _) => {
                    h.request(worker, args, invoke, End::Info(complete));
                }
                (9, Some(a)) => {
                    let first = invoke + s.len / 3;
                    let rid = h.request(worker, args.clone(), invoke, End::Info(first));
                    h.attempt(worker, Some(&rid), args, first + 1, End::Ok(complete, a));
                }
                (_, Some(a)) => {
                    h.request(worker, args, invoke, End::Ok(complete, a));
                }
                // Refused by the model, or meant to be: the cluster would have refused it.
                (_, None) => {
                    h.request(worker, args, invoke, End::Fail(complete));
                }
            }
        }
        h
    }

    /// Breaks one thing in the workload part of the history.
    fn mutate(events: &mut [Event], target: usize, how: u8, salt: u64) {
        let workload = |e: &Event| e.worker != 0;
        let answered: Vec<usize> = (0..events.len())
            .filter(|&k| events[k].kind == Kind::Ok && workload(&events[k]))
            .collect();
        if answered.is_empty() {
            return;
        }
        let k = answered[target % answered.len()];
        let op = events[k].op;
        let Some(answer) = events[k].answer.clone() else {
            return;
        };
        let mut v = serde_json::to_value(&answer).expect("an answer serializes");
        match how {
            // A number in the answer off by one (or a hold list one short or one long).
            0 => {
                if let Some(list) = v.get_mut("holds").and_then(Value::as_array_mut) {
                    if list.pop().is_none() {
                        list.push(json!([salt % 5 + 1, salt % 20 + 1]));
                    }
                } else if let Some(obj) = v.as_object_mut() {
                    let keys: Vec<String> = obj
                        .iter()
                        .filter(|(_, x)| x.is_u64())
                        .map(|(key, _)| key.clone())
                        .collect();
                    if !keys.is_empty() {
                        let key = &keys[(salt % keys.len() as u64) as usize];
                        let x = obj[key].as_u64().unwrap_or(0);
                        obj[key] = json!(if salt % 2 == 0 || x == 0 {
                            x + 1
                        } else {
                            x - 1
                        });
                    }
                }
            }
            // A grant answered as a denial, or the other way round.
            1 => {
                if v["type"] == "granted" {
                    v = json!({"type": "denied", "node_id": 2, "remaining": 0,
                           "requested": v["amount"].clone()});
                } else if v["type"] == "denied" {
                    v = json!({"type": "granted", "reservation_id": salt % 5 + 1,
                           "amount": v["requested"].clone()});
                }
            }
            // Moved after everything else.
            2 => {
                let end = events.iter().map(|e| e.t_ns).max().unwrap_or(0);
                for e in events.iter_mut().filter(|e| e.op == op) {
                    e.t_ns = if e.kind == Kind::Invoke {
                        end + 1 + salt % 3
                    } else {
                        end + 5
                    };
                }
                return;
            }
            // Refused instead (never applied).
            3 => {
                events[k].kind = Kind::Fail;
                events[k].answer = None;
                return;
            }
            // Unanswered instead.
            _ => {
                events[k].kind = Kind::Info;
                events[k].answer = None;
                return;
            }
        }
        events[k].answer = Some(answer_of(v));
    }

    fn answer_of(v: Value) -> purser_jepsen::history::Answer {
        serde_json::from_value(v).expect("a mutated answer still parses")
    }

    fn verdicts(events: &[Event]) -> (Option<bool>, bool, Vec<String>) {
        let brute = wgl::brute_force(events);
        let report = wgl::analyze(events, Bounds::default());
        for r in &report.roots {
            assert!(
                !matches!(r.outcome, Outcome::Unknown { .. }),
                "undecided on a small history: {:?}",
                r.outcome
            );
        }
        (brute, report.verdict.valid, report.verdict.violations)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        #[test]
        fn runs_of_the_model_are_linearizable(specs in specs()) {
            let events = run(&specs).history();
            let (brute, wgl, why) = verdicts(&events);
            prop_assert_eq!(brute, Some(true));
            prop_assert!(wgl, "{:?}", why);
        }

        #[test]
        fn wgl_and_brute_force_agree_on_broken_runs(
            specs in specs(),
            target in 0usize..16,
            how in 0u8..5,
            salt in 0u64..1000,
        ) {
            let mut events = run(&specs).events;
            mutate(&mut events, target, how, salt);
            events.sort_by_key(|e| (e.t_ns, e.op));
            let (brute, wgl, why) = verdicts(&events);
            prop_assert!(brute.is_some());
            prop_assert_eq!(brute, Some(wgl), "wgl says {:?}", why);
        }
    }

    /// The mutations do break things: over many runs, a good share of them are not linearizable.
    #[test]
    fn broken_runs_are_often_not_linearizable() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = (specs(), 0usize..16, 0u8..3, 0u64..1000);
        let (mut broken, mut total) = (0, 0);
        for _ in 0..300 {
            let (specs, target, how, salt) =
                strategy.new_tree(&mut runner).expect("a value").current();
            let mut events = run(&specs).events;
            mutate(&mut events, target, how, salt);
            events.sort_by_key(|e| (e.t_ns, e.op));
            total += 1;
            if !wgl::check(&events).valid {
                broken += 1;
            }
        }
        assert!(
            broken * 4 >= total,
            "only {broken} of {total} broken runs caught"
        );
    }
}
