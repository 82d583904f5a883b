//! The replicated command: what a client asks for, as it travels through the Raft log.
//! Everything here is plain data; validation happens in [`crate::State::apply`].

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::time::Period;

/// On-disk and on-wire format version of an encoded [`Command`] (first byte of the encoding).
/// 2: the acting token ([`Command::actor`]) and the token commands.
pub const COMMAND_FORMAT_VERSION: u8 = 2;

/// A node named by its id or by its path (`acme/research/alice`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeRef {
    Id(u64),
    Path(String),
}

impl From<&str> for NodeRef {
    fn from(path: &str) -> Self {
        NodeRef::Path(path.to_owned())
    }
}

impl From<u64> for NodeRef {
    fn from(id: u64) -> Self {
        NodeRef::Id(id)
    }
}

/// The client's identity for a mutating request. A retry carries the same `id` and the same
/// `sent_at_ms` (the time of the first attempt), so that it can be recognised and refused
/// once its id may have been forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestMeta {
    pub id: String,
    pub sent_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    /// `None` only for system commands ([`Op::Tick`], [`Op::WebhookDelivered`]) issued by
    /// the leader.
    pub request: Option<RequestMeta>,
    /// The token the command acts for; apply refuses it unless that token may do it
    /// ([`crate::State::authorize_op`]). `None`: a system command, or a member that runs
    /// without authentication (`purser dev --no-auth`) or bootstraps the first token.
    pub actor: Option<u64>,
    pub op: Op,
}

impl Command {
    pub fn new(request_id: impl Into<String>, sent_at_ms: u64, op: Op) -> Self {
        Command {
            request: Some(RequestMeta {
                id: request_id.into(),
                sent_at_ms,
            }),
            actor: None,
            op,
        }
    }

    /// The same command, acting for token `actor`.
    pub fn by(self, actor: Option<u64>) -> Self {
        Command { actor, ..self }
    }

    pub fn tick() -> Self {
        Command {
            request: None,
            actor: None,
            op: Op::Tick,
        }
    }

    /// `[COMMAND_FORMAT_VERSION] ++ bincode(self)`.
    /// The length of [`Command::encode`]'s bytes, counted without writing them (the batcher
    /// sizes entries with it).
    pub fn encoded_len(&self) -> usize {
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(self, &mut size, bincode::config::standard())
            .unwrap_or_else(|e| {
                unreachable!("invariant `commands encode`: counting bytes cannot fail: {e}")
            });
        1 + size.bytes_written
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![COMMAND_FORMAT_VERSION];
        let body =
            bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_else(|e| {
                unreachable!("invariant `commands encode`: plain data into memory cannot fail: {e}")
            });
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| Error::invalid("empty command encoding"))?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(Error::invalid(format!(
                "command format version {version} is not supported (this build reads {COMMAND_FORMAT_VERSION})"
            )));
        }
        let (command, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| Error::invalid(format!("undecodable command: {e}")))?;
        if used != body.len() {
            return Err(Error::invalid("trailing bytes after command"));
        }
        Ok(command)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    CreateNode(CreateNode),
    MoveNode {
        node: NodeRef,
        new_parent: NodeRef,
    },
    CloseNode {
        node: NodeRef,
    },
    PauseNode {
        node: NodeRef,
    },
    ResumeNode {
        node: NodeRef,
    },
    /// Insert or replace the node's limit on `(currency, window)`.
    SetLimit {
        node: NodeRef,
        limit: LimitSpec,
    },
    RemoveLimit {
        node: NodeRef,
        currency: String,
        window: Window,
    },
    /// Insert or replace the node's rate limit on `(key, kind)`.
    SetRateLimit {
        node: NodeRef,
        rate: RateLimitSpec,
    },
    RemoveRateLimit {
        node: NodeRef,
        key: String,
        kind: RateKind,
    },
    AddGrant {
        node: NodeRef,
        grant: GrantSpec,
    },
    /// Insert or replace a role of a root.
    DefineRole {
        root: NodeRef,
        name: String,
        limits: Vec<LimitSpec>,
    },
    RemoveRole {
        root: NodeRef,
        name: String,
    },
    /// Replace the roles of a member node.
    AssignRoles {
        node: NodeRef,
        roles: Vec<String>,
    },
    SetRoleResolution {
        root: NodeRef,
        resolution: RoleResolution,
    },
    SetPrice {
        root: NodeRef,
        price: PriceSpec,
    },
    RemovePrice {
        root: NodeRef,
        provider: String,
        model: String,
        currency: String,
    },
    Reserve(Reserve),
    Settle {
        reservation_id: u64,
        actual: Actual,
    },
    Release {
        reservation_id: u64,
    },
    Charge(Charge),
    SetConfig(ConfigPatch),
    /// Leader-issued: expire holds past their TTL, expire and renew grants that are due.
    Tick,
    /// Subscribe a root's events of `kinds` (`usage`, `monetization`, `balance`,
    /// `governance`, `governance.<kind>`) to POSTs to `url` (`http://host:port/path`), signed
    /// with `secret`. Answers [`crate::Outcome::WebhookAdded`].
    AddWebhook {
        root: NodeRef,
        url: String,
        secret: crate::webhook::Secret,
        kinds: Vec<String>,
    },
    RemoveWebhook {
        id: u64,
    },
    /// Leader-issued (no request id): every event up to `through_index` was delivered to the
    /// webhook (or did not match it). Monotonic: a lower index changes nothing.
    WebhookDelivered {
        id: u64,
        through_index: u64,
    },
    /// A bearer token over `scope` (`None`: the whole cluster) with `access`. The member that
    /// takes the call draws the secret and sends only its SHA-256 here. Without an actor it
    /// creates only the cluster's first token (the bootstrap). Answers
    /// [`crate::Outcome::TokenCreated`].
    CreateToken {
        scope: Option<NodeRef>,
        access: crate::access::Access,
        name: String,
        /// From the command's time; `None`: until revoked.
        expires_in_ms: Option<u64>,
        secret_hash: crate::access::SecretHash,
    },
    /// From this command on, the token authorizes nothing. Revoking twice changes nothing.
    RevokeToken {
        id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CreateNode {
    /// `None` creates a root (a tenant); then `root` must be given.
    pub parent: Option<NodeRef>,
    pub name: String,
    pub kind: String,
    pub tags: Vec<(String, String)>,
    pub root: Option<RootSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RootSpec {
    pub currencies: Vec<CurrencySpec>,
    /// Spend governance is opt-out: unless this is set, every currency of the new root gets a
    /// hard monthly cap of `Config::default_root_cap_major` major units.
    pub no_default_cap: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CurrencySpec {
    pub code: String,
    /// Decimal places of the minor unit: `usd` at scale 6 counts micro-dollars.
    pub scale: u8,
    /// Funded: every reservation must be covered by grants on the path to the root.
    /// Capped: caps only, billing happens elsewhere.
    pub funded: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Window {
    Lifetime,
    Calendar(Period),
    /// Rolling window of `duration_ms`, kept in [`crate::SLIDING_BUCKETS`] buckets.
    Sliding {
        duration_ms: u64,
    },
    /// Starts at the first settle with a non-zero amount and lasts `duration_ms`; the next
    /// consuming settle after it ends starts a new one.
    FirstUse {
        duration_ms: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitMode {
    Hard,
    Soft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnExhausted {
    Deny,
    Pause,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LimitSpec {
    pub currency: String,
    pub amount: i64,
    pub window: Window,
    pub mode: LimitMode,
    /// Percentages 1..=100; empty means the default 50, 75, 100.
    pub thresholds: Vec<u8>,
    pub on_exhausted: OnExhausted,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RateKind {
    /// Requests per period.
    Requests,
    /// Amount of a currency per period (charged at reservation time with the granted amount).
    Cost { currency: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimitSpec {
    /// `*` or a model name (matched against the reservation's `model` attribute).
    pub key: String,
    pub kind: RateKind,
    /// Requests, or minor units, allowed per period; also the burst.
    pub amount: i64,
    pub period_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GrantKind {
    Included,
    Free,
    Promotional,
    Prepaid,
    Commitment,
    OnDemand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rollover {
    /// The unused remainder is forfeited at each renewal.
    None,
    /// Carry the remainder while the balance stays at most N x the allotment.
    CapMultiple(u32),
    /// Carry this percentage (0..=100) of the remainder.
    Percent(u8),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantSpec {
    pub currency: String,
    pub amount: i64,
    /// Lower is drawn first.
    pub priority: u32,
    pub kind: GrantKind,
    /// Defaults to the command's time.
    pub effective_at_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
    /// A recurring grant receives a fresh allotment of `amount` at each UTC period boundary.
    pub recur: Option<Period>,
    pub rollover: Rollover,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoleResolution {
    /// Every role's limits apply (the default).
    MostRestrictive,
    /// A request passes if any one role allows it; a role without a limit in the currency
    /// allows everything.
    MostPermissive,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriceSpec {
    pub provider: String,
    pub model: String,
    pub currency: String,
    /// Minor units of `currency` per 1,000,000 tokens.
    pub input_per_mtok: i64,
    pub output_per_mtok: i64,
    pub cached_input_per_mtok: i64,
    pub reasoning_per_mtok: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenUsage {
    pub provider: String,
    pub model: String,
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

/// Caller-set attribution, carried into usage events and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attributes {
    pub user: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub credential_type: Option<String>,
    pub tags: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Amount {
    Exact(i64),
    /// Grant the largest amount in `min..=max` that passes every check.
    Range {
        min: i64,
        max: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reserve {
    pub node: NodeRef,
    pub currency: String,
    pub amount: Amount,
    pub ttl_ms: u64,
    pub attrs: Attributes,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actual {
    Amount(i64),
    /// Priced through the root's price book in the reservation's currency.
    Tokens(TokenUsage),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Charge {
    pub node: NodeRef,
    pub currency: String,
    pub actual: Actual,
    pub attrs: Attributes,
}

/// Cluster-wide settings; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfigPatch {
    pub depth_max: Option<u8>,
    pub request_retention_ms: Option<u64>,
    pub hold_ttl_ms_min: Option<u64>,
    pub hold_ttl_ms_max: Option<u64>,
    pub default_root_cap_major: Option<u64>,
}
