//! The checkers. They read a history (and the replicas' final status) and know nothing of
//! purser-core: the budget model here is written from the rules in `docs/semantics.md` for
//! the subset the workload uses (hard caps in windows that do not reset during a run, holds,
//! settles, releases, charges, expiry by TTL, one credit pool per funded root).
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
//!
//! Expiry. A hold may vanish by the leader's Tick any time after its TTL has passed; the Tick's
//! position is known from the `hold_expired` events (read with `Watch` in the final phase). When
//! they are missing, an expiry floats from the earliest moment it was due (invoke time + TTL −
//! [`EXPIRY_SLACK_NS`]) to the end, and the final `Holds` say whether it happened.
//!
//! Pools. The grants of a funded root pay for every reservation below it; with no debt (the
//! workload never overruns a funded hold nor settles it late), what the grants have left is
//! `funds − spent` of the root and what they can fund `funds − spent − held`, so a pool is
//! replayed like a cap whose amount is the sum of the grants added.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Answer, Args, Event, Expiry, Kind, Part, Window};
pub use crate::verdict::{Verdict, EVIDENCE_MAX};

/// Candidate positions tried for one read before it is left unchecked.
pub const READ_CANDIDATES_MAX: usize = 4096;
/// How much earlier than invoke time + TTL (harness clock) a hold may expire: the leader's
/// timestamps and the harness clock come from one machine, but not from one clock. Clock
/// faults add how far the grants show the leader's clock ahead ([`leader_ahead_ns`]).
pub const EXPIRY_SLACK_NS: u64 = 250_000_000;
/// How long after it is due (answer time + TTL) a hold must have expired when the final reads
/// come: the leader ticks every second.
pub const EXPIRY_DUE_NS: u64 = 2_000_000_000;
/// A rank after every entry of the run and before the final reads.
const END_RANK: u64 = u64::MAX / 8;

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
    /// When the request was first sent (ms since the epoch, the harness's wall clock).
    pub sent_at_ms: Option<u64>,
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
                        sent_at_ms: e.sent_at_ms,
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
    /// Roots with a funded currency: each is its subtree's pool.
    funded: HashSet<usize>,
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

    /// The funded root whose grants pay for reservations at `path`, if any.
    pub fn pool_of(&self, path: &str) -> Option<usize> {
        let root = path.split('/').next()?;
        self.get(root).filter(|r| self.funded.contains(r))
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
    deltas: Deltas,
    /// A cap set on a node, in a window.
    cap: Option<(usize, Window, u64)>,
    /// A granted reservation's id: reservation ids follow the apply order.
    reservation_id: Option<u64>,
    /// When the applying answer arrived (u64::MAX if unknown), and when its request id was
    /// first sent.
    answered_ns: u64,
    first_invoke_ns: u64,
    /// Overrun charged by a settle (for the final cap check).
    overrun: Option<(usize, u64)>,
    /// The hold this expiry released (expiries only).
    expires: Option<u64>,
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
    /// Funded roots: what the grants have left (`funds - spent`) and what they can still fund
    /// (`funds - spent - held`).
    left: Range,
    avail: Range,
    /// Per window: the cap's amount.
    caps: Vec<(Window, Range)>,
    /// The tightest cap (the least of every window's); None: no cap (unlimited).
    cap: Option<Range>,
}

impl NodeRanges {
    fn add(&mut self, certain: bool, d: &Delta) {
        self.spent.add(certain, d.spent);
        self.held.add(certain, d.held);
        self.usage.add(certain, d.spent + d.held);
        self.left.add(certain, d.funds - d.spent);
        self.avail.add(certain, d.funds - d.spent - d.held);
    }
}

/// The replay: every application, with prefix sums over the exact ones in rank order.
struct Replay {
    tree: Tree,
    apps: Vec<Application>,
    /// Indices into `apps` of exact applications without a cap, sorted by rank.
    exact: Vec<usize>,
    exact_ranks: Vec<u64>,
    /// cum[i * nodes + n]: the sums of the first i exact applications' deltas at node n.
    cum: Vec<Delta>,
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
        let mut cum = vec![Delta::default(); (exact.len() + 1) * nodes];
        for (k, &i) in exact.iter().enumerate() {
            for n in 0..nodes {
                cum[(k + 1) * nodes + n] = cum[k * nodes + n];
            }
            for d in &apps[i].deltas {
                let c = &mut cum[(k + 1) * nodes + d.node];
                c.spent += d.spent;
                c.held += d.held;
                c.funds += d.funds;
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
            r.add(true, &self.cum[certain * nodes + n]);
        }
        let apply = |out: &mut Vec<NodeRanges>, a: &Application, certain: bool| {
            for d in &a.deltas {
                out[d.node].add(certain, d);
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
            let Some((n, window, amount)) = a.cap else {
                continue;
            };
            let amount = amount as i64;
            let place = if a.exact() && a.lo < 2 * q.entry + u64::from(q.after) {
                Place::Before
            } else if a.exact() && a.lo > 2 * q.entry {
                Place::After
            } else {
                self.place(q, i)
            };
            // Caps only ever rise in the workload: the newest certain one is the least.
            let caps = &mut out[n].caps;
            let k = match caps.iter().position(|(w, _)| *w == window) {
                Some(k) => k,
                None => {
                    let unset = Range {
                        lo: i64::MIN,
                        hi: i64::MIN,
                    };
                    caps.push((window, unset));
                    caps.len() - 1
                }
            };
            let cap = &mut caps[k].1;
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
            r.caps.retain(|(_, c)| c.hi != i64::MIN);
            // Every window counts the same spend during a run: the least amount binds.
            r.cap = r.caps.iter().map(|&(_, c)| c).reduce(|a, b| Range {
                lo: a.lo.min(b.lo),
                hi: a.hi.min(b.hi),
            });
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
    holds: HashMap<u64, HoldInfo>,
    /// The expiries the events report, but those of holds the final reads still saw (they
    /// expired after them); None when the events were not read.
    expired: Option<HashMap<u64, Expiry>>,
    /// Grants added: id → (owner, amount).
    grants: HashMap<u64, (usize, u64)>,
    /// False when something the pool model does not replay may have happened (debt, a grant
    /// below a root): the pool checks are then skipped.
    pool_exact: bool,
    /// Requests that may have reserved, or added a grant, with no answer saying so.
    maybe_reserves: usize,
    maybe_grants: usize,
    /// Holds that a certain settle or release closed, and that an indeterminate one may have.
    closed: HashSet<u64>,
    maybe_closed: HashSet<u64>,
    /// The nodes the final `Holds` reads covered.
    listed: HashSet<usize>,
    /// (completion time, rank) of ranked ops in completion order, and the running max rank.
    completed: Vec<(u64, u64)>,
    prefix_max: Vec<u64>,
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

/// What an application changes at one node.
#[derive(Clone, Copy, Debug, Default)]
struct Delta {
    node: usize,
    spent: i64,
    held: i64,
    /// Grants added (funded roots only).
    funds: i64,
}

type Deltas = Vec<Delta>;
/// A node and an amount (an overrun).
type NodeAmount = (usize, u64);
/// A cap set: node, window, amount.
type CapSet = (usize, Window, u64);

/// What the history says about one granted hold.
#[derive(Clone, Debug)]
struct HoldInfo {
    leaf: usize,
    amount: u64,
    ttl_ms: u64,
    /// The first op answered with it; when its request was first sent; when that answer came
    /// (the hold existed by then).
    op: usize,
    first_invoke_ns: u64,
    answered_ns: u64,
    expires_at_ms: Option<u64>,
    /// The grants holding it (None: unknown, a duplicate answered it).
    plan: Option<Vec<Part>>,
    /// How much earlier than its first send + TTL it may expire (harness clock).
    slack_ns: u64,
}

impl HoldInfo {
    /// Harness time before which the hold cannot have expired.
    fn earliest_expiry_ns(&self) -> u64 {
        self.first_invoke_ns
            .saturating_add(self.ttl_ms.saturating_mul(1_000_000))
            .saturating_sub(self.slack_ns)
    }
}

/// How far the leader's clock ran ahead of the harness's, at most (ns): a grant's expiry time
/// less its TTL is the leader's time when it applied, which was before its answer came. A clock
/// fault can put the leader ahead; holds then expire that much earlier in real time.
fn leader_ahead_ns(ops: &[Op], holds: &HashMap<u64, HoldInfo>) -> u64 {
    // The harness clock's origin in wall-clock ms: a request's first send is stamped just
    // before its first attempt is invoked.
    let Some(origin_ms) = ops
        .iter()
        .filter_map(|o| Some(o.sent_at_ms? as i128 - (o.invoke_ns / 1_000_000) as i128))
        .max()
    else {
        return 0;
    };
    holds
        .values()
        .filter(|h| h.answered_ns != u64::MAX)
        .filter_map(|h| {
            let applied_ms = h.expires_at_ms?.checked_sub(h.ttl_ms)? as i128;
            let answered_ms = origin_ms + (h.answered_ns / 1_000_000) as i128;
            u64::try_from(applied_ms - answered_ms).ok()
        })
        .max()
        .map_or(0, |ms| ms.saturating_mul(1_000_000))
}

/// What the effects of answers depend on.
struct Known<'a> {
    tree: &'a Tree,
    holds: &'a HashMap<u64, HoldInfo>,
    /// The holds the events say expired (None: the events were not read).
    expired: Option<&'a HashMap<u64, Expiry>>,
}

impl Known<'_> {
    fn along(&self, path: &str, spent: i64, held: i64) -> Deltas {
        self.tree
            .lineage(path)
            .into_iter()
            .map(|node| Delta {
                node,
                spent,
                held,
                funds: 0,
            })
            .collect()
    }

    fn expired(&self, reservation_id: u64) -> bool {
        self.expired
            .is_some_and(|e| e.contains_key(&reservation_id))
    }

    fn funds(&self, node: &str, amount: u64) -> Deltas {
        self.tree
            .get(node)
            .map(|node| Delta {
                node,
                funds: amount as i64,
                ..Delta::default()
            })
            .into_iter()
            .collect()
    }

    /// The most a counter could have changed by, from a request's arguments, when its answer
    /// is unknown.
    fn maybe_deltas(&self, args: &Args) -> (Deltas, Option<CapSet>) {
        match args {
            Args::Reserve { node, max, .. } => (self.along(node, 0, *max as i64), None),
            Args::Charge { node, amount } => (self.along(node, *amount as i64, 0), None),
            Args::Commit {
                reservation_id,
                actual,
            } => match self.holds.get(reservation_id) {
                // An expired hold's settle is late: its amount went back at the expiry.
                Some(h) => {
                    let held = if self.expired(*reservation_id) {
                        0
                    } else {
                        h.amount as i64
                    };
                    (
                        self.along(&self.tree.paths[h.leaf], *actual as i64, -held),
                        None,
                    )
                }
                None => (Vec::new(), None),
            },
            // After an expiry a release is refused; before it, there would be no expiry.
            Args::Release { reservation_id } => match self.holds.get(reservation_id) {
                Some(h) if !self.expired(*reservation_id) => (
                    self.along(&self.tree.paths[h.leaf], 0, -(h.amount as i64)),
                    None,
                ),
                _ => (Vec::new(), None),
            },
            Args::SetLimit {
                node,
                amount,
                window,
            } => (
                Vec::new(),
                self.tree.get(node).map(|n| (n, *window, *amount)),
            ),
            Args::AddGrant { node, amount } => (self.funds(node, *amount), None),
            _ => (Vec::new(), None),
        }
    }

    /// The effect of an applied answer.
    fn answer_deltas(
        &self,
        args: &Args,
        answer: &Answer,
    ) -> Result<(Deltas, Option<CapSet>, Option<NodeAmount>), String> {
        let hold = |rid: &u64| {
            self.holds
                .get(rid)
                .ok_or_else(|| format!("reservation {rid} was never granted in the history"))
        };
        Ok(match (args, answer) {
            (Args::Reserve { node, .. }, Answer::Granted { amount, .. }) => {
                (self.along(node, 0, *amount as i64), None, None)
            }
            (Args::Charge { node, .. }, Answer::Charged { charged, .. }) => {
                (self.along(node, *charged as i64, 0), None, None)
            }
            (Args::Commit { reservation_id, .. }, Answer::Settled { charged, late, .. }) => {
                let h = hold(reservation_id)?;
                // A late settle finds nothing held: the expiry gave the hold back.
                let late = late.unwrap_or_else(|| self.expired(*reservation_id));
                let held = if late { 0 } else { h.amount };
                let overrun = charged.saturating_sub(held);
                (
                    self.along(&self.tree.paths[h.leaf], *charged as i64, -(held as i64)),
                    None,
                    (overrun > 0).then_some((h.leaf, overrun)),
                )
            }
            (Args::Release { reservation_id }, Answer::Released { .. }) => {
                let h = hold(reservation_id)?;
                (
                    self.along(&self.tree.paths[h.leaf], 0, -(h.amount as i64)),
                    None,
                    None,
                )
            }
            (
                Args::SetLimit {
                    node,
                    amount,
                    window,
                },
                Answer::Done,
            ) => (
                Vec::new(),
                self.tree.get(node).map(|n| (n, *window, *amount)),
                None,
            ),
            (Args::AddGrant { node, amount }, Answer::GrantAdded { .. }) => {
                (self.funds(node, *amount), None, None)
            }
            (Args::CreateNode { .. } | Args::Pause { .. }, Answer::Done) => {
                (Vec::new(), None, None)
            }
            (args, answer) => return Err(format!("answer {answer:?} does not fit {args:?}")),
        })
    }
}

/// The answer a duplicate must repeat: what the record keeps.
fn same_outcome(first: &Answer, dup: &Answer) -> bool {
    match (first, dup) {
        (
            Answer::Granted {
                reservation_id: a,
                amount: x,
                ..
            },
            Answer::Granted {
                reservation_id: b,
                amount: y,
                ..
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
        (Answer::Charged { charged: x, .. }, Answer::Charged { charged: y, .. }) => x == y,
        (Answer::GrantAdded { grant_id: a }, Answer::GrantAdded { grant_id: b }) => a == b,
        (Answer::Done, Answer::Done) => true,
        _ => false,
    }
}

impl Analysis {
    fn new(events: &[Event]) -> Analysis {
        let ops = ops(events);
        let mut tree = Tree::default();
        for op in &ops {
            if let Args::CreateNode { path, funded } = &op.args {
                let n = tree.add(path);
                if *funded && !path.contains('/') {
                    tree.funded.insert(n);
                }
            }
        }
        let groups = groups(&ops);
        let first_sent: HashMap<&str, u64> = groups
            .iter()
            .map(|(r, m)| (r.as_str(), ops[m[0]].invoke_ns))
            .collect();
        let mut idempotency = Verdict::new("idempotency");
        let mut harness_errors = Vec::new();
        // Reservations first: commits and releases need their holds. Reservation ids come
        // from every granted answer, fresh or duplicate.
        let mut holds: HashMap<u64, HoldInfo> = HashMap::new();
        let mut grants: HashMap<u64, (usize, u64)> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if op.kind != Kind::Ok {
                continue;
            }
            match (&op.args, &op.answer) {
                (
                    Args::Reserve { node, ttl_ms, .. },
                    Some(Answer::Granted {
                        reservation_id,
                        amount,
                        expires_at_ms,
                        plan,
                    }),
                ) => {
                    let Some(leaf) = tree.get(node) else { continue };
                    let first_invoke_ns = op
                        .request_id
                        .as_deref()
                        .and_then(|r| first_sent.get(r).copied())
                        .unwrap_or(op.invoke_ns)
                        .min(op.invoke_ns);
                    let info = HoldInfo {
                        leaf,
                        amount: *amount,
                        ttl_ms: *ttl_ms,
                        op: i,
                        first_invoke_ns,
                        answered_ns: op.complete_ns,
                        expires_at_ms: *expires_at_ms,
                        plan: plan.clone(),
                        slack_ns: EXPIRY_SLACK_NS,
                    };
                    match holds.get_mut(reservation_id) {
                        None => {
                            holds.insert(*reservation_id, info);
                        }
                        Some(p) if (p.leaf, p.amount) != (leaf, *amount) => {
                            idempotency.violation(format!(
                                "reservation id {reservation_id} granted twice with different \
                                 holds: {} of {} and {} of {}; {}",
                                tree.paths[p.leaf],
                                p.amount,
                                node,
                                amount,
                                op.describe()
                            ));
                        }
                        Some(p) => {
                            p.first_invoke_ns = p.first_invoke_ns.min(info.first_invoke_ns);
                            p.answered_ns = p.answered_ns.min(info.answered_ns);
                            p.plan = p.plan.take().or(info.plan);
                            p.expires_at_ms = p.expires_at_ms.or(info.expires_at_ms);
                        }
                    }
                }
                (Args::AddGrant { node, amount }, Some(Answer::GrantAdded { grant_id })) => {
                    let Some(owner) = tree.get(node) else {
                        continue;
                    };
                    let previous = grants.insert(*grant_id, (owner, *amount));
                    if previous.is_some_and(|p| p != (owner, *amount)) {
                        idempotency.violation(format!(
                            "grant id {grant_id} answered for two grants: {previous:?} and \
                             {:?}; {}",
                            (owner, *amount),
                            op.describe()
                        ));
                    }
                }
                _ => {}
            }
        }
        let ahead_ns = leader_ahead_ns(&ops, &holds);
        for h in holds.values_mut() {
            h.slack_ns = EXPIRY_SLACK_NS.saturating_add(ahead_ns);
        }
        // The final reads: which holds were still open.
        let mut final_holds = HashSet::new();
        let mut listed = HashSet::new();
        let mut final_holds_ns = u64::MAX;
        for op in ops.iter().filter(|o| o.final_phase && o.kind == Kind::Ok) {
            if let (Args::Holds { node }, Some(Answer::Holds { holds })) = (&op.args, &op.answer) {
                if let Some(n) = tree.get(node) {
                    listed.insert(n);
                }
                final_holds.extend(holds.iter().map(|h| h.0));
                final_holds_ns = final_holds_ns.min(op.invoke_ns);
            }
        }
        // The events: every expiry up to the marker, if they were read.
        let expired: Option<HashMap<u64, Expiry>> = ops
            .iter()
            .rev()
            .find_map(|o| match (&o.args, &o.answer, o.kind) {
                (Args::Expiries { .. }, Some(Answer::Expiries { expired }), Kind::Ok) => {
                    Some(expired)
                }
                _ => None,
            })
            .map(|list| {
                let mut out = HashMap::new();
                for e in list {
                    if out.insert(e.reservation_id, e.clone()).is_some() {
                        idempotency.violation(format!(
                            "hold {} expired twice (events at log indices {} and more)",
                            e.reservation_id, e.log_index
                        ));
                    }
                }
                // Still listed by the final reads: it expired after them.
                out.retain(|rid, _| !final_holds.contains(rid));
                out
            });
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
        let known = Known {
            tree: &tree,
            holds: &holds,
            expired: expired.as_ref(),
        };
        // Without events, a settle may have found its hold expired, which gave the hold back
        // earlier than the settle: its position floats from the earliest expiry on.
        let may_have_expired = |args: &Args, lo: u64| -> u64 {
            match (args, &expired) {
                (Args::Commit { reservation_id, .. }, None) => holds
                    .get(reservation_id)
                    .map_or(lo, |h| lo.min(lower_bound(h.earliest_expiry_ns()) + 1)),
                _ => lo,
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
                match known.answer_deltas(&op.args, answer) {
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
                            expires: None,
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
                let lo = may_have_expired(&op.args, lo);
                match known.answer_deltas(&op.args, answer) {
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
                        expires: None,
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
            let (deltas, cap) = known.maybe_deltas(&ops[last].args);
            apps.push(Application {
                op: last,
                lo: may_have_expired(&ops[last].args, lo),
                hi: u64::MAX,
                maybe: true,
                deltas,
                cap,
                reservation_id: None,
                answered_ns: u64::MAX,
                first_invoke_ns: first_invoke,
                overrun: None,
                expires: None,
            });
        }
        let mut maybe_reserves = 0;
        let mut maybe_grants = 0;
        let mut closed = HashSet::new();
        let mut maybe_closed = HashSet::new();
        for app in &apps {
            match (&ops[app.op].args, app.maybe) {
                (Args::Reserve { .. }, true) => maybe_reserves += 1,
                (Args::AddGrant { .. }, true) => maybe_grants += 1,
                (Args::Commit { reservation_id, .. } | Args::Release { reservation_id }, m) => {
                    if m {
                        maybe_closed.insert(*reservation_id);
                    } else {
                        closed.insert(*reservation_id);
                    }
                }
                _ => {}
            }
        }
        // The expiries.
        let expiry = |h: &HoldInfo, rid: u64, lo: u64, hi: u64, maybe: bool| Application {
            op: h.op,
            lo,
            hi,
            maybe,
            deltas: known.along(&tree.paths[h.leaf], 0, -(h.amount as i64)),
            cap: None,
            reservation_id: None,
            answered_ns: u64::MAX,
            first_invoke_ns: h.earliest_expiry_ns(),
            overrun: None,
            expires: Some(rid),
        };
        match &expired {
            Some(events) => {
                // Unknown reservation ids are reported by `check_expiries`.
                for e in events.values() {
                    if let Some(h) = holds.get(&e.reservation_id) {
                        let rank = 2 * e.log_index;
                        apps.push(expiry(h, e.reservation_id, rank, rank, false));
                    }
                }
            }
            None => {
                // Holds the answers say expired: a late settle (before it), a release refused
                // because of it (before its answer).
                let mut certain: HashMap<u64, u64> = HashMap::new();
                for op in ops.iter().filter(|o| !o.final_phase) {
                    match (&op.args, &op.answer, op.kind) {
                        (
                            Args::Commit { reservation_id, .. },
                            Some(Answer::Settled {
                                late: Some(true), ..
                            }),
                            Kind::Ok,
                        ) if !op.duplicate => {
                            let rank = 2 * op.log_index.unwrap_or(0);
                            certain.insert(*reservation_id, rank);
                        }
                        (Args::Release { reservation_id }, _, Kind::Fail)
                            if refused_as_expired(op) =>
                        {
                            certain.entry(*reservation_id).or_insert(END_RANK);
                        }
                        _ => {}
                    }
                }
                for (&rid, h) in &holds {
                    let lo = lower_bound(h.earliest_expiry_ns()) + 1;
                    if let Some(&hi) = certain.get(&rid) {
                        apps.push(expiry(h, rid, lo.min(hi), hi, false));
                        continue;
                    }
                    // Gone by the final reads: expired, unless a settle or release closed it.
                    // A hold that could not have expired yet is left to the lost-ack check.
                    if closed.contains(&rid) || h.earliest_expiry_ns() >= final_holds_ns {
                        continue;
                    }
                    if listed.contains(&h.leaf) {
                        if !final_holds.contains(&rid) {
                            let maybe = maybe_closed.contains(&rid);
                            apps.push(expiry(h, rid, lo, END_RANK, maybe));
                        }
                    } else {
                        apps.push(expiry(h, rid, lo, u64::MAX, true));
                    }
                }
            }
        }
        let pool_exact = pool_exact(&ops, &tree, &holds, expired.as_ref());
        Analysis {
            ops,
            replay: Replay::build(tree, apps),
            app_of_op,
            holds,
            expired,
            grants,
            pool_exact,
            maybe_reserves,
            maybe_grants,
            closed,
            maybe_closed,
            listed,
            completed,
            prefix_max,
            idempotency,
            harness_errors,
        }
    }

    /// The highest rank of an op that completed before harness time `t`.
    fn rank_before(&self, t: u64) -> u64 {
        let n = self.completed.partition_point(|&(c, _)| c < t);
        if n == 0 {
            0
        } else {
            self.prefix_max[n - 1]
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

/// A release refused because its hold had expired (FAILED_PRECONDITION, "... expired ...").
fn refused_as_expired(op: &Op) -> bool {
    op.kind == Kind::Fail
        && op
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("FailedPrecondition") && e.contains("expired"))
}

/// True unless something the pool model does not replay may have happened: a grant owned by
/// a node other than a funded root, or debt (a funded settle above its hold or after its
/// expiry, unless its answer says it left none).
fn pool_exact(
    ops: &[Op],
    tree: &Tree,
    holds: &HashMap<u64, HoldInfo>,
    expired: Option<&HashMap<u64, Expiry>>,
) -> bool {
    ops.iter()
        .filter(|o| !o.final_phase)
        .all(|op| match &op.args {
            Args::AddGrant { node, .. } => tree.get(node).is_some_and(|n| tree.funded.contains(&n)),
            Args::Commit {
                reservation_id,
                actual,
            } => {
                let Some(h) = holds.get(reservation_id) else {
                    return true;
                };
                if tree.pool_of(&tree.paths[h.leaf]).is_none() || op.kind == Kind::Fail {
                    return true;
                }
                match &op.answer {
                    Some(Answer::Settled { debt: Some(d), .. }) => *d == 0,
                    _ => {
                        let may_be_late = match expired {
                            Some(e) => e.contains_key(reservation_id),
                            None => h.earliest_expiry_ns() < op.complete_ns,
                        };
                        *actual <= h.amount && !may_be_late
                    }
                }
            }
            Args::Charge { .. } => !matches!(
                &op.answer,
                Some(Answer::Charged { debt: Some(d), .. }) if *d > 0
            ),
            _ => true,
        })
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
    // A request is one operation from its first attempt on: a retry may be answered with
    // what an earlier attempt was decided at (a denial the leader repeats), so it is invoked
    // when the first attempt was.
    let mut first_invoke: HashMap<&str, u64> = HashMap::new();
    for op in ops {
        if let Some(rid) = op.request_id.as_deref() {
            let t = first_invoke.entry(rid).or_insert(op.invoke_ns);
            *t = (*t).min(op.invoke_ns);
        }
    }
    let invoked = |op: &Op| {
        op.request_id
            .as_deref()
            .and_then(|rid| first_invoke.get(rid).copied())
            .unwrap_or(op.invoke_ns)
    };
    let mut ranked: Vec<(usize, u64)> = (0..ops.len())
        .filter(|&i| ops[i].kind == Kind::Ok && !ops[i].final_phase)
        .filter_map(|i| rank_of(&ops[i]).map(|r| (i, r)))
        .collect();
    let mut by_complete = ranked.clone();
    by_complete.sort_by_key(|&(i, _)| ops[i].complete_ns);
    ranked.sort_by_key(|&(i, _)| invoked(&ops[i]));
    let mut next = 0;
    let mut best: Option<(usize, u64)> = None;
    for &(b, rank_b) in &ranked {
        while next < by_complete.len() && ops[by_complete[next].0].complete_ns < invoked(&ops[b]) {
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
                if let (Some(h), Answer::Released { amount, .. }) =
                    (a.holds.get(reservation_id), answer)
                {
                    let h = h.amount;
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
        // The pool that pays here, when the model replays it.
        let pool = tree.pool_of(node);
        let exact_pool = pool.filter(|_| a.pool_exact);
        match answer {
            Answer::Granted { amount: g, .. } | Answer::Charged { charged: g, .. } => {
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
                if let Some(p) = exact_pool {
                    let avail = ranges[p].avail;
                    room = room.min(avail.lo);
                    if avail.hi < *g as i64 {
                        overspend.violation(format!(
                            "the grants of {} could fund at most {} but {g} was granted (I2): \
                             {}",
                            tree.paths[p],
                            avail.hi,
                            op.describe()
                        ));
                    }
                } else if pool.is_some() {
                    // An unreplayed pool: any grant below the caps may be all it had.
                    room = i64::MIN;
                }
                if *g < max && (*g as i64) < room.min(max as i64) {
                    lin.violation(format!(
                        "granted {g} although at least {} was free on the whole path: {}",
                        room.min(max as i64),
                        op.describe()
                    ));
                }
            }
            Answer::Denied { rule, .. } => {
                lin.checked += 1;
                let by_cap = || {
                    lineage.iter().any(|&n| {
                        let r = &ranges[n];
                        r.cap.is_some_and(|cap| r.usage.hi + min as i64 > cap.lo)
                    })
                };
                // In some order the grants could fund less than the least asked.
                let by_pool = || match pool {
                    Some(p) => !a.pool_exact || ranges[p].avail.lo < min as i64,
                    None => false,
                };
                let justified = match rule.as_deref() {
                    None => by_cap() || by_pool(),
                    Some("cap") => by_cap(),
                    Some("funding") => by_pool(),
                    // Nothing in the workload pauses, closes or rate-limits.
                    Some(_) => false,
                };
                if !justified {
                    let why: Vec<String> = lineage
                        .iter()
                        .map(|&n| {
                            let r = &ranges[n];
                            let funds = if pool == Some(n) {
                                format!(", grants able to fund at least {}", r.avail.lo)
                            } else {
                                String::new()
                            };
                            format!(
                                "{}: used at most {} of a cap of at least {:?}{funds}",
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
    let Some(hold) = a.holds.get(&reservation_id) else {
        return;
    };
    if let Some(Answer::Settled {
        charged,
        released,
        overrun,
        late,
        ..
    }) = &op.answer
    {
        // A late settle is charged in full, with nothing held to release.
        let h = if *late == Some(true) { 0 } else { hold.amount };
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
        window,
        debt,
        pool,
    }) = &op.answer
    else {
        return false;
    };
    let r = &a.replay.ranges(&read_query(op, entry))[n];
    r.spent.contains(*spent as i64)
        && r.held.contains(*held as i64)
        && cap_matches(r, *cap, *window)
        // Windows that do not reset during a run count what the account does.
        && limit_spent.is_none_or(|s| s == *spent)
        && limit_held.is_none_or(|h| h == *held)
        && pool_matches(a, n, r, *debt, *pool)
}

/// The cap a read shows is one the model allows for its window (the tightest cap when the
/// read does not say which window it shows).
fn cap_matches(r: &NodeRanges, cap: Option<u64>, window: Option<Window>) -> bool {
    let range = match window {
        Some(w) => r.caps.iter().find(|(x, _)| *x == w).map(|&(_, c)| c),
        None => r.cap,
    };
    match (cap, range) {
        (Some(c), Some(range)) => range.contains(c as i64),
        (None, None) => true,
        _ => false,
    }
}

/// A funded root's grants have what the replay leaves them (`funds - spent` remaining,
/// `held` held), and no node carries debt; unchecked when the pool is not replayed.
fn pool_matches(
    a: &Analysis,
    n: usize,
    r: &NodeRanges,
    debt: Option<u64>,
    pool: Option<(u64, u64)>,
) -> bool {
    if !a.pool_exact {
        return true;
    }
    let is_pool = a.replay.tree.funded.contains(&n);
    let pool_ok = match pool {
        Some((left, held)) => {
            is_pool && r.left.contains(left as i64) && r.held.contains(held as i64)
        }
        // A pool without any grant shows none.
        None => !is_pool || r.left.contains(0),
    };
    pool_ok && debt.is_none_or(|d| d == 0)
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
    // Holds the model says are open, from certain applications: granted, and neither
    // settled, released nor expired.
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut expired: HashSet<u64> = HashSet::new();
    let mut maybe_expired: HashSet<u64> = HashSet::new();
    for app in &a.replay.apps {
        match (app.expires, app.maybe) {
            (Some(rid), false) => {
                expired.insert(rid);
            }
            (Some(rid), true) => {
                maybe_expired.insert(rid);
            }
            (None, false) => {
                if let Some(rid) = app.reservation_id {
                    open.insert(rid, app.op);
                }
            }
            (None, true) => {}
        }
    }
    open.retain(|rid, _| !a.closed.contains(rid) && !expired.contains(rid));
    let mut seen_holds: HashSet<u64> = HashSet::new();
    for op in &finals {
        match (&op.args, &op.answer) {
            (
                Args::Show { node },
                Some(Answer::Account {
                    held,
                    spent,
                    debt,
                    pool,
                    ..
                }),
            ) => {
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
                if a.pool_exact && !pool_matches(a, n, r, *debt, *pool) {
                    conservation.violation(format!(
                        "{node}: the cluster says the grants have {pool:?} (remaining, held) \
                         and the node owes {debt:?}; the replay says remaining {:?}, held {:?}, \
                         no debt",
                        r.left, r.held
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
                    if a.closed.contains(&rid) || expired.contains(&rid) {
                        lost.violation(format!(
                            "hold {rid} at {node} is still open although its settle or release \
                             was acknowledged, or an answer said it expired"
                        ));
                    }
                    let known = a.holds.get(&rid);
                    // Due (at the latest) TTL after its grant was answered; the leader ticks
                    // every second.
                    if let Some(h) = known {
                        let due = h
                            .answered_ns
                            .saturating_add(h.ttl_ms.saturating_mul(1_000_000))
                            .saturating_add(EXPIRY_DUE_NS);
                        conservation.checked += 1;
                        if due < op.invoke_ns {
                            conservation.violation(format!(
                                "hold {rid} at {node} outlived its TTL of {} ms: still open \
                                 {:.3} s after it was due; {}",
                                h.ttl_ms,
                                (op.invoke_ns - due + EXPIRY_DUE_NS) as f64 / 1e9,
                                a.ops[h.op].describe()
                            ));
                        }
                    }
                    if known.is_none_or(|h| h.leaf != n || h.amount != amount)
                        && !open.contains_key(&rid)
                    {
                        if a.maybe_reserves == 0 {
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
    for (rid, &op) in &open {
        if !a.holds.get(rid).is_some_and(|h| a.listed.contains(&h.leaf)) {
            continue;
        }
        if a.maybe_closed.contains(rid) || maybe_expired.contains(rid) {
            lost.unchecked += 1;
            continue;
        }
        lost.checked += 1;
        if !seen_holds.contains(rid) {
            lost.violation(format!(
                "acknowledged reservation {rid} is neither open, settled nor expired in the \
                 final state: {}",
                a.ops[op].describe()
            ));
        }
    }
    check_final_grants(a, &ranges, overspend, lost, conservation, idempotency);
    check_final_retries(a, lost);
}

/// Expiries against the answers: each of a hold the history knows, of its amount, not before
/// its TTL (by the leader's clock and by real time); a late settle, or a release refused as
/// expired, only after one; a hold settled or released in time never expires.
fn check_expiries(a: &Analysis, lin: &mut Verdict, idempotency: &mut Verdict) {
    if let Some(events) = &a.expired {
        let mut events: Vec<&Expiry> = events.values().collect();
        events.sort_by_key(|e| (e.log_index, e.reservation_id));
        for e in events {
            let rid = e.reservation_id;
            let Some(h) = a.holds.get(&rid) else {
                if a.maybe_reserves == 0 {
                    idempotency.violation(format!(
                        "hold {rid} of {} expired at log index {}, but no request was \
                         answered with it (applied without, or beyond, a request)",
                        e.amount, e.log_index
                    ));
                } else {
                    idempotency.unchecked += 1;
                }
                continue;
            };
            lin.checked += 1;
            if e.amount != h.amount {
                lin.violation(format!(
                    "hold {rid} expired with {}, but it held {}: {}",
                    e.amount,
                    h.amount,
                    a.ops[h.op].describe()
                ));
            }
            if let Some(due) = h.expires_at_ms.filter(|&due| e.at_ms < due) {
                lin.violation(format!(
                    "hold {rid} expired at {} ms, before its expiry time {due} ms: {}",
                    e.at_ms,
                    a.ops[h.op].describe()
                ));
            }
            let before = a.rank_before(h.earliest_expiry_ns());
            if 2 * e.log_index <= before {
                lin.violation(format!(
                    "hold {rid} expired at log index {}, but an operation at rank {before} \
                     completed before its TTL could pass: {}",
                    e.log_index,
                    a.ops[h.op].describe()
                ));
            }
        }
    }
    for op in a.ops.iter().filter(|o| !o.final_phase && !o.duplicate) {
        let event = |rid: &u64| a.expired.as_ref().map(|e| e.get(rid));
        match (&op.args, &op.answer, op.kind) {
            (
                Args::Commit { reservation_id, .. },
                Some(Answer::Settled {
                    late: Some(late), ..
                }),
                Kind::Ok,
            ) => {
                let Some(h) = a.holds.get(reservation_id) else {
                    continue;
                };
                lin.checked += 1;
                if *late && op.complete_ns < h.earliest_expiry_ns() {
                    lin.violation(format!(
                        "settled late before the hold's TTL could pass: {}",
                        op.describe()
                    ));
                }
                let index = op.log_index.unwrap_or(0);
                let wrong = match (event(reservation_id), late) {
                    (Some(None), true) => Some("a late settle of a hold that never expired"),
                    (Some(Some(e)), true) if e.log_index > index => {
                        Some("a late settle before its hold expired")
                    }
                    (Some(Some(_)), false) => Some("a hold settled in time, and expired as well"),
                    _ => None,
                };
                if let Some(wrong) = wrong {
                    lin.violation(format!("{wrong}: {}", op.describe()));
                }
            }
            (Args::Release { reservation_id }, Some(Answer::Released { .. }), Kind::Ok) => {
                if let Some(Some(e)) = event(reservation_id) {
                    lin.violation(format!(
                        "a hold released, and expired as well (at log index {}): {}",
                        e.log_index,
                        op.describe()
                    ));
                }
            }
            (Args::Release { reservation_id }, _, Kind::Fail) if refused_as_expired(op) => {
                let Some(h) = a.holds.get(reservation_id) else {
                    continue;
                };
                lin.checked += 1;
                if op.complete_ns < h.earliest_expiry_ns() || event(reservation_id) == Some(None) {
                    lin.violation(format!(
                        "a release refused because the hold expired, but it had not: {}",
                        op.describe()
                    ));
                }
            }
            _ => {}
        }
    }
}

/// What a settle of `actual` pays from the grants holding its hold: each part in order, up to
/// what is left to pay.
fn plan_pays(hold_plan: &[Part], actual: u64) -> Vec<Part> {
    let mut left = actual;
    let mut out = Vec::new();
    for &(g, part) in hold_plan {
        let take = part.min(left);
        left -= take;
        if take > 0 {
            out.push((g, take));
        }
    }
    out
}

/// The grants' side of each answer: a funded hold is held by grants for its whole amount, a
/// settle within its hold pays from the grants that held it (in order), a charge is paid in
/// full, a capped currency names no grant, and no grant pays out more than it was given (I2).
fn check_pools(a: &Analysis, overspend: &mut Verdict, lin: &mut Verdict) {
    let tree = &a.replay.tree;
    let mut paid: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    for (i, op) in a.ops.iter().enumerate() {
        if op.kind != Kind::Ok || op.final_phase || op.duplicate {
            continue;
        }
        let (node, amount, plan, debt) = match (&op.args, &op.answer) {
            (
                Args::Reserve { node, .. },
                Some(Answer::Granted {
                    amount,
                    plan: Some(plan),
                    ..
                }),
            ) => (node.as_str(), *amount, plan, 0),
            (
                Args::Commit {
                    reservation_id,
                    actual,
                },
                Some(Answer::Settled {
                    charged,
                    late,
                    debt,
                    plan: Some(plan),
                    ..
                }),
            ) => {
                let Some(h) = a.holds.get(reservation_id) else {
                    continue;
                };
                if let (Some(hold_plan), Some(false)) = (&h.plan, late) {
                    if *actual <= h.amount && plan_pays(hold_plan, *actual) != *plan {
                        lin.checked += 1;
                        lin.violation(format!(
                            "a settle of {actual} paid {plan:?}, but its hold was held by \
                             {hold_plan:?}: {}",
                            op.describe()
                        ));
                    }
                }
                (
                    tree.paths[h.leaf].as_str(),
                    *charged,
                    plan,
                    debt.unwrap_or(0),
                )
            }
            (
                Args::Charge { node, .. },
                Some(Answer::Charged {
                    charged,
                    debt,
                    plan: Some(plan),
                }),
            ) => {
                if debt.is_some_and(|d| d > 0) {
                    lin.violation(format!(
                        "a charge left debt (a charge is funded in full or denied): {}",
                        op.describe()
                    ));
                }
                (node.as_str(), *charged, plan, debt.unwrap_or(0))
            }
            _ => continue,
        };
        lin.checked += 1;
        let funded = tree.pool_of(node).is_some();
        let covered: u64 = plan.iter().map(|p| p.1).sum::<u64>() + debt;
        if funded && covered != amount {
            lin.violation(format!(
                "grants {plan:?} and debt {debt} do not make up the amount {amount}: {}",
                op.describe()
            ));
        }
        if !funded && !plan.is_empty() {
            lin.violation(format!(
                "grants {plan:?} named in a capped currency: {}",
                op.describe()
            ));
        }
        for &(g, part) in plan {
            if !a.grants.contains_key(&g) && a.maybe_grants == 0 {
                lin.violation(format!(
                    "grant {g} was never added in the history: {}",
                    op.describe()
                ));
            }
            // What a hold sets aside is not paid out.
            if !matches!(op.args, Args::Reserve { .. }) {
                let e = paid.entry(g).or_insert((0, i));
                e.0 += part;
                e.1 = i;
            }
        }
    }
    for (g, (total, last)) in paid {
        let Some(&(owner, amount)) = a.grants.get(&g) else {
            continue;
        };
        overspend.checked += 1;
        if total > amount {
            overspend.violation(format!(
                "grant {g} of {} paid out {total}, more than it was given {amount} (I2); last: \
                 {}",
                tree.paths[owner],
                a.ops[last].describe()
            ));
        }
    }
}

/// Each grant of `pool` replayed from the plans the answers showed: (remaining, held) by
/// grant id; None when an application that touched the pool did not show its plan (a
/// duplicate answer, an indeterminate request).
fn grants_replay(a: &Analysis, pool: usize) -> Option<HashMap<u64, (i64, i64)>> {
    if a.maybe_grants > 0 {
        return None;
    }
    let mut out: HashMap<u64, (i64, i64)> = a
        .grants
        .iter()
        .filter(|(_, &(owner, _))| owner == pool)
        .map(|(&g, &(_, amount))| (g, (amount as i64, 0)))
        .collect();
    let fresh: HashSet<usize> = a.app_of_op.values().copied().collect();
    let hold_plan = |rid: &u64| a.holds.get(rid).and_then(|h| h.plan.as_ref());
    for (k, app) in a.replay.apps.iter().enumerate() {
        if !app.deltas.iter().any(|d| d.node == pool) {
            continue;
        }
        let op = &a.ops[app.op];
        let mut change = |plan: &[Part], remaining: i64, held: i64| {
            for &(g, part) in plan {
                let e = out.entry(g).or_default();
                e.0 += remaining * part as i64;
                e.1 += held * part as i64;
            }
        };
        if let Some(rid) = app.expires {
            change(hold_plan(&rid)?, 0, -1);
            continue;
        }
        if app.maybe || !fresh.contains(&k) {
            if matches!(op.args, Args::AddGrant { .. }) && !app.maybe {
                continue;
            }
            return None;
        }
        match (&op.args, op.answer.as_ref()?) {
            (Args::Reserve { .. }, Answer::Granted { plan, .. }) => change(plan.as_ref()?, 0, 1),
            (Args::Commit { reservation_id, .. }, Answer::Settled { plan, late, .. }) => {
                if *late != Some(true) {
                    change(hold_plan(reservation_id)?, 0, -1);
                }
                change(plan.as_ref()?, -1, 0);
            }
            (Args::Release { reservation_id }, _) => change(hold_plan(reservation_id)?, 0, -1),
            (Args::Charge { .. }, Answer::Charged { plan, .. }) => change(plan.as_ref()?, -1, 0),
            _ => {}
        }
    }
    Some(out)
}

/// The final grants of each funded root: every grant added is there with its amount,
/// `held <= remaining <= amount` (I2), no grant exists that no request added, and the balances
/// equal the replay: in sum (what the root spent and holds), and per grant when every answer
/// that touched them showed its plan.
fn check_final_grants(
    a: &Analysis,
    ranges: &[NodeRanges],
    overspend: &mut Verdict,
    lost: &mut Verdict,
    conservation: &mut Verdict,
    idempotency: &mut Verdict,
) {
    let tree = &a.replay.tree;
    for op in a.ops.iter().filter(|o| o.final_phase && o.kind == Kind::Ok) {
        let (Args::Grants { node }, Some(Answer::Grants { grants })) = (&op.args, &op.answer)
        else {
            continue;
        };
        let Some(n) = tree.get(node) else { continue };
        let mut seen = HashSet::new();
        for v in grants {
            seen.insert(v.id);
            overspend.checked += 1;
            if v.held > v.remaining || v.remaining > v.amount {
                overspend.violation(format!(
                    "{node}: grant {} has amount {}, remaining {}, held {} (I2: held <= \
                     remaining <= amount)",
                    v.id, v.amount, v.remaining, v.held
                ));
            }
            match a.grants.get(&v.id) {
                Some(&(owner, amount)) => {
                    conservation.checked += 1;
                    if owner != n || amount != v.amount {
                        conservation.violation(format!(
                            "{node}: grant {} of {} was added as {amount} at {}",
                            v.id, v.amount, tree.paths[owner]
                        ));
                    }
                }
                None if a.maybe_grants == 0 => idempotency.violation(format!(
                    "{node}: grant {} of {} exists, but no request was answered with it",
                    v.id, v.amount
                )),
                None => idempotency.unchecked += 1,
            }
        }
        let mut added: Vec<u64> = a
            .grants
            .iter()
            .filter(|(_, &(owner, _))| owner == n)
            .map(|(&g, _)| g)
            .collect();
        added.sort_unstable();
        for g in added {
            lost.checked += 1;
            // A grant that never expires is never dropped.
            if !seen.contains(&g) {
                lost.violation(format!("{node}: acknowledged grant {g} is gone"));
            }
        }
        if !a.pool_exact {
            conservation.unchecked += 1;
            continue;
        }
        let left: u64 = grants.iter().map(|v| v.remaining).sum();
        let held: u64 = grants.iter().map(|v| v.held).sum();
        let r = &ranges[n];
        conservation.checked += 1;
        if !r.left.contains(left as i64) || !r.held.contains(held as i64) {
            conservation.violation(format!(
                "{node}: the grants have {left} remaining and {held} held; the replay of the \
                 applied operations says remaining {:?} (grants added less spent), held {:?}",
                r.left, r.held
            ));
        }
        let Some(replay) = grants_replay(a, n) else {
            conservation.unchecked += 1;
            continue;
        };
        for v in grants {
            let expected = replay.get(&v.id).copied().unwrap_or_default();
            conservation.checked += 1;
            if expected != (v.remaining as i64, v.held as i64) {
                conservation.violation(format!(
                    "{node}: grant {} has remaining {}, held {}; the replay of the answers' \
                     plans says {expected:?}",
                    v.id, v.remaining, v.held
                ));
            }
        }
    }
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
    check_expiries(&analysis, &mut lin, &mut idempotency);
    check_pools(&analysis, &mut overspend, &mut lin);
    check_final(
        &analysis,
        &mut overspend,
        &mut lost,
        &mut conservation,
        &mut idempotency,
    );
    let mut out = vec![
        overspend,
        lost,
        idempotency,
        conservation,
        lin,
        crate::wgl::check(events),
    ];
    if let Some(views) = views {
        out.push(check_convergence(views));
    }
    out
}

#[cfg(test)]
mod tests;
