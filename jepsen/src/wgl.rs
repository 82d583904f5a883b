//! An exact linearizability search (Wing & Gong, with Lowe's refinements) per root, from real
//! time and answers alone: unlike the log-order checker in `check.rs` it never reads
//! `log_index`, so a server that reports positions wrongly cannot talk its way through it.
//!
//! **Operations.** The unit is the client's request, not the attempt. The attempts of one
//! request id up to and including its first definite answer are one logical operation, invoked
//! when the first was sent and completed by that answer: the server promises one outcome per
//! request id, and an earlier attempt still in flight may be the one that applied. A request
//! whose first definite answer is `fail` never applied and is dropped. A request without a
//! definite answer (only `info` attempts) is *optional*: it may take effect at any point after
//! its first invocation, or never. After the definite answer a `duplicate` answer (the final
//! retries) changes nothing and is left to the idempotency checker; a fresh one (applied
//! twice) starts a new operation. A read is one operation; an unanswered read is dropped, and
//! so is a read of a kind the model does not know (dropping a read loses power, never
//! soundness).
//!
//! **Roots.** Each root is searched on its own: its commands, and every `CreateNode` (node ids
//! are one counter over all roots, so the creations of other roots are replayed for the id
//! alone). A commit or release belongs to the root its hold was granted in. Reservation ids are
//! one counter too: when reservations are made in one root only, a grant must take exactly the
//! next id; otherwise only an id above every earlier one (an optional grant, whose id nobody
//! knows, is then not modelled).
//!
//! **Model.** The budget as purser-core keeps it (`budget.rs`, `tree.rs`, `query.rs`), for
//! what the workload sends: node ids 1, 2, … in creation order (a node needs its parent); a
//! reservation or charge looks at its path leaf to root, first for a paused node (denied,
//! `remaining` 0), then at every hard cap: `room = amount - (counter + held)`, the first level
//! with `room < min` denies it (`remaining = room`, `requested = min`, nothing changes),
//! otherwise the grant is `min(max, every room)` and takes the next reservation id. A commit of
//! an open hold charges the actual in full — an overrun is never refused — and frees the hold
//! (`released = hold - actual`, `overrun = actual - hold`, saturating); a commit or release of a
//! hold that is not open is refused (`NotFound`: never an `ok`). A charge is a reserve of exactly
//! its amount, settled at once. `SetLimit` replaces the amount of the node's limit in that
//! window and keeps its counter (a new limit starts at 0). `Show` answers held, spent, and the
//! first limit's amount, window, counter and held; `Holds` the holds placed on the node.
//! Answers are compared in full, but for what a duplicate does not carry and the order of a
//! hold list. Every cap is taken as one that never rolls: lifetime and monthly (the harness
//! does not start a run across a month boundary), sliding and first-use only when longer than
//! the history plus [`EXPIRY_MARGIN_MS`]. Not modelled, so *unknown* from where they appear:
//! funded roots (grants), a granted hold whose TTL is not that long (an expiry nothing observes
//! can sit anywhere after its grant, and a few such holds at once multiply the states past any
//! bound), a shorter window, commands the model does not know.
//!
//! **Search.** A root's history is cut at quiescent points: instants where no definite
//! operation is pending (optional ones never complete, so they do not count). Each segment is
//! searched depth-first in Lowe's style — a linked list of call and return entries, an
//! operation lifted out when it is linearized, backtracking at the first return entry of an
//! operation not yet linearized — and every configuration visited (the set linearized, the
//! model state) is remembered, as a 128-bit fingerprint (a collision, some 2^-100 at the step
//! bound, could only hide a linearization), so that none is explored twice. The search does
//! not stop at the first linearization: it collects every distinct end configuration (the
//! state, and the optional operations not applied yet, which stay candidates in every later
//! segment), and the next segment starts from all of them. A segment that no order explains
//! from any start is a violation; the evidence is the operation at which the deepest order got
//! stuck. Past [`Bounds::steps`] configurations in one segment or [`Bounds::carry`] end
//! configurations, or at an operation the model does not cover, the segment is *unknown*, and
//! so is the rest of the root (its start is no longer known); the rest of a root after a
//! violation is not checked either. Unknown counts as `unchecked`, never as valid or invalid;
//! the reason is in [`RootReport::outcome`].
//!
//! [`brute_force`] answers the same question for small histories by enumerating every subset
//! of the optional operations and every order of it and the definite ones that real time
//! allows, replaying each from the start; the property tests hold the two to the same verdict.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::Range;

use crate::history::{Answer, Args, Event, Kind, Window};
use crate::verdict::Verdict;

/// Configurations explored in one segment before its verdict is unknown.
pub const STEPS_MAX: u64 = 1_000_000;
/// End configurations carried from one segment into the next before the next is unknown.
pub const CARRY_MAX: usize = 256;
/// Orders [`brute_force`] replays before it gives up.
pub const BRUTE_ORDERS_MAX: u64 = 5_000_000;
/// A TTL or window this much longer than the history cannot run out within it, even with the
/// replicated clock pushed ahead by the clock nemesis (it moves a wall clock by up to an hour).
pub const EXPIRY_MARGIN_MS: u64 = 2 * 60 * 60 * 1000;

/// The search's limits.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Configurations per segment.
    pub steps: u64,
    /// End configurations carried into a segment.
    pub carry: usize,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            steps: STEPS_MAX,
            carry: CARRY_MAX,
        }
    }
}

/// How the search of one root ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    /// No order of the segment that starts at `at_ns` explains the answers.
    NotLinearizable {
        at_ns: u64,
        evidence: String,
    },
    /// The segment that starts at `at_ns`, and the rest of the root, were not decided.
    Unknown {
        at_ns: u64,
        reason: String,
    },
}

/// One root: how its search ended and what it cost.
#[derive(Clone, Debug)]
pub struct RootReport {
    pub root: String,
    pub outcome: Outcome,
    /// Logical operations (requests and reads) searched.
    pub operations: usize,
    pub segments: usize,
    /// Logical operations in the largest segment.
    pub largest_segment: usize,
    /// Configurations explored, in all and in the costliest segment.
    pub configurations: u64,
    pub most_configurations: u64,
    /// End configurations carried into one segment, at most.
    pub most_carried: usize,
}

/// The verdict over every root, and each root's report.
#[derive(Clone, Debug)]
pub struct Report {
    pub verdict: Verdict,
    pub roots: Vec<RootReport>,
}

impl Report {
    /// One line per root that is not plainly linearizable (why it is not, or not known).
    pub fn notes(&self) -> Vec<String> {
        self.roots
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Linearizable => None,
                Outcome::NotLinearizable { at_ns, .. } => Some(format!(
                    "{}: not linearizable at {:.3}s",
                    r.root,
                    *at_ns as f64 / 1e9
                )),
                Outcome::Unknown { reason, .. } => Some(format!("{}: unknown: {reason}", r.root)),
            })
            .collect()
    }
}

/// The verdict of [`analyze`] with the default bounds.
pub fn check(events: &[Event]) -> Verdict {
    let report = analyze(events, Bounds::default());
    let mut verdict = report.verdict.clone();
    verdict.notes = report.notes();
    verdict
}

// ---- the model ---------------------------------------------------------------------------

/// Every path a root's history names, with its ancestors; each path's lineage, leaf first.
#[derive(Clone, Debug, Default)]
struct Tree {
    paths: Vec<String>,
    index: HashMap<String, usize>,
    parent: Vec<Option<usize>>,
    lineage: Vec<Vec<usize>>,
}

impl Tree {
    fn add(&mut self, path: &str) -> usize {
        if let Some(&i) = self.index.get(path) {
            return i;
        }
        let parent = path.rfind('/').map(|cut| self.add(&path[..cut]));
        let i = self.paths.len();
        let mut lineage = vec![i];
        if let Some(p) = parent {
            lineage.extend_from_slice(&self.lineage[p]);
        }
        self.paths.push(path.to_owned());
        self.index.insert(path.to_owned(), i);
        self.parent.push(parent);
        self.lineage.push(lineage);
        i
    }

    fn get(&self, path: &str) -> Option<usize> {
        self.index.get(path).copied()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct NodeState {
    /// 0 until created.
    id: u64,
    spent: u64,
    held: u64,
    paused: bool,
}

/// A hard cap: its node, window, amount and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Limit {
    node: usize,
    window: Window,
    amount: u64,
    counter: u64,
}

/// What the server keeps for the workload's commands.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    nodes: Vec<NodeState>,
    /// In the order they were set: a node's first is the one `Show` reports.
    limits: Vec<Limit>,
    /// Open holds (reservation id, node, amount), by id.
    holds: Vec<(u64, usize, u64)>,
    next_node_id: u64,
    /// The next reservation id; with ids shared with other roots, the least it can be.
    next_reservation_id: u64,
}

impl State {
    fn initial(tree: &Tree) -> State {
        State {
            nodes: vec![NodeState::default(); tree.paths.len()],
            limits: Vec::new(),
            holds: Vec::new(),
            next_node_id: 1,
            next_reservation_id: 1,
        }
    }

    fn existing(&self, tree: &Tree, path: &str) -> Option<usize> {
        tree.get(path).filter(|&n| self.nodes[n].id != 0)
    }

    fn hold(&self, reservation_id: u64) -> Option<(usize, usize, u64)> {
        let k = self
            .holds
            .binary_search_by_key(&reservation_id, |h| h.0)
            .ok()?;
        let (_, node, amount) = self.holds[k];
        Some((k, node, amount))
    }

    /// The most in `min..=max` that every level admits, or the denial of the first level (leaf
    /// first) that does not admit `min`: a paused node first, then caps.
    fn evaluate(&self, tree: &Tree, leaf: usize, min: u64, max: u64) -> Result<u64, Reply> {
        let lineage = &tree.lineage[leaf];
        if let Some(&n) = lineage.iter().find(|&&n| self.nodes[n].paused) {
            return Err(Reply::Denied {
                node_id: self.nodes[n].id,
                remaining: 0,
                requested: min,
                rule: "paused",
            });
        }
        let mut allow = max;
        for &n in lineage {
            let held = self.nodes[n].held;
            for l in self.limits.iter().filter(|l| l.node == n) {
                let room = l.amount.saturating_sub(l.counter.saturating_add(held));
                if room < min {
                    return Err(Reply::Denied {
                        node_id: self.nodes[n].id,
                        remaining: room,
                        requested: min,
                        rule: "cap",
                    });
                }
                allow = allow.min(room);
            }
        }
        Ok(allow)
    }

    fn spend(&mut self, tree: &Tree, leaf: usize, amount: u64) {
        for &n in &tree.lineage[leaf] {
            self.nodes[n].spent += amount;
            for l in self.limits.iter_mut().filter(|l| l.node == n) {
                l.counter += amount;
            }
        }
    }

    fn unhold(&mut self, tree: &Tree, k: usize) {
        let (_, leaf, amount) = self.holds.remove(k);
        for &n in &tree.lineage[leaf] {
            self.nodes[n].held -= amount;
        }
    }

    fn describe(&self, tree: &Tree) -> String {
        let nodes: Vec<String> = (0..tree.paths.len())
            .filter(|&n| self.nodes[n].id != 0)
            .map(|n| {
                let v = &self.nodes[n];
                let caps: Vec<String> = self
                    .limits
                    .iter()
                    .filter(|l| l.node == n)
                    .map(|l| format!(" cap {} (counter {})", l.amount, l.counter))
                    .collect();
                format!(
                    "{}: spent {} held {}{}{}",
                    tree.paths[n],
                    v.spent,
                    v.held,
                    caps.join(""),
                    if v.paused { " paused" } else { "" }
                )
            })
            .collect();
        format!(
            "{}; open holds {:?}; next reservation id {}",
            nodes.join(", "),
            self.holds
                .iter()
                .map(|&(id, n, a)| (id, tree.paths[n].as_str(), a))
                .collect::<Vec<_>>(),
            self.next_reservation_id
        )
    }
}

/// The model's answer (its own type, so that fields the history gains do not touch it).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Granted {
        reservation_id: u64,
        amount: u64,
    },
    Denied {
        node_id: u64,
        remaining: u64,
        requested: u64,
        rule: &'static str,
    },
    Settled {
        reservation_id: u64,
        charged: u64,
        released: u64,
        overrun: u64,
    },
    Released {
        reservation_id: u64,
        amount: u64,
    },
    Charged {
        charged: u64,
    },
    Done,
    Account {
        held: u64,
        spent: u64,
        /// The first limit: amount, window, counter.
        limit: Option<(u64, Window, u64)>,
    },
    Holds(Vec<(u64, u64)>),
}

/// True for a funding plan a capped currency can have (none, or not reported).
fn no_plan(plan: &Option<Vec<(u64, u64)>>) -> bool {
    plan.as_ref().is_none_or(|p| p.is_empty())
}

/// The recorded answer is the model's, but for what a duplicate leaves out (None) and the order
/// of a hold list; funding fields must say "nothing" (capped currencies only).
fn reply_matches(model: &Reply, recorded: &Answer) -> bool {
    match (model, recorded) {
        (
            Reply::Granted {
                reservation_id,
                amount,
            },
            Answer::Granted {
                reservation_id: r,
                amount: a,
                plan,
                ..
            },
        ) => reservation_id == r && amount == a && no_plan(plan),
        (
            Reply::Denied {
                node_id,
                remaining,
                requested,
                rule,
            },
            Answer::Denied {
                node_id: n,
                remaining: m,
                requested: q,
                rule: r,
            },
        ) => {
            node_id == n
                && remaining == m
                && requested == q
                && r.as_deref().is_none_or(|r| r == *rule)
        }
        (
            Reply::Settled {
                reservation_id,
                charged,
                released,
                overrun,
            },
            Answer::Settled {
                reservation_id: r,
                charged: c,
                released: rel,
                overrun: o,
                late,
                debt,
                plan,
            },
        ) => {
            reservation_id == r
                && charged == c
                && rel.is_none_or(|x| x == *released)
                && o.is_none_or(|x| x == *overrun)
                && late.is_none_or(|l| !l)
                && debt.is_none_or(|d| d == 0)
                && no_plan(plan)
        }
        (
            Reply::Released {
                reservation_id,
                amount,
            },
            Answer::Released {
                reservation_id: r,
                amount: a,
            },
        ) => reservation_id == r && amount == a,
        (
            Reply::Charged { charged },
            Answer::Charged {
                charged: c,
                debt,
                plan,
            },
        ) => charged == c && debt.is_none_or(|d| d == 0) && no_plan(plan),
        (Reply::Done, Answer::Done) => true,
        (
            Reply::Account { held, spent, limit },
            Answer::Account {
                held: h,
                spent: s,
                cap,
                limit_spent,
                limit_held,
                window,
                debt,
                pool,
            },
        ) => {
            let limit_ok = match limit {
                Some((amount, w, counter)) => {
                    *cap == Some(*amount)
                        && *limit_spent == Some(*counter)
                        && *limit_held == Some(*held)
                        && window.is_none_or(|x| x == *w)
                }
                None => cap.is_none() && limit_spent.is_none() && limit_held.is_none(),
            };
            held == h && spent == s && limit_ok && debt.is_none_or(|d| d == 0) && pool.is_none()
        }
        (Reply::Holds(holds), Answer::Holds { holds: h }) => {
            let mut h = h.clone();
            h.sort_unstable();
            *holds == h
        }
        _ => false,
    }
}

/// What a command does to a state.
enum Effect {
    /// An error: refused, nothing changes (never an `ok`).
    Refused,
    /// Answered; nothing changed (a read, a denial).
    Same(Reply),
    Changed(Reply, State),
}

/// How reservation ids are checked in a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ids {
    /// Reservations are made in this root only: a grant takes exactly the next id.
    Exact,
    /// Ids are shared with other roots: a grant takes an id above every earlier one.
    Increasing,
}

/// `recorded` supplies the reservation id of a grant when ids are [`Ids::Increasing`].
fn apply(tree: &Tree, ids: Ids, s: &State, args: &Args, recorded: Option<&Answer>) -> Effect {
    match args {
        Args::Reserve {
            node,
            min,
            max,
            exact,
            ..
        } => {
            let Some(leaf) = s.existing(tree, node) else {
                return Effect::Refused;
            };
            let (min, max) = if *exact { (*min, *min) } else { (*min, *max) };
            if min == 0 || min > max {
                return Effect::Refused;
            }
            match s.evaluate(tree, leaf, min, max) {
                Err(denial) => Effect::Same(denial),
                Ok(amount) => {
                    let reservation_id = match (ids, recorded) {
                        (Ids::Exact, _) => s.next_reservation_id,
                        (
                            Ids::Increasing,
                            Some(Answer::Granted {
                                reservation_id: r, ..
                            }),
                        ) if *r >= s.next_reservation_id => *r,
                        // Not a grant with a possible id: the answer will not match.
                        (Ids::Increasing, _) => s.next_reservation_id,
                    };
                    let mut next = s.clone();
                    for &n in &tree.lineage[leaf] {
                        next.nodes[n].held += amount;
                    }
                    next.next_reservation_id = reservation_id + 1;
                    // Ids only grow, so the list stays sorted.
                    next.holds.push((reservation_id, leaf, amount));
                    Effect::Changed(
                        Reply::Granted {
                            reservation_id,
                            amount,
                        },
                        next,
                    )
                }
            }
        }
        Args::Charge { node, amount } => {
            let Some(leaf) = s.existing(tree, node) else {
                return Effect::Refused;
            };
            if *amount == 0 {
                return Effect::Refused;
            }
            match s.evaluate(tree, leaf, *amount, *amount) {
                Err(denial) => Effect::Same(denial),
                Ok(_) => {
                    let mut next = s.clone();
                    next.spend(tree, leaf, *amount);
                    Effect::Changed(Reply::Charged { charged: *amount }, next)
                }
            }
        }
        Args::Commit {
            reservation_id,
            actual,
        } => {
            let Some((k, leaf, held)) = s.hold(*reservation_id) else {
                return Effect::Refused;
            };
            let mut next = s.clone();
            next.unhold(tree, k);
            next.spend(tree, leaf, *actual);
            Effect::Changed(
                Reply::Settled {
                    reservation_id: *reservation_id,
                    charged: *actual,
                    released: held.saturating_sub(*actual),
                    overrun: actual.saturating_sub(held),
                },
                next,
            )
        }
        Args::Release { reservation_id } => {
            let Some((k, _, amount)) = s.hold(*reservation_id) else {
                return Effect::Refused;
            };
            let mut next = s.clone();
            next.unhold(tree, k);
            Effect::Changed(
                Reply::Released {
                    reservation_id: *reservation_id,
                    amount,
                },
                next,
            )
        }
        Args::SetLimit {
            node,
            amount,
            window,
        } => {
            let Some(n) = s.existing(tree, node) else {
                return Effect::Refused;
            };
            let mut next = s.clone();
            match next
                .limits
                .iter_mut()
                .find(|l| l.node == n && l.window == *window)
            {
                Some(l) => l.amount = *amount,
                None => next.limits.push(Limit {
                    node: n,
                    window: *window,
                    amount: *amount,
                    counter: 0,
                }),
            }
            Effect::Changed(Reply::Done, next)
        }
        Args::CreateNode { path, .. } => {
            let Some(n) = tree.get(path) else {
                return Effect::Refused;
            };
            let parent_exists = tree.parent[n].is_none_or(|p| s.nodes[p].id != 0);
            if s.nodes[n].id != 0 || !parent_exists {
                return Effect::Refused;
            }
            let mut next = s.clone();
            next.nodes[n].id = next.next_node_id;
            next.next_node_id += 1;
            Effect::Changed(Reply::Done, next)
        }
        Args::Pause { node } => {
            let Some(n) = s.existing(tree, node) else {
                return Effect::Refused;
            };
            if s.nodes[n].paused {
                return Effect::Same(Reply::Done);
            }
            let mut next = s.clone();
            next.nodes[n].paused = true;
            Effect::Changed(Reply::Done, next)
        }
        Args::Show { node } => {
            let Some(n) = s.existing(tree, node) else {
                return Effect::Refused;
            };
            let v = &s.nodes[n];
            Effect::Same(Reply::Account {
                held: v.held,
                spent: v.spent,
                limit: s
                    .limits
                    .iter()
                    .find(|l| l.node == n)
                    .map(|l| (l.amount, l.window, l.counter)),
            })
        }
        Args::Holds { node } => {
            let Some(n) = s.existing(tree, node) else {
                return Effect::Refused;
            };
            let holds = s
                .holds
                .iter()
                .filter(|h| h.1 == n)
                .map(|&(id, _, amount)| (id, amount))
                .collect();
            Effect::Same(Reply::Holds(holds))
        }
        // Operations the model does not cover are kept out of the search (`coverage`).
        _ => Effect::Refused,
    }
}

enum Step {
    /// Cannot be linearized here (or, optional, changes nothing: no different from never).
    No,
    Same,
    Changed(State),
}

fn step(tree: &Tree, ids: Ids, s: &State, op: &LogicalOp) -> Step {
    match (
        &op.answer,
        apply(tree, ids, s, &op.args, op.answer.as_ref()),
    ) {
        (_, Effect::Refused) | (None, Effect::Same(_)) => Step::No,
        (None, Effect::Changed(_, next)) => Step::Changed(next),
        (Some(recorded), Effect::Same(reply)) if reply_matches(&reply, recorded) => Step::Same,
        (Some(recorded), Effect::Changed(reply, next)) if reply_matches(&reply, recorded) => {
            Step::Changed(next)
        }
        _ => Step::No,
    }
}

/// The model alone, applied in sequence to one root (reservation ids exact): what the server
/// answers to each command, None when it refuses it (a `fail`). For building histories in
/// tests.
#[derive(Clone, Debug)]
pub struct Model {
    tree: Tree,
    state: State,
}

impl Model {
    /// An empty server; `paths` are the nodes that may be created.
    pub fn new(paths: &[&str]) -> Model {
        let mut tree = Tree::default();
        for p in paths {
            tree.add(p);
        }
        let state = State::initial(&tree);
        Model { tree, state }
    }

    pub fn apply(&mut self, args: &Args) -> Option<Answer> {
        let reply = match apply(&self.tree, Ids::Exact, &self.state, args, None) {
            Effect::Refused => return None,
            Effect::Same(reply) => reply,
            Effect::Changed(reply, next) => {
                self.state = next;
                reply
            }
        };
        Some(to_answer(&reply))
    }

    /// Open holds (reservation id, amount), by id.
    pub fn open_holds(&self) -> Vec<(u64, u64)> {
        self.state.holds.iter().map(|&(id, _, a)| (id, a)).collect()
    }
}

/// The history's form of a reply, through serde so that fields the history gains take their
/// defaults.
fn to_answer(reply: &Reply) -> Answer {
    use serde_json::json;
    let value = match reply {
        Reply::Granted {
            reservation_id,
            amount,
        } => json!({"type": "granted", "reservation_id": reservation_id, "amount": amount}),
        Reply::Denied {
            node_id,
            remaining,
            requested,
            rule,
        } => json!({"type": "denied", "node_id": node_id, "remaining": remaining,
                    "requested": requested, "rule": rule}),
        Reply::Settled {
            reservation_id,
            charged,
            released,
            overrun,
        } => json!({"type": "settled", "reservation_id": reservation_id, "charged": charged,
                    "released": released, "overrun": overrun}),
        Reply::Released {
            reservation_id,
            amount,
        } => json!({"type": "released", "reservation_id": reservation_id, "amount": amount}),
        Reply::Charged { charged } => json!({"type": "charged", "charged": charged}),
        Reply::Done => json!({"type": "done"}),
        Reply::Account { held, spent, limit } => json!({"type": "account", "held": held,
            "spent": spent, "cap": limit.map(|l| l.0), "limit_spent": limit.map(|l| l.2),
            "limit_held": limit.map(|_| held), "window": limit.map(|l| l.1)}),
        Reply::Holds(holds) => json!({"type": "holds", "holds": holds}),
    };
    serde_json::from_value(value).expect("every reply has a form in the history")
}

// ---- logical operations and roots --------------------------------------------------------

/// One request (its attempts up to its first definite answer) or one read.
#[derive(Clone, Debug)]
struct LogicalOp {
    /// The history's op numbers of the attempts.
    attempts: Vec<u64>,
    request_id: Option<String>,
    args: Args,
    invoke_ns: u64,
    /// `u64::MAX` for an optional operation.
    complete_ns: u64,
    /// None: optional (no definite answer).
    answer: Option<Answer>,
}

impl LogicalOp {
    fn definite(&self) -> bool {
        self.answer.is_some()
    }

    fn describe(&self) -> String {
        let answer = match &self.answer {
            Some(a) => format!("{a:?}"),
            None => "no answer (may take effect at any later point, or never)".into(),
        };
        let done = if self.complete_ns == u64::MAX {
            "-".to_string()
        } else {
            format!("{:.3}s", self.complete_ns as f64 / 1e9)
        };
        format!(
            "{} {:?} -> {answer} [{:.3}s, {done}] (ops {:?})",
            self.request_id.as_deref().unwrap_or("read"),
            self.args,
            self.invoke_ns as f64 / 1e9,
            self.attempts
        )
    }
}

struct Attempt<'a> {
    invoke: &'a Event,
    args: &'a Args,
    done: Option<&'a Event>,
}

/// The logical operations, by invocation.
fn logical_ops(events: &[Event]) -> Vec<LogicalOp> {
    let mut attempts: BTreeMap<u64, Attempt> = BTreeMap::new();
    for e in events {
        match (e.kind, &e.args) {
            (Kind::Invoke, Some(args)) => {
                attempts.insert(
                    e.op,
                    Attempt {
                        invoke: e,
                        args,
                        done: None,
                    },
                );
            }
            (Kind::Invoke, None) => {}
            _ => {
                if let Some(a) = attempts.get_mut(&e.op) {
                    a.done = Some(e);
                }
            }
        }
    }
    let mut requests: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    let mut out = Vec::new();
    for a in attempts.values() {
        match &a.invoke.request_id {
            Some(r) => requests.entry(r).or_default().push(a),
            None => {
                let Some(done) = a.done.filter(|d| d.kind == Kind::Ok) else {
                    continue;
                };
                out.push(LogicalOp {
                    attempts: vec![a.invoke.op],
                    request_id: None,
                    args: a.args.clone(),
                    invoke_ns: a.invoke.t_ns,
                    complete_ns: done.t_ns,
                    answer: done.answer.clone(),
                });
            }
        }
    }
    for (request_id, mut group) in requests {
        group.sort_by_key(|a| (a.invoke.t_ns, a.invoke.op));
        let mut current: Option<LogicalOp> = None;
        let mut answered = false;
        for a in group {
            let kind = a.done.map_or(Kind::Info, |d| d.kind);
            let fresh_ok = kind == Kind::Ok && a.done.is_some_and(|d| !d.duplicate);
            // After the definite answer only a fresh application is news.
            if answered && !fresh_ok {
                continue;
            }
            answered = false;
            let op = current.get_or_insert_with(|| LogicalOp {
                attempts: Vec::new(),
                request_id: Some(request_id.to_owned()),
                args: a.args.clone(),
                invoke_ns: a.invoke.t_ns,
                complete_ns: u64::MAX,
                answer: None,
            });
            op.attempts.push(a.invoke.op);
            match (kind, a.done) {
                (Kind::Ok, Some(done)) => {
                    let mut op = current.take().expect("just inserted");
                    op.complete_ns = done.t_ns;
                    op.answer = done.answer.clone();
                    // An `ok` without an answer says nothing.
                    if op.answer.is_some() {
                        out.push(op);
                    }
                    answered = true;
                }
                (Kind::Fail, _) => {
                    current = None;
                    answered = true;
                }
                _ => {}
            }
        }
        out.extend(current);
    }
    out.sort_by_key(|o| (o.invoke_ns, o.attempts[0]));
    out
}

fn root_of(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// The path a command names, when it names one (a command of a kind the model does not know
/// is looked at through its serialized form).
fn path_of(args: &Args) -> Option<String> {
    match args {
        Args::Reserve { node, .. }
        | Args::Charge { node, .. }
        | Args::SetLimit { node, .. }
        | Args::Pause { node }
        | Args::Show { node }
        | Args::Holds { node } => Some(node.clone()),
        Args::CreateNode { path, .. } => Some(path.clone()),
        Args::Commit { .. } | Args::Release { .. } => None,
        other => {
            let value = serde_json::to_value(other).ok()?;
            ["node", "path"]
                .iter()
                .find_map(|k| value.get(k)?.as_str().map(str::to_owned))
        }
    }
}

/// Is `args` a command the model covers, within a history `span_ms` long? Err: why not.
fn coverage(args: &Args, answer: Option<&Answer>, span_ms: u64) -> Result<(), String> {
    let lasts = |ms: u64| ms >= span_ms.saturating_add(EXPIRY_MARGIN_MS);
    match args {
        Args::Reserve { ttl_ms, .. } => {
            let holds = !matches!(answer, Some(Answer::Denied { .. }));
            if holds && !lasts(*ttl_ms) {
                return Err(format!("a hold that may expire (TTL {ttl_ms} ms)"));
            }
            Ok(())
        }
        Args::SetLimit { window, .. } => match window {
            Window::Lifetime | Window::Month => Ok(()),
            Window::Sliding { ms } | Window::FirstUse { ms } if lasts(*ms) => Ok(()),
            w => Err(format!("a cap whose window may roll ({w:?})")),
        },
        Args::CreateNode { funded: true, .. } => Err("a funded currency (grants)".into()),
        Args::Commit { .. }
        | Args::Release { .. }
        | Args::Charge { .. }
        | Args::CreateNode { .. }
        | Args::Pause { .. }
        | Args::Show { .. }
        | Args::Holds { .. } => Ok(()),
        other => Err(format!("a command the model does not know ({other:?})")),
    }
}

/// One root's operations, and whether its reservation ids are its own.
struct Partition {
    root: String,
    ops: Vec<LogicalOp>,
    ids: Ids,
}

fn partitions(events: &[Event]) -> Vec<Partition> {
    let ops = logical_ops(events);
    let reads_known = |args: &Args| matches!(args, Args::Show { .. } | Args::Holds { .. });
    // Roots by first appearance; the root of every op that names a path, and of every hold.
    let mut roots: Vec<String> = Vec::new();
    let mut op_root: Vec<Option<usize>> = Vec::with_capacity(ops.len());
    let mut hold_root: HashMap<u64, usize> = HashMap::new();
    for op in &ops {
        let r = path_of(&op.args).map(|p| {
            let root = root_of(&p);
            roots.iter().position(|r| r == root).unwrap_or_else(|| {
                roots.push(root.to_owned());
                roots.len() - 1
            })
        });
        if let (Some(r), Some(Answer::Granted { reservation_id, .. })) = (r, &op.answer) {
            hold_root.entry(*reservation_id).or_insert(r);
        }
        op_root.push(r);
    }
    let reserving: BTreeSet<usize> = ops
        .iter()
        .zip(&op_root)
        .filter(|(o, _)| matches!(o.args, Args::Reserve { .. }))
        .filter_map(|(_, r)| *r)
        .collect();
    let mut parts: Vec<Partition> = roots
        .iter()
        .enumerate()
        .map(|(i, root)| Partition {
            root: root.clone(),
            ops: Vec::new(),
            ids: if reserving.len() <= 1 || !reserving.contains(&i) {
                Ids::Exact
            } else {
                Ids::Increasing
            },
        })
        .collect();
    // A commit or release of an id no grant answered can only be refused; should the cluster
    // have accepted one, a root that reserves is where it is a violation.
    let fallback = reserving.first().copied().unwrap_or(0);
    for (op, r) in ops.into_iter().zip(op_root) {
        if op.args.is_read() && !reads_known(&op.args) {
            continue;
        }
        match (&op.args, r) {
            // Node ids are one counter: every root replays every creation.
            (Args::CreateNode { .. }, _) => {
                for (i, p) in parts.iter_mut().enumerate() {
                    let mut op = op.clone();
                    if Some(i) != r {
                        // Another root's creation, for the id only: funding is not ours.
                        if let Args::CreateNode { funded, .. } = &mut op.args {
                            *funded = false;
                        }
                    }
                    p.ops.push(op);
                }
            }
            (Args::Commit { reservation_id, .. } | Args::Release { reservation_id }, _) => {
                let r = hold_root.get(reservation_id).copied().unwrap_or(fallback);
                if let Some(p) = parts.get_mut(r) {
                    p.ops.push(op);
                }
            }
            (_, Some(r)) => parts[r].ops.push(op),
            // A command that names no root: it may touch any of them.
            (_, None) => {
                for p in &mut parts {
                    p.ops.push(op.clone());
                }
            }
        }
    }
    parts
}

/// Index ranges of `ops` between quiescent points.
fn segments(ops: &[LogicalOp]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut horizon: Option<u64> = None;
    for (i, op) in ops.iter().enumerate() {
        if i > start && horizon.is_none_or(|h| h < op.invoke_ns) {
            out.push(start..i);
            start = i;
            horizon = None;
        }
        if op.definite() {
            horizon = Some(horizon.map_or(op.complete_ns, |h| h.max(op.complete_ns)));
        }
    }
    if start < ops.len() {
        out.push(start..ops.len());
    }
    out
}

// ---- the search ----------------------------------------------------------------------------

/// A state the root may be in at a quiescent point, with the optional operations (indices into
/// the root's operations) that have not taken effect yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config {
    state: State,
    pending: Vec<usize>,
}

enum SegmentEnd {
    Ends(Vec<Config>),
    Violation(String),
    Unknown(String),
}

const NIL: usize = usize::MAX;

/// Lowe's entry list: call and return entries in time order, doubly linked so that a
/// linearized operation can be lifted out and put back; the head sentinel is entry `len`.
struct Entries {
    /// Per entry: its operation (local index), and whether it is a return.
    op: Vec<usize>,
    is_return: Vec<bool>,
    /// Per call entry: its return entry (NIL for an optional operation).
    matching: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per local operation: its call entry.
    call: Vec<usize>,
}

impl Entries {
    /// `order`: (time, is return, local op), sorted.
    fn new(order: &[(u64, bool, usize)], ops: usize) -> Entries {
        let n = order.len();
        let mut entries = Entries {
            op: order.iter().map(|e| e.2).collect(),
            is_return: order.iter().map(|e| e.1).collect(),
            matching: vec![NIL; n],
            next: vec![NIL; n + 1],
            prev: vec![NIL; n + 1],
            call: vec![NIL; ops],
        };
        let mut ret = vec![NIL; ops];
        for (e, &(_, is_return, l)) in order.iter().enumerate() {
            if is_return {
                ret[l] = e;
            } else {
                entries.call[l] = e;
            }
        }
        for (l, &r) in ret.iter().enumerate() {
            entries.matching[entries.call[l]] = r;
        }
        let mut last = n;
        for e in 0..n {
            entries.next[last] = e;
            entries.prev[e] = last;
            last = e;
        }
        entries
    }

    fn head(&self) -> usize {
        self.op.len()
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if self.matching[call] != NIL {
            self.unlink(self.matching[call]);
        }
    }

    fn unlift(&mut self, call: usize) {
        if self.matching[call] != NIL {
            self.relink(self.matching[call]);
        }
        self.relink(call);
    }
}

fn fingerprint(bits: &[u64], state: &State) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        bits.hash(&mut h);
        state.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

fn bit(bits: &[u64], l: usize) -> bool {
    bits[l / 64] & (1 << (l % 64)) != 0
}

fn set_bit(bits: &mut [u64], l: usize, on: bool) {
    if on {
        bits[l / 64] |= 1 << (l % 64);
    } else {
        bits[l / 64] &= !(1 << (l % 64));
    }
}

/// A root's operations and the model they are replayed on.
struct Root<'a> {
    tree: &'a Tree,
    ids: Ids,
    ops: &'a [LogicalOp],
}

/// Every end configuration of the segment `seg`, from every configuration in `starts`.
fn search_segment(
    root: &Root,
    seg: Range<usize>,
    starts: &[Config],
    bounds: Bounds,
    configurations: &mut u64,
) -> SegmentEnd {
    let ops = root.ops;
    // Local operations: the segment's, then those carried in (pending in some start).
    let mut local: Vec<usize> = seg.clone().collect();
    let mut carried: Vec<usize> = starts.iter().flat_map(|c| c.pending.clone()).collect();
    carried.sort_unstable();
    carried.dedup();
    let first_carried = local.len();
    local.extend(&carried);

    // A call before a return at the same instant: they are concurrent, not ordered. Carried
    // operations were invoked before the segment began.
    let mut order: Vec<(u64, bool, usize)> = Vec::new();
    for (l, &g) in local.iter().enumerate() {
        let op = &ops[g];
        order.push((if l >= first_carried { 0 } else { op.invoke_ns }, false, l));
        if op.definite() {
            order.push((op.complete_ns, true, l));
        }
    }
    order.sort_unstable();
    let mut entries = Entries::new(&order, local.len());
    let head = entries.head();

    let definite_total = local.iter().filter(|&&g| ops[g].definite()).count();
    let words = local.len().div_ceil(64);
    let mut cache: HashSet<u128> = HashSet::new();
    let mut ends: HashSet<Config> = HashSet::new();
    // The deepest any order got: definite operations linearized, the return entry that
    // stopped it, and the state there.
    let mut deepest: Option<(usize, usize, State)> = None;

    for start in starts {
        let mut bits = vec![0u64; words];
        let mut lifted = Vec::new();
        for (k, g) in carried.iter().enumerate() {
            if start.pending.binary_search(g).is_err() {
                let l = first_carried + k;
                set_bit(&mut bits, l, true);
                entries.lift(entries.call[l]);
                lifted.push(entries.call[l]);
            }
        }
        let mut state = start.state.clone();
        if cache.insert(fingerprint(&bits, &state)) {
            let mut remaining = definite_total;
            // (call entry, the state before it, if it changed the state)
            let mut stack: Vec<(usize, Option<State>)> = Vec::new();
            let mut entry = entries.next[head];
            loop {
                if remaining == 0 || entry == NIL || entries.is_return[entry] {
                    if remaining == 0 {
                        let mut pending: Vec<usize> = (0..local.len())
                            .filter(|&l| !ops[local[l]].definite() && !bit(&bits, l))
                            .map(|l| local[l])
                            .collect();
                        pending.sort_unstable();
                        ends.insert(Config {
                            state: state.clone(),
                            pending,
                        });
                        if ends.len() > bounds.carry {
                            return SegmentEnd::Unknown(format!(
                                "more than {} possible end states",
                                bounds.carry
                            ));
                        }
                    } else {
                        let depth = definite_total - remaining;
                        if deepest.as_ref().is_none_or(|d| depth > d.0) {
                            let at = if entry == NIL { NIL } else { entries.op[entry] };
                            deepest = Some((depth, at, state.clone()));
                        }
                    }
                    // Backtrack: undo the last linearization, try what follows its call.
                    let Some((call, before)) = stack.pop() else {
                        break;
                    };
                    let l = entries.op[call];
                    if let Some(before) = before {
                        state = before;
                    }
                    set_bit(&mut bits, l, false);
                    entries.unlift(call);
                    if ops[local[l]].definite() {
                        remaining += 1;
                    }
                    entry = entries.next[call];
                    continue;
                }
                let l = entries.op[entry];
                let changed = match step(root.tree, root.ids, &state, &ops[local[l]]) {
                    Step::No => {
                        entry = entries.next[entry];
                        continue;
                    }
                    Step::Same => None,
                    Step::Changed(next) => Some(next),
                };
                set_bit(&mut bits, l, true);
                if !cache.insert(fingerprint(&bits, changed.as_ref().unwrap_or(&state))) {
                    set_bit(&mut bits, l, false);
                    entry = entries.next[entry];
                    continue;
                }
                *configurations += 1;
                if *configurations > bounds.steps {
                    return SegmentEnd::Unknown(format!(
                        "step bound hit: more than {} configurations",
                        bounds.steps
                    ));
                }
                let before = changed.map(|next| std::mem::replace(&mut state, next));
                stack.push((entry, before));
                entries.lift(entry);
                if ops[local[l]].definite() {
                    remaining -= 1;
                }
                entry = entries.next[head];
            }
        }
        for &call in lifted.iter().rev() {
            entries.unlift(call);
        }
    }
    if !ends.is_empty() {
        return SegmentEnd::Ends(ends.into_iter().collect());
    }
    let (depth, at, state) = deepest.expect("a segment without an end got stuck somewhere");
    let stuck = if at == NIL {
        "the end of the segment".to_string()
    } else {
        ops[local[at]].describe()
    };
    let end = seg
        .clone()
        .filter(|&i| ops[i].definite())
        .map(|i| ops[i].complete_ns)
        .max()
        .unwrap_or(ops[seg.start].invoke_ns);
    SegmentEnd::Violation(format!(
        "no order of the {} operations in [{:.3}s, {:.3}s] explains the answers: the deepest \
         order linearizes {depth} of the {definite_total} answered ones, then cannot place \
         {stuck}; the model there: {}",
        seg.len(),
        ops[seg.start].invoke_ns as f64 / 1e9,
        end as f64 / 1e9,
        state.describe(root.tree)
    ))
}

/// Why an operation is outside what the model covers, if it is.
fn uncovered(op: &LogicalOp, ids: Ids, span_ms: u64) -> Option<String> {
    // With ids shared between roots, the id an unanswered grant took is anyone's guess.
    let guessed_id =
        ids == Ids::Increasing && op.answer.is_none() && matches!(op.args, Args::Reserve { .. });
    let why = if guessed_id {
        "an unanswered reservation while reservation ids are shared".to_string()
    } else {
        coverage(&op.args, op.answer.as_ref(), span_ms).err()?
    };
    Some(format!("{why}: {}", op.describe()))
}

fn span_ms(events: &[Event]) -> u64 {
    let first = events.iter().map(|e| e.t_ns).min().unwrap_or(0);
    let last = events.iter().map(|e| e.t_ns).max().unwrap_or(0);
    (last - first) / 1_000_000
}

fn tree_of(ops: &[LogicalOp]) -> Tree {
    let mut tree = Tree::default();
    for op in ops {
        if let Some(p) = path_of(&op.args) {
            tree.add(&p);
        }
    }
    tree
}

/// The search over a history, per root, with what it cost and how each root ended.
pub fn analyze(events: &[Event], bounds: Bounds) -> Report {
    let span_ms = span_ms(events);
    let mut verdict = Verdict::new("linearizability-wgl");
    let mut roots = Vec::new();
    for part in partitions(events) {
        let tree = tree_of(&part.ops);
        let root = Root {
            tree: &tree,
            ids: part.ids,
            ops: &part.ops,
        };
        let segs = segments(&part.ops);
        let mut report = RootReport {
            root: part.root.clone(),
            outcome: Outcome::Linearizable,
            operations: part.ops.len(),
            segments: segs.len(),
            largest_segment: segs.iter().map(|s| s.len()).max().unwrap_or(0),
            configurations: 0,
            most_configurations: 0,
            most_carried: 1,
        };
        let mut configs = vec![Config {
            state: State::initial(&tree),
            pending: Vec::new(),
        }];
        let mut decided = true;
        for seg in segs {
            if !decided {
                verdict.unchecked += seg.len() as u64;
                continue;
            }
            let at_ns = part.ops[seg.start].invoke_ns;
            let uncovered = part.ops[seg.clone()]
                .iter()
                .find_map(|o| uncovered(o, part.ids, span_ms));
            if let Some(reason) = uncovered {
                report.outcome = Outcome::Unknown { at_ns, reason };
                verdict.unchecked += seg.len() as u64;
                decided = false;
                continue;
            }
            report.most_carried = report.most_carried.max(configs.len());
            let mut configurations = 0;
            let end = search_segment(&root, seg.clone(), &configs, bounds, &mut configurations);
            report.configurations += configurations;
            report.most_configurations = report.most_configurations.max(configurations);
            match end {
                SegmentEnd::Ends(ends) => {
                    verdict.checked += seg.len() as u64;
                    configs = ends;
                }
                SegmentEnd::Violation(evidence) => {
                    verdict.checked += seg.len() as u64;
                    verdict.violation(format!("{}: {evidence}", part.root));
                    report.outcome = Outcome::NotLinearizable { at_ns, evidence };
                    decided = false;
                }
                SegmentEnd::Unknown(reason) => {
                    verdict.unchecked += seg.len() as u64;
                    report.outcome = Outcome::Unknown {
                        at_ns,
                        reason: format!(
                            "the segment at {:.3}s ({} operations): {reason}",
                            at_ns as f64 / 1e9,
                            seg.len()
                        ),
                    };
                    decided = false;
                }
            }
        }
        roots.push(report);
    }
    Report { verdict, roots }
}

// ---- brute force -------------------------------------------------------------------------

/// The same question by enumeration, for small histories: for every root, is there a subset of
/// its optional operations and an order of it and of every definite operation, respecting real
/// time (an operation that completed before another was invoked comes first), whose replay from
/// the empty state gives every recorded answer? None when a root needs more than
/// [`BRUTE_ORDERS_MAX`] orders or has an operation the model does not cover.
pub fn brute_force(events: &[Event]) -> Option<bool> {
    let span_ms = span_ms(events);
    let mut budget = BRUTE_ORDERS_MAX;
    for part in partitions(events) {
        let ops = &part.ops;
        if ops
            .iter()
            .any(|o| uncovered(o, part.ids, span_ms).is_some())
        {
            return None;
        }
        let tree = tree_of(ops);
        let root = Root {
            tree: &tree,
            ids: part.ids,
            ops,
        };
        let optional: Vec<usize> = (0..ops.len()).filter(|&i| !ops[i].definite()).collect();
        if optional.len() > 16 {
            return None;
        }
        let mut found = false;
        for subset in 0u32..(1 << optional.len()) {
            let chosen: Vec<usize> = (0..ops.len())
                .filter(|&i| match optional.binary_search(&i) {
                    Ok(k) => subset & (1 << k) != 0,
                    Err(_) => true,
                })
                .collect();
            let mut used = vec![false; chosen.len()];
            let mut order = Vec::with_capacity(chosen.len());
            if orders(&root, &chosen, &mut used, &mut order, &mut budget)? {
                found = true;
                break;
            }
        }
        if !found {
            return Some(false);
        }
    }
    Some(true)
}

/// Extends `order` in every way real time allows, and replays each full order.
fn orders(
    root: &Root,
    chosen: &[usize],
    used: &mut [bool],
    order: &mut Vec<usize>,
    budget: &mut u64,
) -> Option<bool> {
    let ops = root.ops;
    if order.len() == chosen.len() {
        *budget = budget.checked_sub(1)?;
        return Some(replay(root, order));
    }
    for k in 0..chosen.len() {
        if used[k] {
            continue;
        }
        let x = &ops[chosen[k]];
        // Whatever completed before x was invoked must be placed already.
        let ready = (0..chosen.len()).all(|j| used[j] || ops[chosen[j]].complete_ns >= x.invoke_ns);
        if !ready {
            continue;
        }
        used[k] = true;
        order.push(chosen[k]);
        let found = orders(root, chosen, used, order, budget);
        order.pop();
        used[k] = false;
        if found != Some(false) {
            return found;
        }
    }
    Some(false)
}

fn replay(root: &Root, order: &[usize]) -> bool {
    let mut state = State::initial(root.tree);
    for &i in order {
        let op = &root.ops[i];
        let answer = op.answer.as_ref();
        match (apply(root.tree, root.ids, &state, &op.args, answer), answer) {
            // An optional operation refused, or that changes nothing, did not happen.
            (Effect::Refused | Effect::Same(_), None) => {}
            (Effect::Changed(_, next), None) => state = next,
            (Effect::Same(reply), Some(recorded)) if reply_matches(&reply, recorded) => {}
            (Effect::Changed(reply, next), Some(recorded)) if reply_matches(&reply, recorded) => {
                state = next;
            }
            _ => return false,
        }
    }
    true
}
