//! The checkers. They read a history (and the replicas' final status) and know nothing of
//! purser-core: the budget model here is written from the rules in `docs/semantics.md` for
//! the subset the workload uses (lifetime hard caps, holds, settles, releases, charges).
//!
//! Positions. Every mutating answer carries the Raft log index of the entry it was applied in;
//! one entry holds many commands (group commit) in an order the answers do not show, so the
//! model works at entry granularity with ranks: a command applied in entry `k` has rank `2k`;
//! a denial answered at `k` (in entry `k`, or after it without a log write) has rank `2k + 1`;
//! a read sees the state after some entry. Commands whose position is known only within an
//! interval (a duplicate answer: the first application was earlier; an indeterminate
//! operation) are *floating*. Wherever the order is unknown, the model keeps a range: the
//! least and the most every counter can be, and a checker reports a violation only when no
//! order allowed by the answers and by real time explains what the cluster said.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Answer, Args, Event, Kind};

/// Evidence lines kept per checker.
pub const EVIDENCE_MAX: usize = 20;
/// Candidate positions tried for one read before it is left unchecked.
pub const READ_CANDIDATES_MAX: usize = 4096;

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub checker: &'static str,
    pub valid: bool,
    /// Things checked (operations, nodes, request ids).
    pub checked: u64,
    /// Things that could not be decided (e.g. a read whose window is too wide).
    pub unchecked: u64,
    pub violation_count: u64,
    /// The first violations, each with its evidence.
    pub violations: Vec<String>,
}

impl Verdict {
    fn new(checker: &'static str) -> Verdict {
        Verdict {
            checker,
            valid: true,
            checked: 0,
            unchecked: 0,
            violation_count: 0,
            violations: Vec::new(),
        }
    }

    fn violation(&mut self, evidence: String) {
        self.valid = false;
        self.violation_count += 1;
        if self.violations.len() < EVIDENCE_MAX {
            self.violations.push(evidence);
        }
    }
}

/// One replica's view after the final heal, for the convergence checker.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ReplicaView {
    pub id: u64,
    /// None when the replica did not answer.
    pub applied_index: Option<u64>,
    pub state_digest: Option<String>,
}

/// One invocation and its completion.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: u64,
    pub worker: u32,
    pub request_id: Option<String>,
    pub args: Args,
    pub invoke_ns: u64,
    /// `u64::MAX` when the operation never completed.
    pub complete_ns: u64,
    pub kind: Kind,
    pub answer: Option<Answer>,
    pub log_index: Option<u64>,
    pub duplicate: bool,
    pub error: Option<String>,
    pub final_phase: bool,
}

impl Op {
    fn describe(&self) -> String {
        format!(
            "op {} (worker {}, {}, {:?} -> {:?}{}{}, [{:.3}s, {:.3}s])",
            self.id,
            self.worker,
            self.request_id.as_deref().unwrap_or("-"),
            self.args,
            self.answer,
            self.log_index
                .map_or(String::new(), |i| format!(" @ index {i}")),
            if self.duplicate { " duplicate" } else { "" },
            self.invoke_ns as f64 / 1e9,
            if self.complete_ns == u64::MAX {
                f64::INFINITY
            } else {
                self.complete_ns as f64 / 1e9
            },
        )
    }
}

/// Pairs invocations with their completions; an invocation without one is `info`.
pub fn ops(events: &[Event]) -> Vec<Op> {
    let mut by_id: BTreeMap<u64, Op> = BTreeMap::new();
    for e in events {
        match e.kind {
            Kind::Invoke => {
                let Some(args) = e.args.clone() else { continue };
                by_id.insert(
                    e.op,
                    Op {
                        id: e.op,
                        worker: e.worker,
                        request_id: e.request_id.clone(),
                        args,
                        invoke_ns: e.t_ns,
                        complete_ns: u64::MAX,
                        kind: Kind::Info,
                        answer: None,
                        log_index: None,
                        duplicate: false,
                        error: Some("never completed".into()),
                        final_phase: e.final_phase,
                    },
                );
            }
            _ => {
                if let Some(op) = by_id.get_mut(&e.op) {
                    op.complete_ns = e.t_ns;
                    op.kind = e.kind;
                    op.answer = e.answer.clone();
                    op.log_index = e.log_index;
                    op.duplicate = e.duplicate;
                    op.error = e.error.clone();
                }
            }
        }
    }
    by_id.into_values().collect()
}

/// The tree: node paths and, for each, its path to the root (itself first).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    pub paths: Vec<String>,
    index: HashMap<String, usize>,
}

impl Tree {
    fn add(&mut self, path: &str) -> usize {
        if let Some(&i) = self.index.get(path) {
            return i;
        }
        self.paths.push(path.to_owned());
        self.index.insert(path.to_owned(), self.paths.len() - 1);
        self.paths.len() - 1
    }

    pub fn get(&self, path: &str) -> Option<usize> {
        self.index.get(path).copied()
    }

    /// Indices of `path` and its ancestors that the tree knows, leaf first.
    pub fn lineage(&self, path: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut p = path;
        loop {
            if let Some(i) = self.get(p) {
                out.push(i);
            }
            match p.rfind('/') {
                Some(cut) => p = &p[..cut],
                None => return out,
            }
        }
    }
}

/// A change to the state that the cluster made (or may have made).
#[derive(Clone, Debug)]
struct Application {
    /// The op whose answer it comes from (for evidence).
    op: usize,
    /// Rank interval of its position (inclusive); `lo == hi` for an exact position.
    lo: u64,
    hi: u64,
    /// May not have been applied at all (indeterminate).
    maybe: bool,
    /// Per node: (spent delta, held delta).
    deltas: Vec<(usize, i64, i64)>,
    /// A cap set on a node.
    cap: Option<(usize, u64)>,
    /// A granted reservation's id: reservation ids follow the apply order.
    reservation_id: Option<u64>,
    /// When the applying answer arrived (u64::MAX if unknown), and when its request id was
    /// first sent.
    answered_ns: u64,
    first_invoke_ns: u64,
    /// Overrun charged by a settle (for the final cap check).
    overrun: Option<(usize, u64)>,
}

impl Application {
    fn exact(&self) -> bool {
        self.lo == self.hi && !self.maybe
    }
}

/// Where a question is asked: inside entry `entry` (an applied command or a denial), or after
/// it (a read).
#[derive(Clone, Copy, Debug)]
struct Query {
    entry: u64,
    after: bool,
    /// The application the query belongs to (excluded from its own "before").
    own: Option<usize>,
    reservation_id: Option<u64>,
    invoke_ns: u64,
    complete_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Range {
    lo: i64,
    hi: i64,
}

impl Range {
    fn add(&mut self, certain: bool, delta: i64) {
        if certain {
            self.lo += delta;
            self.hi += delta;
        } else if delta < 0 {
            self.lo += delta;
        } else {
            self.hi += delta;
        }
    }

    fn contains(&self, v: i64) -> bool {
        self.lo <= v && v <= self.hi
    }
}

#[derive(Clone, Debug, Default)]
struct NodeRanges {
    spent: Range,
    held: Range,
    usage: Range,
    /// None: no cap known at this node (unlimited).
    cap: Option<Range>,
}

/// The replay: every application, with prefix sums over the exact ones in rank order.
struct Replay {
    tree: Tree,
    apps: Vec<Application>,
    /// Indices into `apps` of exact applications without a cap, sorted by rank.
    exact: Vec<usize>,
    exact_ranks: Vec<u64>,
    /// cum[i * nodes + n]: (spent, held) of the first i exact applications.
    cum: Vec<(i64, i64)>,
    floating: Vec<usize>,
    caps: Vec<usize>,
    /// Entries where some exact application (cap changes included) happened, sorted.
    entries: Vec<u64>,
}

enum Place {
    Before,
    After,
    Unknown,
}

impl Replay {
    fn build(tree: Tree, apps: Vec<Application>) -> Replay {
        let nodes = tree.paths.len();
        let mut exact: Vec<usize> = (0..apps.len())
            .filter(|&i| apps[i].exact() && apps[i].cap.is_none())
            .collect();
        exact.sort_by_key(|&i| (apps[i].lo, apps[i].reservation_id));
        let exact_ranks = exact.iter().map(|&i| apps[i].lo).collect();
        let mut cum = vec![(0i64, 0i64); (exact.len() + 1) * nodes];
        for (k, &i) in exact.iter().enumerate() {
            for n in 0..nodes {
                cum[(k + 1) * nodes + n] = cum[k * nodes + n];
            }
            for &(n, ds, dh) in &apps[i].deltas {
                let c = &mut cum[(k + 1) * nodes + n];
                c.0 += ds;
                c.1 += dh;
            }
        }
        let floating = (0..apps.len())
            .filter(|&i| !apps[i].exact() && apps[i].cap.is_none())
            .collect();
        let caps = (0..apps.len()).filter(|&i| apps[i].cap.is_some()).collect();
        let mut entries: Vec<u64> = apps
            .iter()
            .filter(|a| a.exact())
            .map(|a| a.lo / 2)
            .collect();
        entries.sort_unstable();
        entries.dedup();
        Replay {
            entries,
            tree,
            apps,
            exact,
            exact_ranks,
            cum,
            floating,
            caps,
        }
    }

    fn place(&self, q: &Query, i: usize) -> Place {
        let a = &self.apps[i];
        if q.own == Some(i) {
            return Place::After;
        }
        // Reservation ids are assigned in apply order.
        if let (Some(mine), Some(theirs)) = (q.reservation_id, a.reservation_id) {
            return if theirs < mine {
                Place::Before
            } else {
                Place::After
            };
        }
        // Real time: answered before the question was asked, or first sent after it was
        // answered.
        if a.answered_ns < q.invoke_ns && !a.maybe {
            return Place::Before;
        }
        if a.first_invoke_ns > q.complete_ns {
            return Place::After;
        }
        let (before_rank, after_rank) = if q.after {
            (2 * q.entry, 2 * q.entry + 1)
        } else {
            ((2 * q.entry).saturating_sub(1), 2 * q.entry + 1)
        };
        if a.hi <= before_rank && !a.maybe {
            Place::Before
        } else if a.lo >= after_rank {
            Place::After
        } else {
            Place::Unknown
        }
    }

    /// The least and most each node's counters can be at the question's point.
    fn ranges(&self, q: &Query) -> Vec<NodeRanges> {
        let nodes = self.tree.paths.len();
        // Exact applications strictly before the entry (or up to it for `after`).
        let bound = if q.after {
            2 * q.entry
        } else {
            (2 * q.entry).saturating_sub(1)
        };
        let certain = self.exact_ranks.partition_point(|&r| r <= bound);
        let mut out = vec![NodeRanges::default(); nodes];
        for (n, r) in out.iter_mut().enumerate() {
            let (s, h) = self.cum[certain * nodes + n];
            r.spent = Range { lo: s, hi: s };
            r.held = Range { lo: h, hi: h };
            r.usage = Range {
                lo: s + h,
                hi: s + h,
            };
        }
        let apply = |out: &mut Vec<NodeRanges>, a: &Application, certain: bool| {
            for &(n, ds, dh) in &a.deltas {
                out[n].spent.add(certain, ds);
                out[n].held.add(certain, dh);
                out[n].usage.add(certain, ds + dh);
            }
        };
        // The rest of the exact ones in the same entry: their order is unknown.
        if !q.after {
            let end = self.exact_ranks.partition_point(|&r| r <= 2 * q.entry);
            for &i in &self.exact[certain..end] {
                match self.place(q, i) {
                    Place::Before => apply(&mut out, &self.apps[i], true),
                    Place::After => {}
                    Place::Unknown => apply(&mut out, &self.apps[i], false),
                }
            }
        }
        for &i in &self.floating {
            match self.place(q, i) {
                Place::Before => apply(&mut out, &self.apps[i], true),
                Place::After => {}
                Place::Unknown => apply(&mut out, &self.apps[i], false),
            }
        }
        for &i in &self.caps {
            let a = &self.apps[i];
            let Some((n, amount)) = a.cap else { continue };
            let amount = amount as i64;
            let place = if a.exact() && a.lo < 2 * q.entry + u64::from(q.after) {
                Place::Before
            } else if a.exact() && a.lo > 2 * q.entry {
                Place::After
            } else {
                self.place(q, i)
            };
            // Caps only ever rise in the workload: the newest certain one is the least.
            let cap = out[n].cap.get_or_insert(Range {
                lo: i64::MIN,
                hi: i64::MIN,
            });
            match place {
                Place::Before => {
                    cap.lo = cap.lo.max(amount);
                    cap.hi = cap.hi.max(amount);
                }
                Place::Unknown => cap.hi = cap.hi.max(amount),
                Place::After => {}
            }
        }
        for r in &mut out {
            if r.cap.is_some_and(|c| c.hi == i64::MIN) {
                r.cap = None;
            }
        }
        out
    }
}

/// Everything the checkers need, derived once.
struct Analysis {
    ops: Vec<Op>,
    replay: Replay,
    /// App index of each op whose answer produced one (exact, fresh answers).
    app_of_op: HashMap<usize, usize>,
    holds: HashMap<u64, (usize, u64)>,
    idempotency: Verdict,
    harness_errors: Vec<String>,
}

fn rank_of(op: &Op) -> Option<u64> {
    let index = op.log_index?;
    match &op.answer {
        Some(Answer::Denied { .. }) => Some(2 * index + 1),
        Some(a) if a.applied() && !op.duplicate => Some(2 * index),
        _ => None,
    }
}

/// The ops of one request id, in invocation order.
fn groups(ops: &[Op]) -> BTreeMap<String, Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.final_phase || op.args.is_read() {
            continue;
        }
        if let Some(r) = &op.request_id {
            groups.entry(r.clone()).or_default().push(i);
        }
    }
    for g in groups.values_mut() {
        g.sort_by_key(|&i| ops[i].invoke_ns);
    }
    groups
}

/// Per node: (spent delta, held delta).
type Deltas = Vec<(usize, i64, i64)>;
/// A node and an amount (a cap, an overrun).
type NodeAmount = (usize, u64);

/// The most a counter could have changed by, from a request's arguments, when its answer is
/// unknown.
fn maybe_deltas(
    tree: &Tree,
    args: &Args,
    holds: &HashMap<u64, (usize, u64)>,
) -> (Deltas, Option<(usize, u64)>) {
    let along = |path: &str, ds: i64, dh: i64| -> Vec<(usize, i64, i64)> {
        tree.lineage(path)
            .into_iter()
            .map(|n| (n, ds, dh))
            .collect()
    };
    match args {
        Args::Reserve { node, max, .. } => (along(node, 0, *max as i64), None),
        Args::Charge { node, amount } => (along(node, *amount as i64, 0), None),
        Args::Commit {
            reservation_id,
            actual,
        } => match holds.get(reservation_id) {
            Some(&(leaf, h)) => (along(&tree.paths[leaf], *actual as i64, -(h as i64)), None),
            None => (Vec::new(), None),
        },
        Args::Release { reservation_id } => match holds.get(reservation_id) {
            Some(&(leaf, h)) => (along(&tree.paths[leaf], 0, -(h as i64)), None),
            None => (Vec::new(), None),
        },
        Args::SetLimit { node, amount } => (Vec::new(), tree.get(node).map(|n| (n, *amount))),
        _ => (Vec::new(), None),
    }
}

/// The effect of an applied answer.
fn answer_deltas(
    tree: &Tree,
    args: &Args,
    answer: &Answer,
    holds: &HashMap<u64, (usize, u64)>,
) -> Result<(Deltas, Option<NodeAmount>, Option<NodeAmount>), String> {
    let along = |path: &str, ds: i64, dh: i64| -> Vec<(usize, i64, i64)> {
        tree.lineage(path)
            .into_iter()
            .map(|n| (n, ds, dh))
            .collect()
    };
    let hold = |rid: &u64| {
        holds
            .get(rid)
            .copied()
            .ok_or_else(|| format!("reservation {rid} was never granted in the history"))
    };
    Ok(match (args, answer) {
        (Args::Reserve { node, .. }, Answer::Granted { amount, .. }) => {
            (along(node, 0, *amount as i64), None, None)
        }
        (Args::Charge { node, .. }, Answer::Charged { charged }) => {
            (along(node, *charged as i64, 0), None, None)
        }
        (Args::Commit { reservation_id, .. }, Answer::Settled { charged, .. }) => {
            let (leaf, h) = hold(reservation_id)?;
            let overrun = charged.saturating_sub(h);
            (
                along(&tree.paths[leaf], *charged as i64, -(h as i64)),
                None,
                (overrun > 0).then_some((leaf, overrun)),
            )
        }
        (Args::Release { reservation_id }, Answer::Released { .. }) => {
            let (leaf, h) = hold(reservation_id)?;
            (along(&tree.paths[leaf], 0, -(h as i64)), None, None)
        }
        (Args::SetLimit { node, amount }, Answer::Done) => {
            (Vec::new(), tree.get(node).map(|n| (n, *amount)), None)
        }
        (Args::CreateNode { .. }, Answer::Done) => (Vec::new(), None, None),
        (args, answer) => return Err(format!("answer {answer:?} does not fit {args:?}")),
    })
}

/// The answer a duplicate must repeat: what the record keeps.
fn same_outcome(first: &Answer, dup: &Answer) -> bool {
    match (first, dup) {
        (
            Answer::Granted {
                reservation_id: a,
                amount: x,
            },
            Answer::Granted {
                reservation_id: b,
                amount: y,
            },
        ) => a == b && x == y,
        (
            Answer::Settled {
                reservation_id: a,
                charged: x,
                ..
            },
            Answer::Settled {
                reservation_id: b,
                charged: y,
                ..
            },
        ) => a == b && x == y,
        (
            Answer::Released {
                reservation_id: a, ..
            },
            Answer::Released {
                reservation_id: b, ..
            },
        ) => a == b,
        (Answer::Charged { charged: x }, Answer::Charged { charged: y }) => x == y,
        (Answer::Done, Answer::Done) => true,
        _ => false,
    }
}

impl Analysis {
    fn new(events: &[Event]) -> Analysis {
        let ops = ops(events);
        let mut tree = Tree::default();
        for op in &ops {
            if let Args::CreateNode { path } = &op.args {
                tree.add(path);
            }
        }
        let groups = groups(&ops);
        let mut idempotency = Verdict::new("idempotency");
        let mut harness_errors = Vec::new();
        // Reservations first: commits and releases need their holds. Reservation ids come
        // from every granted answer, fresh or duplicate.
        let mut holds: HashMap<u64, (usize, u64)> = HashMap::new();
        for op in &ops {
            if let (
                Args::Reserve { node, .. },
                Some(Answer::Granted {
                    reservation_id,
                    amount,
                }),
            ) = (&op.args, &op.answer)
            {
                if let Some(leaf) = tree.get(node) {
                    let previous = holds.insert(*reservation_id, (leaf, *amount));
                    if previous.is_some_and(|p| p != (leaf, *amount)) {
                        idempotency.violation(format!(
                            "reservation id {reservation_id} granted twice with different \
                             holds: {previous:?} and {:?}; {}",
                            (leaf, *amount),
                            op.describe()
                        ));
                    }
                }
            }
        }
        // Real time → rank lower bounds for floating applications.
        let mut completed: Vec<(u64, u64)> = ops
            .iter()
            .filter(|o| !o.final_phase)
            .filter_map(|o| rank_of(o).map(|r| (o.complete_ns, r)))
            .collect();
        completed.sort_unstable();
        let mut prefix_max = Vec::with_capacity(completed.len());
        let mut m = 0u64;
        for &(_, r) in &completed {
            m = m.max(r);
            prefix_max.push(m);
        }
        let lower_bound = |t: u64| -> u64 {
            let n = completed.partition_point(|&(c, _)| c < t);
            if n == 0 {
                0
            } else {
                prefix_max[n - 1]
            }
        };

        let mut apps = Vec::new();
        let mut app_of_op = HashMap::new();
        for (request_id, members) in &groups {
            idempotency.checked += 1;
            let first_invoke = ops[members[0]].invoke_ns;
            let fresh: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| {
                    ops[i].kind == Kind::Ok
                        && !ops[i].duplicate
                        && ops[i].answer.as_ref().is_some_and(Answer::applied)
                })
                .collect();
            let dups: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| ops[i].kind == Kind::Ok && ops[i].duplicate)
                .collect();
            if fresh.len() > 1 {
                idempotency.violation(format!(
                    "request {request_id} applied {} times: {}",
                    fresh.len(),
                    fresh
                        .iter()
                        .map(|&i| ops[i].describe())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            let reference = fresh.first().or(dups.first()).copied();
            if let Some(r) = reference {
                let first = ops[r].answer.clone().expect("an ok answer");
                for &d in &dups {
                    let dup = ops[d].answer.as_ref().expect("an ok answer");
                    if !same_outcome(&first, dup) {
                        idempotency.violation(format!(
                            "request {request_id}: a retry was answered {dup:?} but the \
                             first outcome was {first:?}: {}",
                            ops[d].describe()
                        ));
                    }
                }
            }
            for &f in &fresh {
                let op = &ops[f];
                let answer = op.answer.as_ref().expect("an ok answer");
                match answer_deltas(&tree, &op.args, answer, &holds) {
                    Ok((deltas, cap, overrun)) => {
                        let rank = 2 * op.log_index.unwrap_or(0);
                        app_of_op.insert(f, apps.len());
                        apps.push(Application {
                            op: f,
                            lo: rank,
                            hi: rank,
                            maybe: false,
                            deltas,
                            cap,
                            reservation_id: reservation_of(answer),
                            answered_ns: op.complete_ns,
                            first_invoke_ns: op.invoke_ns,
                            overrun,
                        });
                    }
                    Err(e) => harness_errors.push(format!("{e}: {}", op.describe())),
                }
            }
            if !fresh.is_empty() {
                continue;
            }
            let lo = lower_bound(first_invoke) + 1;
            if let Some(&d) = dups.first() {
                let op = &ops[d];
                let answer = op.answer.as_ref().expect("an ok answer");
                let hi = dups
                    .iter()
                    .filter_map(|&i| ops[i].log_index)
                    .min()
                    .map_or(u64::MAX, |i| 2 * i);
                match answer_deltas(&tree, &op.args, answer, &holds) {
                    Ok((deltas, cap, overrun)) => apps.push(Application {
                        op: d,
                        lo: lo.min(hi),
                        hi,
                        maybe: false,
                        deltas,
                        cap,
                        reservation_id: reservation_of(answer),
                        answered_ns: op.complete_ns,
                        first_invoke_ns: first_invoke,
                        overrun,
                    }),
                    Err(e) => harness_errors.push(format!("{e}: {}", op.describe())),
                }
                continue;
            }
            // Nothing applied was answered: decided by the last attempt.
            let last = *members.last().expect("a group has members");
            if matches!(ops[last].kind, Kind::Ok | Kind::Fail) {
                continue;
            }
            let (deltas, cap) = maybe_deltas(&tree, &ops[last].args, &holds);
            apps.push(Application {
                op: last,
                lo,
                hi: u64::MAX,
                maybe: true,
                deltas,
                cap,
                reservation_id: None,
                answered_ns: u64::MAX,
                first_invoke_ns: first_invoke,
                overrun: None,
            });
        }
        Analysis {
            ops,
            replay: Replay::build(tree, apps),
            app_of_op,
            holds,
            idempotency,
            harness_errors,
        }
    }

    fn query_for(&self, i: usize) -> Option<Query> {
        let op = &self.ops[i];
        let index = op.log_index?;
        let own = self.app_of_op.get(&i).copied();
        Some(Query {
            entry: index,
            after: false,
            own,
            reservation_id: own.and_then(|a| self.replay.apps[a].reservation_id),
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
        })
    }
}

fn reservation_of(answer: &Answer) -> Option<u64> {
    match answer {
        Answer::Granted { reservation_id, .. } => Some(*reservation_id),
        _ => None,
    }
}

/// Real time against log order: if A completed before B was invoked, A's position is before
/// B's (equal only for two denials).
fn check_real_time(a: &Analysis, v: &mut Verdict) {
    let ops = &a.ops;
    let mut ranked: Vec<(usize, u64)> = (0..ops.len())
        .filter(|&i| ops[i].kind == Kind::Ok && !ops[i].final_phase)
        .filter_map(|i| rank_of(&ops[i]).map(|r| (i, r)))
        .collect();
    let mut by_complete = ranked.clone();
    by_complete.sort_by_key(|&(i, _)| ops[i].complete_ns);
    ranked.sort_by_key(|&(i, _)| ops[i].invoke_ns);
    let mut next = 0;
    let mut best: Option<(usize, u64)> = None;
    for &(b, rank_b) in &ranked {
        while next < by_complete.len() && ops[by_complete[next].0].complete_ns < ops[b].invoke_ns {
            let (i, r) = by_complete[next];
            if best.is_none_or(|(_, m)| r > m) {
                best = Some((i, r));
            }
            next += 1;
        }
        v.checked += 1;
        if let Some((a_op, rank_a)) = best {
            let both_denials = rank_a % 2 == 1 && rank_b % 2 == 1;
            if rank_a > rank_b || (rank_a == rank_b && !both_denials) {
                v.violation(format!(
                    "real-time order broken: {} completed before {} was invoked, but sits \
                     at or after it in the log",
                    ops[a_op].describe(),
                    ops[b].describe()
                ));
            }
        }
    }
}

/// Every granted reservation or charge fitted under every cap of its path at its position
/// (I1), every denial was justified, every settle and release answered what the model says.
fn check_replay(a: &Analysis, overspend: &mut Verdict, lin: &mut Verdict) {
    let tree = &a.replay.tree;
    for (i, op) in a.ops.iter().enumerate() {
        if op.kind != Kind::Ok || op.final_phase || op.duplicate {
            continue;
        }
        let Some(answer) = &op.answer else { continue };
        let Some(q) = a.query_for(i) else { continue };
        let (node, min, max) = match &op.args {
            Args::Reserve { node, min, max, .. } => (node, *min, *max),
            Args::Charge { node, amount } => (node, *amount, *amount),
            Args::Commit {
                reservation_id,
                actual,
            } => {
                lin.checked += 1;
                check_settle(a, op, *reservation_id, *actual, lin);
                continue;
            }
            Args::Release { reservation_id } => {
                lin.checked += 1;
                if let (Some(&(_, h)), Answer::Released { amount, .. }) =
                    (a.holds.get(reservation_id), answer)
                {
                    if *amount != h {
                        lin.violation(format!(
                            "release gave back {amount}, the hold was {h}: {}",
                            op.describe()
                        ));
                    }
                }
                continue;
            }
            _ => continue,
        };
        let ranges = a.replay.ranges(&q);
        let lineage = tree.lineage(node);
        match answer {
            Answer::Granted { amount: g, .. } | Answer::Charged { charged: g } => {
                overspend.checked += 1;
                lin.checked += 1;
                if *g < min || *g > max {
                    lin.violation(format!(
                        "granted {g} outside [{min}, {max}]: {}",
                        op.describe()
                    ));
                }
                let mut room = i64::MAX;
                for &n in &lineage {
                    let r = &ranges[n];
                    let Some(cap) = r.cap else { continue };
                    room = room.min(cap.lo - r.usage.hi);
                    if r.usage.lo + *g as i64 > cap.hi {
                        overspend.violation(format!(
                            "{} granted {g} although at least {} of its cap of at most {} \
                             was spent or held: {}",
                            tree.paths[n],
                            r.usage.lo,
                            cap.hi,
                            op.describe()
                        ));
                    }
                }
                if *g < max && (*g as i64) < room.min(max as i64) {
                    lin.violation(format!(
                        "granted {g} although at least {} was free on the whole path: {}",
                        room.min(max as i64),
                        op.describe()
                    ));
                }
            }
            Answer::Denied { .. } => {
                lin.checked += 1;
                let justified = lineage.iter().any(|&n| {
                    let r = &ranges[n];
                    r.cap.is_some_and(|cap| r.usage.hi + min as i64 > cap.lo)
                });
                if !justified {
                    let why: Vec<String> = lineage
                        .iter()
                        .map(|&n| {
                            let r = &ranges[n];
                            format!(
                                "{}: used at most {} of a cap of at least {:?}",
                                tree.paths[n],
                                r.usage.hi,
                                r.cap.map(|c| c.lo)
                            )
                        })
                        .collect();
                    lin.violation(format!(
                        "denial not justified by any order of the log ({}): {}",
                        why.join(", "),
                        op.describe()
                    ));
                }
            }
            _ => {}
        }
    }
}

fn check_settle(a: &Analysis, op: &Op, reservation_id: u64, actual: u64, lin: &mut Verdict) {
    let Some(&(_, h)) = a.holds.get(&reservation_id) else {
        return;
    };
    if let Some(Answer::Settled {
        charged,
        released,
        overrun,
        ..
    }) = &op.answer
    {
        let expected = (actual, h.saturating_sub(actual), actual.saturating_sub(h));
        let got = (
            *charged,
            released.unwrap_or(expected.1),
            overrun.unwrap_or(expected.2),
        );
        if got != expected {
            lin.violation(format!(
                "settle of a hold of {h} with {actual} answered (charged, released, overrun) = \
                 {got:?}, expected {expected:?}: {}",
                op.describe()
            ));
        }
    }
}

/// A read saw exactly the state after some entry between its invocation and its completion.
fn check_reads(a: &Analysis, lin: &mut Verdict) {
    let ops = &a.ops;
    // Ranks of exact operations: completed before a read began → lower bound; invoked after
    // it ended → upper bound.
    let mut by_complete: Vec<(u64, u64)> = Vec::new();
    let mut by_invoke: Vec<(u64, u64)> = Vec::new();
    for o in ops.iter().filter(|o| o.kind == Kind::Ok && !o.final_phase) {
        if let Some(r) = rank_of(o) {
            by_complete.push((o.complete_ns, r));
            by_invoke.push((o.invoke_ns, r));
        }
    }
    by_complete.sort_unstable();
    by_invoke.sort_unstable();
    let mut prefix_max = Vec::with_capacity(by_complete.len());
    let mut m = 0;
    for &(_, r) in &by_complete {
        m = m.max(r);
        prefix_max.push(m);
    }
    let mut suffix_min = vec![u64::MAX; by_invoke.len() + 1];
    for k in (0..by_invoke.len()).rev() {
        suffix_min[k] = suffix_min[k + 1].min(by_invoke[k].1);
    }
    for (i, op) in ops.iter().enumerate() {
        // Final reads are checked against the final state (`check_final`).
        let (Args::Show { node }, Some(Answer::Account { .. }), Kind::Ok, false) =
            (&op.args, &op.answer, op.kind, op.final_phase)
        else {
            continue;
        };
        let Some(n) = a.replay.tree.get(node) else {
            continue;
        };
        let before = by_complete.partition_point(|&(c, _)| c < op.invoke_ns);
        let low_rank = if before == 0 {
            0
        } else {
            prefix_max[before - 1]
        };
        let after = by_invoke.partition_point(|&(t, _)| t <= op.complete_ns);
        let high_rank = suffix_min[after];
        // Read after entry k has rank 2k + 1: low_rank <= 2k + 1 <= high_rank.
        let k_lo = low_rank.saturating_sub(1).div_ceil(2);
        let k_hi = if high_rank == u64::MAX {
            u64::MAX
        } else {
            high_rank.saturating_sub(1) / 2
        };
        let candidates = read_candidates(a, k_lo, k_hi);
        if candidates.len() > READ_CANDIDATES_MAX {
            lin.unchecked += 1;
            continue;
        }
        lin.checked += 1;
        let matched = candidates.iter().any(|&k| read_matches(a, op, i, n, k));
        if !matched {
            let q = read_query(op, k_lo);
            let r = &a.replay.ranges(&q)[n];
            lin.violation(format!(
                "read saw a state no prefix of the log explains (after entries {k_lo}..={}: \
                 spent {:?}, held {:?}, cap {:?} at the first): {}",
                if k_hi == u64::MAX {
                    "end".to_string()
                } else {
                    k_hi.to_string()
                },
                r.spent,
                r.held,
                r.cap,
                op.describe()
            ));
        }
    }
}

/// The entries after which a read's answer can differ: its lower bound, every entry with an
/// exact application in its window, and the first and last entries of every floating one.
fn read_candidates(a: &Analysis, k_lo: u64, k_hi: u64) -> Vec<u64> {
    let mut out = std::collections::BTreeSet::from([k_lo]);
    if k_hi < k_lo {
        return out.into_iter().collect();
    }
    let entries = &a.replay.entries;
    let from = entries.partition_point(|&e| e < k_lo);
    for &e in &entries[from..] {
        if e > k_hi || out.len() > READ_CANDIDATES_MAX {
            break;
        }
        out.insert(e);
    }
    for &i in a.replay.floating.iter().chain(&a.replay.caps) {
        let app = &a.replay.apps[i];
        for e in [app.lo.div_ceil(2), app.hi / 2] {
            if (k_lo..=k_hi).contains(&e) {
                out.insert(e);
            }
        }
    }
    out.into_iter().collect()
}

fn read_query(op: &Op, entry: u64) -> Query {
    Query {
        entry,
        after: true,
        own: None,
        reservation_id: None,
        invoke_ns: op.invoke_ns,
        complete_ns: op.complete_ns,
    }
}

fn read_matches(a: &Analysis, op: &Op, _i: usize, n: usize, entry: u64) -> bool {
    let Some(Answer::Account {
        held,
        spent,
        cap,
        limit_spent,
        limit_held,
    }) = &op.answer
    else {
        return false;
    };
    let r = &a.replay.ranges(&read_query(op, entry))[n];
    let cap_ok = match (cap, r.cap) {
        (Some(c), Some(range)) => range.contains(*c as i64),
        (None, None) => true,
        _ => false,
    };
    r.spent.contains(*spent as i64)
        && r.held.contains(*held as i64)
        && cap_ok
        && limit_spent.is_none_or(|s| s == *spent)
        && limit_held.is_none_or(|h| h == *held)
}

/// The final state: spend and holds equal the replay of everything applied (conservation),
/// every acknowledged hold is there and every acknowledged request is remembered (I5), no hold
/// exists that no request was answered with (I4), and no cap is exceeded beyond overruns (I1).
fn check_final(
    a: &Analysis,
    overspend: &mut Verdict,
    lost: &mut Verdict,
    conservation: &mut Verdict,
    idempotency: &mut Verdict,
) {
    let tree = &a.replay.tree;
    let finals: Vec<&Op> = a
        .ops
        .iter()
        .filter(|o| o.final_phase && o.kind == Kind::Ok)
        .collect();
    let end = Query {
        entry: u64::MAX / 4,
        after: true,
        own: None,
        reservation_id: None,
        invoke_ns: u64::MAX,
        complete_ns: u64::MAX,
    };
    let ranges = a.replay.ranges(&end);
    let mut overruns = vec![0i64; tree.paths.len()];
    for app in &a.replay.apps {
        if let Some((leaf, o)) = app.overrun {
            for n in tree.lineage(&tree.paths[leaf]) {
                overruns[n] += o as i64;
            }
        }
    }
    // Holds the model says are open, from certain applications.
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut closed: HashSet<u64> = HashSet::new();
    let mut maybe_reserves = 0usize;
    let mut maybe_closed: HashSet<u64> = HashSet::new();
    for app in &a.replay.apps {
        let op = &a.ops[app.op];
        if app.maybe {
            maybe_reserves += usize::from(matches!(op.args, Args::Reserve { .. }));
            if let Args::Commit { reservation_id, .. } | Args::Release { reservation_id } = &op.args
            {
                maybe_closed.insert(*reservation_id);
            }
            continue;
        }
        if let Some(rid) = app.reservation_id {
            open.insert(rid, app.op);
        }
        if let Args::Commit { reservation_id, .. } | Args::Release { reservation_id } = &op.args {
            closed.insert(*reservation_id);
        }
    }
    open.retain(|rid, _| !closed.contains(rid));
    let mut seen_holds: HashSet<u64> = HashSet::new();
    for op in &finals {
        match (&op.args, &op.answer) {
            (Args::Show { node }, Some(Answer::Account { held, spent, .. })) => {
                let Some(n) = tree.get(node) else { continue };
                let r = &ranges[n];
                conservation.checked += 1;
                if !r.spent.contains(*spent as i64) || !r.held.contains(*held as i64) {
                    conservation.violation(format!(
                        "{node}: the cluster says spent {spent}, held {held}; the replay of the \
                         applied operations says spent {:?}, held {:?}",
                        r.spent, r.held
                    ));
                }
                overspend.checked += 1;
                if let Some(cap) = r.cap {
                    let used = (*spent + *held) as i64;
                    if used > cap.hi + overruns[n] {
                        overspend.violation(format!(
                            "{node}: spent {spent} + held {held} exceeds the cap {} plus \
                             overruns {}",
                            cap.hi, overruns[n]
                        ));
                    }
                }
            }
            (Args::Holds { node }, Some(Answer::Holds { holds })) => {
                let Some(n) = tree.get(node) else { continue };
                for &(rid, amount) in holds {
                    seen_holds.insert(rid);
                    idempotency.checked += 1;
                    if closed.contains(&rid) {
                        lost.violation(format!(
                            "hold {rid} at {node} is still open although its settle or release \
                             was acknowledged"
                        ));
                    }
                    let known = a.holds.get(&rid);
                    if known.is_none_or(|&(leaf, h)| leaf != n || h != amount)
                        && !open.contains_key(&rid)
                    {
                        if maybe_reserves == 0 {
                            idempotency.violation(format!(
                                "hold {rid} of {amount} at {node} exists, but no request was \
                                 answered with it (applied without, or beyond, a request)"
                            ));
                        } else {
                            idempotency.unchecked += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let read_holds = finals.iter().any(|o| matches!(o.args, Args::Holds { .. }));
    if read_holds {
        for (rid, &op) in &open {
            if maybe_closed.contains(rid) {
                lost.unchecked += 1;
                continue;
            }
            lost.checked += 1;
            if !seen_holds.contains(rid) {
                lost.violation(format!(
                    "acknowledged reservation {rid} is neither open nor settled in the final \
                     state: {}",
                    a.ops[op].describe()
                ));
            }
        }
    }
    check_final_retries(a, lost);
}

/// A final retry of every acknowledged request id must be answered as a duplicate.
fn check_final_retries(a: &Analysis, lost: &mut Verdict) {
    let mut acked: HashMap<&str, usize> = HashMap::new();
    for (i, op) in a.ops.iter().enumerate() {
        if !op.final_phase && op.kind == Kind::Ok && op.answer.as_ref().is_some_and(Answer::applied)
        {
            if let Some(r) = &op.request_id {
                acked.entry(r).or_insert(i);
            }
        }
    }
    for op in a.ops.iter().filter(|o| o.final_phase && !o.args.is_read()) {
        let Some(r) = op.request_id.as_deref() else {
            continue;
        };
        let Some(&first) = acked.get(r) else { continue };
        match op.kind {
            Kind::Ok if op.duplicate => lost.checked += 1,
            Kind::Ok => {
                lost.checked += 1;
                lost.violation(format!(
                    "acknowledged request {r} was forgotten: a retry applied it again ({}); \
                     first: {}",
                    op.describe(),
                    a.ops[first].describe()
                ));
            }
            _ => lost.unchecked += 1,
        }
    }
}

/// All replicas answered with the same applied index and state digest.
pub fn check_convergence(views: &[ReplicaView]) -> Verdict {
    let mut v = Verdict::new("convergence");
    v.checked = views.len() as u64;
    let answered: Vec<&ReplicaView> = views
        .iter()
        .filter(|r| r.applied_index.is_some() && r.state_digest.is_some())
        .collect();
    if views.is_empty() || answered.len() < views.len() {
        v.violation(format!("not every replica answered: {views:?}"));
        return v;
    }
    let first = answered[0];
    if answered
        .iter()
        .any(|r| r.applied_index != first.applied_index || r.state_digest != first.state_digest)
    {
        v.violation(format!("replicas differ after the final heal: {views:?}"));
    }
    v
}

/// Runs every checker over a history; `views` feeds the convergence checker (None: skipped).
pub fn check(events: &[Event], views: Option<&[ReplicaView]>) -> Vec<Verdict> {
    let analysis = Analysis::new(events);
    let mut overspend = Verdict::new("no-overspend");
    let mut lost = Verdict::new("no-lost-ack");
    let mut idempotency = analysis.idempotency.clone();
    let mut conservation = Verdict::new("conservation");
    let mut lin = Verdict::new("linearizability");
    for e in &analysis.harness_errors {
        lin.violation(format!("history inconsistent with itself: {e}"));
    }
    check_real_time(&analysis, &mut lin);
    check_replay(&analysis, &mut overspend, &mut lin);
    check_reads(&analysis, &mut lin);
    check_final(
        &analysis,
        &mut overspend,
        &mut lost,
        &mut conservation,
        &mut idempotency,
    );
    let mut out = vec![overspend, lost, idempotency, conservation, lin];
    if let Some(views) = views {
        out.push(check_convergence(views));
    }
    out
}

#[cfg(test)]
mod tests;
