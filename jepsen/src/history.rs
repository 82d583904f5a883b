//! The history: every operation as an `invoke` event followed by one completion (`ok`, `fail`
//! or `info`), stamped with one harness clock (monotonic nanoseconds since the run started),
//! written as JSON lines.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoke,
    /// The cluster answered: the operation took effect as `result` says (a denial is `ok`).
    Ok,
    /// Certainly not applied (the cluster refused it).
    Fail,
    /// Unknown: timed out or unreachable; it may or may not have been applied.
    Info,
}

/// The window of a hard cap. Every kind the workload uses is long enough not to reset inside
/// a run (the run refuses to start across a UTC month boundary), so the checker treats each
/// like a lifetime cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Window {
    #[default]
    Lifetime,
    /// The UTC calendar month.
    Month,
    Sliding {
        ms: u64,
    },
    FirstUse {
        ms: u64,
    },
}

/// TTL of a reservation recorded before reservations carried one: longer than any run.
pub const LEGACY_TTL_MS: u64 = 12 * 60 * 60 * 1000;

fn legacy_ttl() -> u64 {
    LEGACY_TTL_MS
}

/// What an operation asks for. Amounts are minor units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Args {
    /// `min == max` with `exact` for an exact amount.
    Reserve {
        node: String,
        min: u64,
        max: u64,
        exact: bool,
        #[serde(default = "legacy_ttl")]
        ttl_ms: u64,
    },
    Commit {
        reservation_id: u64,
        actual: u64,
    },
    Release {
        reservation_id: u64,
    },
    Charge {
        node: String,
        amount: u64,
    },
    /// A hard cap on `node` in `window` (set up, or raised during the run).
    SetLimit {
        node: String,
        amount: u64,
        #[serde(default)]
        window: Window,
    },
    /// Creates a node (setup only); a root with `funded` has a funded currency.
    CreateNode {
        path: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        funded: bool,
    },
    /// A one-off, never-expiring grant of `amount` owned by `node` (a funded root).
    AddGrant {
        node: String,
        amount: u64,
    },
    /// Pauses a node that nothing spends at: its `Paused` event marks the end of the events
    /// the final phase reads.
    Pause {
        node: String,
    },
    /// A linearizable `Show` of one node.
    Show {
        node: String,
    },
    /// A linearizable `Holds` of one node (holds placed directly on it).
    Holds {
        node: String,
    },
    /// A linearizable `Grants` of one node (the grants it owns).
    Grants {
        node: String,
    },
    /// The `hold_expired` events the cluster emitted, read with `Watch` from the first event
    /// up to the `Paused` event of `marker` (final phase).
    Expiries {
        marker: String,
    },
}

impl Args {
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Args::Show { .. } | Args::Holds { .. } | Args::Grants { .. } | Args::Expiries { .. }
        )
    }
}

/// (grant id, amount): one grant's part of a hold or of a payment.
pub type Part = (u64, u64);

/// One grant as `Grants` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    pub id: u64,
    pub amount: u64,
    pub remaining: u64,
    pub held: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// One `hold_expired` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    pub reservation_id: u64,
    pub node_id: u64,
    pub amount: u64,
    /// The Tick's log entry and its (leader) timestamp.
    pub log_index: u64,
    pub at_ms: u64,
}

/// What the cluster answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Answer {
    Granted {
        reservation_id: u64,
        amount: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<u64>,
        /// The grants holding it (empty in a capped currency); None on a duplicate, whose
        /// record does not keep it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<Vec<Part>>,
    },
    Denied {
        node_id: u64,
        remaining: u64,
        requested: u64,
        /// `cap`, `funding`, `paused`, ... (None in histories recorded before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// `released`, `overrun`, `late`, `debt` and `plan` are unknown (None) on a duplicate.
    Settled {
        reservation_id: u64,
        charged: u64,
        released: Option<u64>,
        overrun: Option<u64>,
        /// The hold had expired: charged in full, nothing released.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        late: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        debt: Option<u64>,
        /// Which grant paid how much.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<Vec<Part>>,
    },
    Released {
        reservation_id: u64,
        amount: u64,
    },
    /// `debt` and `plan` are unknown (None) on a duplicate.
    Charged {
        charged: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        debt: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<Vec<Part>>,
    },
    GrantAdded {
        grant_id: u64,
    },
    Done,
    Account {
        held: u64,
        spent: u64,
        /// The node's first own limit's amount, spent and held (None without a limit).
        cap: Option<u64>,
        limit_spent: Option<u64>,
        limit_held: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<Window>,
        /// Uncovered overrun of the node itself (funded currencies).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        debt: Option<u64>,
        /// Sums of `remaining` and `held` over the grants the node owns (None: it owns none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<(u64, u64)>,
    },
    /// (reservation id, amount) of each open hold placed on the node.
    Holds {
        holds: Vec<(u64, u64)>,
    },
    Grants {
        grants: Vec<GrantView>,
    },
    /// Every `hold_expired` event up to the marker, which was seen.
    Expiries {
        expired: Vec<Expiry>,
    },
}

impl Answer {
    /// True when the answer says the command changed the state.
    pub fn applied(&self) -> bool {
        matches!(
            self,
            Answer::Granted { .. }
                | Answer::Settled { .. }
                | Answer::Released { .. }
                | Answer::Charged { .. }
                | Answer::GrantAdded { .. }
                | Answer::Done
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub t_ns: u64,
    pub kind: Kind,
    /// Unique per invocation.
    pub op: u64,
    /// 0 is the harness itself (setup, final reads); workers count from 1.
    pub worker: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request's first send time (ms since the epoch), reused by every retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<u64>,
    /// Set on invoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Args>,
    /// Set on ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// The Raft log index the command was applied at (ok mutations); for a denial without a
    /// log write, the applied index it was decided at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Set on fail and info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The final phase (after the last heal): reads of everything and retries of every
    /// acknowledged request id. Not part of the replayed workload.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_phase: bool,
}

impl Event {
    pub fn invoke(op: u64, worker: u32, request_id: Option<String>, args: Args) -> Event {
        Event {
            t_ns: 0,
            kind: Kind::Invoke,
            op,
            worker,
            request_id,
            sent_at_ms: None,
            args: Some(args),
            answer: None,
            log_index: None,
            duplicate: false,
            error: None,
            final_phase: false,
        }
    }

    pub fn completion(invoke: &Event, kind: Kind) -> Event {
        Event {
            t_ns: 0,
            kind,
            op: invoke.op,
            worker: invoke.worker,
            request_id: invoke.request_id.clone(),
            sent_at_ms: None,
            args: None,
            answer: None,
            log_index: None,
            duplicate: false,
            error: None,
            final_phase: invoke.final_phase,
        }
    }
}

/// The run's history file and clock. Events are written as they happen.
pub struct Recorder {
    start: Instant,
    next_op: AtomicU64,
    out: Mutex<std::io::BufWriter<std::fs::File>>,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn create(path: &Path, start: Instant) -> std::io::Result<Recorder> {
        let file = std::fs::File::create(path)?;
        Ok(Recorder {
            start,
            next_op: AtomicU64::new(1),
            out: Mutex::new(std::io::BufWriter::new(file)),
            events: Mutex::new(Vec::new()),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn next_op(&self) -> u64 {
        self.next_op.fetch_add(1, Ordering::Relaxed)
    }

    /// Stamps the event with the harness clock and appends it.
    pub fn record(&self, mut event: Event) -> Event {
        let mut out = self.out.lock().expect("history writer");
        // Stamped under the lock, so the file is in time order.
        event.t_ns = self.now_ns();
        let line = serde_json::to_string(&event).expect("an event serializes");
        if let Err(e) = writeln!(out, "{line}") {
            eprintln!("purser-jepsen: cannot write the history: {e}");
        }
        self.events.lock().expect("history").push(event.clone());
        event
    }

    /// Every event recorded so far, in time order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history").clone()
    }

    pub fn flush(&self) {
        let _ = self.out.lock().expect("history writer").flush();
    }
}

pub fn read_history(path: &Path) -> std::io::Result<Vec<Event>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut events = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), n + 1),
            )
        })?;
        events.push(event);
    }
    Ok(events)
}
