//! Conversions between the wire messages of [`crate::pb`] and the replicated commands and
//! outcomes of [`purser_core`].
//!
//! Inbound (proto → core) conversions are fallible because proto3 cannot require anything: a
//! missing message or oneof, an enum value this build does not know, or a number too wide for
//! the core type is a [`ConvertError`] (INVALID_ARGUMENT). They check shape only. The rules
//! (name syntax, amount ranges, TTL bounds, ...) stay in `State::apply`, so that there is one
//! rulebook and a request refused here would have been refused there too.
//!
//! Outbound (core → proto) conversions are total, except that a response type accepts only the
//! outcomes its command can produce ([`FromOutcome`]).

use std::fmt;

use purser_core::{
    AccountView, Actual, Amount, Attributes, Charge, Command, ConfigPatch, CreateNode,
    CurrencySpec, Denial, DenyRule, Error, ErrorKind, FundingPart, GrantKind, GrantSpec, GrantView,
    Headroom, HoldView, LimitMode, LimitSpec, LimitView, NodeRef, NodeStatus, NodeView,
    OnExhausted, Op, Outcome, Period, PriceSpec, RateKind, RateLimitSpec, RateLimitView, Recorded,
    RequestMeta, Reservation, Reserve, RoleResolution, Rollover, RootSpec, Settlement, TokenUsage,
    Window,
};

use crate::pb;

// ---- errors ------------------------------------------------------------------------------

/// A request that cannot be turned into a command: the client sent something malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertError {
    /// Dotted path of the offending field, e.g. `limit.window`; empty for the whole message.
    pub field: String,
    pub message: String,
}

impl ConvertError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConvertError {
            field: field.into(),
            message: message.into(),
        }
    }

    fn missing(field: &str) -> Self {
        Self::new(field, "is required")
    }

    /// Prefixes the field path, so that an error deep in a nested message names where it is.
    fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid request: {}", self.message)
        } else {
            write!(f, "invalid request: `{}` {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConvertError {}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// The state machine answered a command with an outcome that its response type cannot carry.
/// Only a server bug produces one, so it maps to INTERNAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnexpectedOutcome {
    pub response: &'static str,
    pub outcome: String,
}

impl UnexpectedOutcome {
    fn new(response: &'static str, outcome: &Outcome) -> Self {
        UnexpectedOutcome {
            response,
            outcome: format!("{outcome:?}"),
        }
    }
}

impl fmt::Display for UnexpectedOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "outcome {} cannot answer with {}",
            self.outcome, self.response
        )
    }
}

impl std::error::Error for UnexpectedOutcome {}

impl From<UnexpectedOutcome> for tonic::Status {
    fn from(e: UnexpectedOutcome) -> Self {
        tonic::Status::internal(e.to_string())
    }
}

/// The one place where a domain error of the state machine becomes a gRPC status code.
pub fn status_from_error(err: &Error) -> tonic::Status {
    let code = match err.kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
    };
    tonic::Status::new(code, err.message.clone())
}

/// The state digest as `StatusResponse.state_digest` carries it: 32 lowercase hex digits, so
/// that digests of different replicas compare as strings.
pub fn digest_hex(digest: u128) -> String {
    format!("{digest:032x}")
}

// ---- inbound helpers ---------------------------------------------------------------------

fn required<T>(value: Option<T>, field: &str) -> Result<T, ConvertError> {
    value.ok_or_else(|| ConvertError::missing(field))
}

/// A required nested message, converted, with errors inside it named under `field`.
fn nested<P, C>(value: Option<P>, field: &str) -> Result<C, ConvertError>
where
    C: TryFrom<P, Error = ConvertError>,
{
    C::try_from(required(value, field)?).map_err(|e| e.within(field))
}

fn node(value: Option<pb::NodeRef>, field: &str) -> Result<NodeRef, ConvertError> {
    nested(value, field)
}

/// Decodes an enum field; values added to the schema after this build are refused rather than
/// guessed at.
fn known<E>(value: i32, field: &str) -> Result<E, ConvertError>
where
    E: TryFrom<i32, Error = prost::UnknownEnumValue>,
{
    E::try_from(value).map_err(|_| ConvertError::new(field, format!("has unknown value {value}")))
}

fn to_u8(value: u32, field: &str) -> Result<u8, ConvertError> {
    u8::try_from(value).map_err(|_| ConvertError::new(field, format!("{value} is above 255")))
}

fn tags(tags: Vec<pb::Tag>) -> Vec<(String, String)> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

fn period(value: i32, field: &str) -> Result<Period, ConvertError> {
    Ok(match known::<pb::Period>(value, field)? {
        pb::Period::Unspecified => return Err(ConvertError::missing(field)),
        pb::Period::Hour => Period::Hour,
        pb::Period::Day => Period::Day,
        pb::Period::Week => Period::Week,
        pb::Period::Month => Period::Month,
        pb::Period::Year => Period::Year,
    })
}

fn limit_mode(value: i32, field: &str) -> Result<LimitMode, ConvertError> {
    Ok(match known::<pb::LimitMode>(value, field)? {
        // A cap whose mode was left out must not silently become alert-only.
        pb::LimitMode::Unspecified | pb::LimitMode::Hard => LimitMode::Hard,
        pb::LimitMode::Soft => LimitMode::Soft,
    })
}

fn on_exhausted(value: i32, field: &str) -> Result<OnExhausted, ConvertError> {
    Ok(match known::<pb::OnExhausted>(value, field)? {
        pb::OnExhausted::Unspecified | pb::OnExhausted::Deny => OnExhausted::Deny,
        pb::OnExhausted::Pause => OnExhausted::Pause,
    })
}

fn grant_kind(value: i32, field: &str) -> Result<GrantKind, ConvertError> {
    Ok(match known::<pb::GrantKind>(value, field)? {
        pb::GrantKind::Unspecified => return Err(ConvertError::missing(field)),
        pb::GrantKind::Included => GrantKind::Included,
        pb::GrantKind::Free => GrantKind::Free,
        pb::GrantKind::Promotional => GrantKind::Promotional,
        pb::GrantKind::Prepaid => GrantKind::Prepaid,
        pb::GrantKind::Commitment => GrantKind::Commitment,
        pb::GrantKind::OnDemand => GrantKind::OnDemand,
    })
}

fn role_resolution(value: i32, field: &str) -> Result<RoleResolution, ConvertError> {
    Ok(match known::<pb::RoleResolution>(value, field)? {
        pb::RoleResolution::Unspecified => return Err(ConvertError::missing(field)),
        pb::RoleResolution::MostRestrictive => RoleResolution::MostRestrictive,
        pb::RoleResolution::MostPermissive => RoleResolution::MostPermissive,
    })
}

// ---- inbound: building blocks ------------------------------------------------------------

impl TryFrom<pb::NodeRef> for NodeRef {
    type Error = ConvertError;
    fn try_from(r: pb::NodeRef) -> Result<Self, ConvertError> {
        match r.node {
            Some(pb::node_ref::Node::Id(id)) => Ok(NodeRef::Id(id)),
            Some(pb::node_ref::Node::Path(path)) => Ok(NodeRef::Path(path)),
            None => Err(ConvertError::new("", "needs `id` or `path`")),
        }
    }
}

impl TryFrom<pb::Window> for Window {
    type Error = ConvertError;
    fn try_from(w: pb::Window) -> Result<Self, ConvertError> {
        use pb::window::Kind;
        Ok(match w.kind {
            Some(Kind::Lifetime(_)) => Window::Lifetime,
            Some(Kind::Calendar(p)) => Window::Calendar(period(p, "calendar")?),
            Some(Kind::SlidingMs(duration_ms)) => Window::Sliding { duration_ms },
            Some(Kind::FirstUseMs(duration_ms)) => Window::FirstUse { duration_ms },
            None => {
                return Err(ConvertError::new(
                    "",
                    "needs one of `lifetime`, `calendar`, `sliding_ms`, `first_use_ms`",
                ))
            }
        })
    }
}

impl TryFrom<pb::LimitSpec> for LimitSpec {
    type Error = ConvertError;
    fn try_from(l: pb::LimitSpec) -> Result<Self, ConvertError> {
        Ok(LimitSpec {
            currency: l.currency,
            amount: l.amount,
            window: nested(l.window, "window")?,
            mode: limit_mode(l.mode, "mode")?,
            thresholds: l
                .thresholds
                .into_iter()
                .map(|p| to_u8(p, "thresholds"))
                .collect::<Result<_, _>>()?,
            on_exhausted: on_exhausted(l.on_exhausted, "on_exhausted")?,
        })
    }
}

impl TryFrom<pb::RateKind> for RateKind {
    type Error = ConvertError;
    fn try_from(k: pb::RateKind) -> Result<Self, ConvertError> {
        match k.kind {
            Some(pb::rate_kind::Kind::Requests(_)) => Ok(RateKind::Requests),
            Some(pb::rate_kind::Kind::CostCurrency(currency)) => Ok(RateKind::Cost { currency }),
            None => Err(ConvertError::new("", "needs `requests` or `cost_currency`")),
        }
    }
}

impl TryFrom<pb::RateLimitSpec> for RateLimitSpec {
    type Error = ConvertError;
    fn try_from(r: pb::RateLimitSpec) -> Result<Self, ConvertError> {
        Ok(RateLimitSpec {
            key: r.key,
            kind: nested(r.kind, "kind")?,
            amount: r.amount,
            period_ms: r.period_ms,
        })
    }
}

impl TryFrom<pb::Rollover> for Rollover {
    type Error = ConvertError;
    fn try_from(r: pb::Rollover) -> Result<Self, ConvertError> {
        match r.kind {
            Some(pb::rollover::Kind::None(_)) => Ok(Rollover::None),
            Some(pb::rollover::Kind::CapMultiple(n)) => Ok(Rollover::CapMultiple(n)),
            Some(pb::rollover::Kind::Percent(p)) => Ok(Rollover::Percent(to_u8(p, "percent")?)),
            None => Err(ConvertError::new(
                "",
                "needs one of `none`, `cap_multiple`, `percent`",
            )),
        }
    }
}

impl TryFrom<pb::GrantSpec> for GrantSpec {
    type Error = ConvertError;
    fn try_from(g: pb::GrantSpec) -> Result<Self, ConvertError> {
        Ok(GrantSpec {
            currency: g.currency,
            amount: g.amount,
            priority: g.priority,
            kind: grant_kind(g.kind, "kind")?,
            effective_at_ms: g.effective_at_ms,
            expires_at_ms: g.expires_at_ms,
            recur: g.recur.map(|p| period(p, "recur")).transpose()?,
            // Most grants are one-off, so an absent rollover is the common case, not an error.
            rollover: match g.rollover {
                Some(r) => Rollover::try_from(r).map_err(|e| e.within("rollover"))?,
                None => Rollover::None,
            },
        })
    }
}

impl From<pb::PriceSpec> for PriceSpec {
    fn from(p: pb::PriceSpec) -> Self {
        PriceSpec {
            provider: p.provider,
            model: p.model,
            currency: p.currency,
            input_per_mtok: p.input_per_mtok,
            output_per_mtok: p.output_per_mtok,
            cached_input_per_mtok: p.cached_input_per_mtok,
            reasoning_per_mtok: p.reasoning_per_mtok,
        }
    }
}

impl From<pb::TokenUsage> for TokenUsage {
    fn from(t: pb::TokenUsage) -> Self {
        TokenUsage {
            provider: t.provider,
            model: t.model,
            input: t.input,
            output: t.output,
            cached_input: t.cached_input,
            reasoning: t.reasoning,
        }
    }
}

impl From<pb::Attributes> for Attributes {
    fn from(a: pb::Attributes) -> Self {
        Attributes {
            user: a.user,
            model: a.model,
            provider: a.provider,
            credential_type: a.credential_type,
            tags: tags(a.tags),
        }
    }
}

impl TryFrom<pb::CurrencySpec> for CurrencySpec {
    type Error = ConvertError;
    fn try_from(c: pb::CurrencySpec) -> Result<Self, ConvertError> {
        Ok(CurrencySpec {
            code: c.code,
            scale: to_u8(c.scale, "scale")?,
            funded: c.funded,
        })
    }
}

impl TryFrom<pb::RootSpec> for RootSpec {
    type Error = ConvertError;
    fn try_from(r: pb::RootSpec) -> Result<Self, ConvertError> {
        Ok(RootSpec {
            currencies: r
                .currencies
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    CurrencySpec::try_from(c).map_err(|e| e.within(&format!("currencies[{i}]")))
                })
                .collect::<Result<_, _>>()?,
            no_default_cap: r.no_default_cap,
        })
    }
}

fn attributes(a: Option<pb::Attributes>) -> Attributes {
    a.map(Attributes::from).unwrap_or_default()
}

fn limits(specs: Vec<pb::LimitSpec>) -> Result<Vec<LimitSpec>, ConvertError> {
    specs
        .into_iter()
        .enumerate()
        .map(|(i, l)| LimitSpec::try_from(l).map_err(|e| e.within(&format!("limits[{i}]"))))
        .collect()
}

// ---- inbound: requests -------------------------------------------------------------------

impl TryFrom<pb::ReserveRequest> for Reserve {
    type Error = ConvertError;
    fn try_from(r: pb::ReserveRequest) -> Result<Self, ConvertError> {
        use pb::reserve_request::Amount as A;
        Ok(Reserve {
            node: node(r.node, "node")?,
            currency: r.currency,
            amount: match r.amount {
                Some(A::Exact(a)) => Amount::Exact(a),
                Some(A::Range(range)) => Amount::Range {
                    min: range.min,
                    max: range.max,
                },
                None => return Err(ConvertError::new("amount", "needs `exact` or `range`")),
            },
            ttl_ms: r.ttl_ms,
            attrs: attributes(r.attributes),
        })
    }
}

impl TryFrom<pb::ReserveRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::ReserveRequest) -> Result<Self, ConvertError> {
        Ok(Op::Reserve(r.try_into()?))
    }
}

impl TryFrom<pb::CommitRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::CommitRequest) -> Result<Self, ConvertError> {
        use pb::commit_request::Actual as A;
        let actual = match r.actual {
            Some(A::Amount(a)) => Actual::Amount(a),
            Some(A::Tokens(t)) => Actual::Tokens(t.into()),
            None => return Err(ConvertError::new("actual", "needs `amount` or `tokens`")),
        };
        Ok(Op::Settle {
            reservation_id: r.reservation_id,
            actual,
        })
    }
}

impl TryFrom<pb::ReleaseRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::ReleaseRequest) -> Result<Self, ConvertError> {
        Ok(Op::Release {
            reservation_id: r.reservation_id,
        })
    }
}

impl TryFrom<pb::ChargeRequest> for Charge {
    type Error = ConvertError;
    fn try_from(r: pb::ChargeRequest) -> Result<Self, ConvertError> {
        use pb::charge_request::Actual as A;
        Ok(Charge {
            node: node(r.node, "node")?,
            currency: r.currency,
            actual: match r.actual {
                Some(A::Amount(a)) => Actual::Amount(a),
                Some(A::Tokens(t)) => Actual::Tokens(t.into()),
                None => return Err(ConvertError::new("actual", "needs `amount` or `tokens`")),
            },
            attrs: attributes(r.attributes),
        })
    }
}

impl TryFrom<pb::ChargeRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::ChargeRequest) -> Result<Self, ConvertError> {
        Ok(Op::Charge(r.try_into()?))
    }
}

impl TryFrom<pb::CreateNodeRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::CreateNodeRequest) -> Result<Self, ConvertError> {
        let parent = r.parent.map(NodeRef::try_from).transpose();
        Ok(Op::CreateNode(CreateNode {
            parent: parent.map_err(|e| e.within("parent"))?,
            name: r.name,
            kind: r.kind,
            tags: tags(r.tags),
            root: r
                .root
                .map(RootSpec::try_from)
                .transpose()
                .map_err(|e| e.within("root"))?,
        }))
    }
}

impl TryFrom<pb::MoveNodeRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::MoveNodeRequest) -> Result<Self, ConvertError> {
        Ok(Op::MoveNode {
            node: node(r.node, "node")?,
            new_parent: node(r.new_parent, "new_parent")?,
        })
    }
}

impl TryFrom<pb::CloseNodeRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::CloseNodeRequest) -> Result<Self, ConvertError> {
        Ok(Op::CloseNode {
            node: node(r.node, "node")?,
        })
    }
}

impl TryFrom<pb::PauseNodeRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::PauseNodeRequest) -> Result<Self, ConvertError> {
        Ok(Op::PauseNode {
            node: node(r.node, "node")?,
        })
    }
}

impl TryFrom<pb::ResumeNodeRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::ResumeNodeRequest) -> Result<Self, ConvertError> {
        Ok(Op::ResumeNode {
            node: node(r.node, "node")?,
        })
    }
}

impl TryFrom<pb::SetLimitRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::SetLimitRequest) -> Result<Self, ConvertError> {
        Ok(Op::SetLimit {
            node: node(r.node, "node")?,
            limit: nested(r.limit, "limit")?,
        })
    }
}

impl TryFrom<pb::RemoveLimitRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::RemoveLimitRequest) -> Result<Self, ConvertError> {
        Ok(Op::RemoveLimit {
            node: node(r.node, "node")?,
            currency: r.currency,
            window: nested(r.window, "window")?,
        })
    }
}

impl TryFrom<pb::SetRateLimitRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::SetRateLimitRequest) -> Result<Self, ConvertError> {
        Ok(Op::SetRateLimit {
            node: node(r.node, "node")?,
            rate: nested(r.rate, "rate")?,
        })
    }
}

impl TryFrom<pb::RemoveRateLimitRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::RemoveRateLimitRequest) -> Result<Self, ConvertError> {
        Ok(Op::RemoveRateLimit {
            node: node(r.node, "node")?,
            key: r.key,
            kind: nested(r.kind, "kind")?,
        })
    }
}

impl TryFrom<pb::AddGrantRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::AddGrantRequest) -> Result<Self, ConvertError> {
        Ok(Op::AddGrant {
            node: node(r.node, "node")?,
            grant: nested(r.grant, "grant")?,
        })
    }
}

impl TryFrom<pb::DefineRoleRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::DefineRoleRequest) -> Result<Self, ConvertError> {
        Ok(Op::DefineRole {
            root: node(r.root, "root")?,
            name: r.name,
            limits: limits(r.limits)?,
        })
    }
}

impl TryFrom<pb::RemoveRoleRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::RemoveRoleRequest) -> Result<Self, ConvertError> {
        Ok(Op::RemoveRole {
            root: node(r.root, "root")?,
            name: r.name,
        })
    }
}

impl TryFrom<pb::AssignRolesRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::AssignRolesRequest) -> Result<Self, ConvertError> {
        Ok(Op::AssignRoles {
            node: node(r.node, "node")?,
            roles: r.roles,
        })
    }
}

impl TryFrom<pb::SetRoleResolutionRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::SetRoleResolutionRequest) -> Result<Self, ConvertError> {
        Ok(Op::SetRoleResolution {
            root: node(r.root, "root")?,
            resolution: role_resolution(r.resolution, "resolution")?,
        })
    }
}

impl TryFrom<pb::SetPriceRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::SetPriceRequest) -> Result<Self, ConvertError> {
        Ok(Op::SetPrice {
            root: node(r.root, "root")?,
            price: required(r.price, "price")?.into(),
        })
    }
}

impl TryFrom<pb::RemovePriceRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::RemovePriceRequest) -> Result<Self, ConvertError> {
        Ok(Op::RemovePrice {
            root: node(r.root, "root")?,
            provider: r.provider,
            model: r.model,
            currency: r.currency,
        })
    }
}

impl TryFrom<pb::SetConfigRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::SetConfigRequest) -> Result<Self, ConvertError> {
        Ok(Op::SetConfig(ConfigPatch {
            depth_max: r.depth_max.map(|d| to_u8(d, "depth_max")).transpose()?,
            request_retention_ms: r.request_retention_ms,
            hold_ttl_ms_min: r.hold_ttl_ms_min,
            hold_ttl_ms_max: r.hold_ttl_ms_max,
            default_root_cap_major: r.default_root_cap_major,
        }))
    }
}

/// A request that becomes a replicated [`Command`]: every mutation of the Budget and Admin
/// services.
pub trait MutatingRequest: TryInto<Op, Error = ConvertError> + Sized {
    fn request_id(&self) -> &str;
    fn sent_at_ms(&self) -> u64;

    /// The command to propose. `sent_at_ms` is required: every attempt must carry the time
    /// of the first one, so that a retry older than the request retention is refused as too
    /// old instead of being applied again once its id is forgotten.
    fn into_command(self) -> Result<Command, ConvertError> {
        if self.request_id().is_empty() {
            return Err(ConvertError::new(
                "request_id",
                "is required: a client-chosen id, reused on every retry",
            ));
        }
        if self.sent_at_ms() == 0 {
            return Err(ConvertError::new(
                "sent_at_ms",
                "is required: the first attempt's time in ms since the Unix epoch, reused on every retry",
            ));
        }
        let request = RequestMeta {
            id: self.request_id().to_owned(),
            sent_at_ms: self.sent_at_ms(),
        };
        Ok(Command {
            request: Some(request),
            actor: None,
            op: self.try_into()?,
        })
    }
}

macro_rules! mutating_requests {
    ($($request:ident),* $(,)?) => {
        $(impl MutatingRequest for pb::$request {
            fn request_id(&self) -> &str {
                &self.request_id
            }
            fn sent_at_ms(&self) -> u64 {
                self.sent_at_ms
            }
        })*
    };
}

mutating_requests!(
    ReserveRequest,
    CommitRequest,
    ReleaseRequest,
    ChargeRequest,
    CreateNodeRequest,
    MoveNodeRequest,
    CloseNodeRequest,
    PauseNodeRequest,
    ResumeNodeRequest,
    SetLimitRequest,
    RemoveLimitRequest,
    SetRateLimitRequest,
    RemoveRateLimitRequest,
    AddGrantRequest,
    DefineRoleRequest,
    RemoveRoleRequest,
    AssignRolesRequest,
    SetRoleResolutionRequest,
    SetPriceRequest,
    RemovePriceRequest,
    SetConfigRequest,
);

// ---- inbound: reads ----------------------------------------------------------------------

impl pb::ShowRequest {
    pub fn node_ref(&self) -> Result<NodeRef, ConvertError> {
        node(self.node.clone(), "node")
    }
}

impl pb::UsageRequest {
    pub fn node_ref(&self) -> Result<NodeRef, ConvertError> {
        node(self.node.clone(), "node")
    }
}

/// What a `Holds` request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldsQuery {
    Node(NodeRef),
    Reservation(u64),
}

impl TryFrom<&pb::HoldsRequest> for HoldsQuery {
    type Error = ConvertError;
    fn try_from(r: &pb::HoldsRequest) -> Result<Self, ConvertError> {
        use pb::holds_request::Target;
        match &r.target {
            Some(Target::Node(n)) => Ok(HoldsQuery::Node(
                NodeRef::try_from(n.clone()).map_err(|e| e.within("node"))?,
            )),
            Some(Target::ReservationId(id)) => Ok(HoldsQuery::Reservation(*id)),
            None => Err(ConvertError::new(
                "target",
                "needs `node` or `reservation_id`",
            )),
        }
    }
}

/// What a `Grants` request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantsQuery {
    Node(NodeRef),
    Grant(u64),
}

impl TryFrom<&pb::GrantsRequest> for GrantsQuery {
    type Error = ConvertError;
    fn try_from(r: &pb::GrantsRequest) -> Result<Self, ConvertError> {
        use pb::grants_request::Target;
        match &r.target {
            Some(Target::Node(n)) => Ok(GrantsQuery::Node(
                NodeRef::try_from(n.clone()).map_err(|e| e.within("node"))?,
            )),
            Some(Target::GrantId(id)) => Ok(GrantsQuery::Grant(*id)),
            None => Err(ConvertError::new("target", "needs `node` or `grant_id`")),
        }
    }
}

// ---- outbound: building blocks -----------------------------------------------------------

impl From<NodeRef> for pb::NodeRef {
    fn from(r: NodeRef) -> Self {
        pb::NodeRef {
            node: Some(match r {
                NodeRef::Id(id) => pb::node_ref::Node::Id(id),
                NodeRef::Path(path) => pb::node_ref::Node::Path(path),
            }),
        }
    }
}

impl From<Period> for pb::Period {
    fn from(p: Period) -> Self {
        match p {
            Period::Hour => pb::Period::Hour,
            Period::Day => pb::Period::Day,
            Period::Week => pb::Period::Week,
            Period::Month => pb::Period::Month,
            Period::Year => pb::Period::Year,
        }
    }
}

impl From<LimitMode> for pb::LimitMode {
    fn from(m: LimitMode) -> Self {
        match m {
            LimitMode::Hard => pb::LimitMode::Hard,
            LimitMode::Soft => pb::LimitMode::Soft,
        }
    }
}

impl From<OnExhausted> for pb::OnExhausted {
    fn from(o: OnExhausted) -> Self {
        match o {
            OnExhausted::Deny => pb::OnExhausted::Deny,
            OnExhausted::Pause => pb::OnExhausted::Pause,
        }
    }
}

impl From<GrantKind> for pb::GrantKind {
    fn from(k: GrantKind) -> Self {
        match k {
            GrantKind::Included => pb::GrantKind::Included,
            GrantKind::Free => pb::GrantKind::Free,
            GrantKind::Promotional => pb::GrantKind::Promotional,
            GrantKind::Prepaid => pb::GrantKind::Prepaid,
            GrantKind::Commitment => pb::GrantKind::Commitment,
            GrantKind::OnDemand => pb::GrantKind::OnDemand,
        }
    }
}

impl From<RoleResolution> for pb::RoleResolution {
    fn from(r: RoleResolution) -> Self {
        match r {
            RoleResolution::MostRestrictive => pb::RoleResolution::MostRestrictive,
            RoleResolution::MostPermissive => pb::RoleResolution::MostPermissive,
        }
    }
}

impl From<NodeStatus> for pb::NodeStatus {
    fn from(s: NodeStatus) -> Self {
        match s {
            NodeStatus::Active => pb::NodeStatus::Active,
            NodeStatus::Paused => pb::NodeStatus::Paused,
            NodeStatus::Closed => pb::NodeStatus::Closed,
        }
    }
}

impl From<Window> for pb::Window {
    fn from(w: Window) -> Self {
        use pb::window::Kind;
        pb::Window {
            kind: Some(match w {
                Window::Lifetime => Kind::Lifetime(pb::window::Lifetime {}),
                Window::Calendar(p) => Kind::Calendar(pb::Period::from(p).into()),
                Window::Sliding { duration_ms } => Kind::SlidingMs(duration_ms),
                Window::FirstUse { duration_ms } => Kind::FirstUseMs(duration_ms),
            }),
        }
    }
}

impl From<LimitSpec> for pb::LimitSpec {
    fn from(l: LimitSpec) -> Self {
        pb::LimitSpec {
            currency: l.currency,
            amount: l.amount,
            window: Some(l.window.into()),
            mode: pb::LimitMode::from(l.mode).into(),
            thresholds: l.thresholds.into_iter().map(u32::from).collect(),
            on_exhausted: pb::OnExhausted::from(l.on_exhausted).into(),
        }
    }
}

impl From<RateKind> for pb::RateKind {
    fn from(k: RateKind) -> Self {
        pb::RateKind {
            kind: Some(match k {
                RateKind::Requests => pb::rate_kind::Kind::Requests(pb::rate_kind::Requests {}),
                RateKind::Cost { currency } => pb::rate_kind::Kind::CostCurrency(currency),
            }),
        }
    }
}

impl From<RateLimitSpec> for pb::RateLimitSpec {
    fn from(r: RateLimitSpec) -> Self {
        pb::RateLimitSpec {
            key: r.key,
            kind: Some(r.kind.into()),
            amount: r.amount,
            period_ms: r.period_ms,
        }
    }
}

impl From<Rollover> for pb::Rollover {
    fn from(r: Rollover) -> Self {
        use pb::rollover::Kind;
        pb::Rollover {
            kind: Some(match r {
                Rollover::None => Kind::None(pb::rollover::NoCarry {}),
                Rollover::CapMultiple(n) => Kind::CapMultiple(n),
                Rollover::Percent(p) => Kind::Percent(p.into()),
            }),
        }
    }
}

impl From<GrantSpec> for pb::GrantSpec {
    fn from(g: GrantSpec) -> Self {
        pb::GrantSpec {
            currency: g.currency,
            amount: g.amount,
            priority: g.priority,
            kind: pb::GrantKind::from(g.kind).into(),
            effective_at_ms: g.effective_at_ms,
            expires_at_ms: g.expires_at_ms,
            recur: g.recur.map(|p| pb::Period::from(p).into()),
            rollover: Some(g.rollover.into()),
        }
    }
}

impl From<PriceSpec> for pb::PriceSpec {
    fn from(p: PriceSpec) -> Self {
        pb::PriceSpec {
            provider: p.provider,
            model: p.model,
            currency: p.currency,
            input_per_mtok: p.input_per_mtok,
            output_per_mtok: p.output_per_mtok,
            cached_input_per_mtok: p.cached_input_per_mtok,
            reasoning_per_mtok: p.reasoning_per_mtok,
        }
    }
}

impl From<TokenUsage> for pb::TokenUsage {
    fn from(t: TokenUsage) -> Self {
        pb::TokenUsage {
            provider: t.provider,
            model: t.model,
            input: t.input,
            output: t.output,
            cached_input: t.cached_input,
            reasoning: t.reasoning,
        }
    }
}

fn pb_tags(tags: Vec<(String, String)>) -> Vec<pb::Tag> {
    tags.into_iter()
        .map(|(key, value)| pb::Tag { key, value })
        .collect()
}

impl From<Attributes> for pb::Attributes {
    fn from(a: Attributes) -> Self {
        pb::Attributes {
            user: a.user,
            model: a.model,
            provider: a.provider,
            credential_type: a.credential_type,
            tags: pb_tags(a.tags),
        }
    }
}

impl From<CurrencySpec> for pb::CurrencySpec {
    fn from(c: CurrencySpec) -> Self {
        pb::CurrencySpec {
            code: c.code,
            scale: c.scale.into(),
            funded: c.funded,
        }
    }
}

impl From<RootSpec> for pb::RootSpec {
    fn from(r: RootSpec) -> Self {
        pb::RootSpec {
            currencies: r.currencies.into_iter().map(Into::into).collect(),
            no_default_cap: r.no_default_cap,
        }
    }
}

// ---- outbound: outcomes ------------------------------------------------------------------

fn plan(parts: Vec<FundingPart>) -> Vec<pb::FundingPart> {
    parts.into_iter().map(Into::into).collect()
}

impl From<FundingPart> for pb::FundingPart {
    fn from(p: FundingPart) -> Self {
        pb::FundingPart {
            grant_id: p.grant_id,
            node_id: p.node,
            amount: p.amount,
        }
    }
}

impl From<Headroom> for pb::Headroom {
    fn from(h: Headroom) -> Self {
        pb::Headroom {
            node_id: h.node,
            remaining: h.remaining,
        }
    }
}

impl From<Reservation> for pb::Granted {
    fn from(r: Reservation) -> Self {
        pb::Granted {
            reservation_id: r.reservation_id,
            node_id: r.node,
            currency: r.currency,
            amount: r.amount,
            expires_at_ms: r.expires_at_ms,
            plan: plan(r.plan),
            headroom: r.headroom.into_iter().map(Into::into).collect(),
        }
    }
}

/// `node_path` is left empty: the state machine names the blocking node by id only, and the
/// server, which holds the state, fills it in (see `ReserveResponse::denial_mut`).
impl From<Denial> for pb::Denied {
    fn from(d: Denial) -> Self {
        let (rule, role, rate_key) = match d.rule {
            DenyRule::NodeClosed => (pb::DenyRule::NodeClosed, String::new(), String::new()),
            DenyRule::NodePaused => (pb::DenyRule::NodePaused, String::new(), String::new()),
            DenyRule::RateLimit { key } => (pb::DenyRule::RateLimit, String::new(), key),
            DenyRule::Cap => (pb::DenyRule::Cap, String::new(), String::new()),
            DenyRule::RoleCap { role } => (pb::DenyRule::RoleCap, role, String::new()),
            DenyRule::Funding => (pb::DenyRule::Funding, String::new(), String::new()),
        };
        pb::Denied {
            node_id: d.node,
            node_path: String::new(),
            rule: rule.into(),
            role,
            rate_key,
            window: d.window.map(Into::into),
            remaining: d.remaining,
            requested: d.requested,
            retry_after_ms: d.retry_after_ms,
        }
    }
}

impl From<Settlement> for pb::Settlement {
    fn from(s: Settlement) -> Self {
        pb::Settlement {
            reservation_id: s.reservation_id,
            node_id: s.node,
            currency: s.currency,
            charged: s.charged,
            released: s.released,
            overrun: s.overrun,
            debt: s.debt,
            plan: plan(s.plan),
            late: s.late,
        }
    }
}

impl From<Recorded> for pb::Recorded {
    fn from(r: Recorded) -> Self {
        use pb::recorded as rec;
        pb::Recorded {
            kind: Some(match r {
                Recorded::NodeCreated { node_id } => {
                    rec::Kind::NodeCreated(rec::NodeCreated { node_id })
                }
                Recorded::GrantAdded { grant_id } => {
                    rec::Kind::GrantAdded(rec::GrantAdded { grant_id })
                }
                Recorded::Done => rec::Kind::Done(rec::Done {}),
                Recorded::Reserved {
                    reservation_id,
                    amount,
                    expires_at_ms,
                } => rec::Kind::Reserved(rec::Reserved {
                    reservation_id,
                    amount,
                    expires_at_ms,
                }),
                Recorded::Settled {
                    reservation_id,
                    charged,
                } => rec::Kind::Settled(rec::Settled {
                    reservation_id,
                    charged,
                }),
                Recorded::Released {
                    reservation_id,
                    amount,
                } => rec::Kind::Released(rec::Released {
                    reservation_id,
                    amount,
                }),
                Recorded::Charged { charged } => rec::Kind::Charged(rec::Charged { charged }),
                Recorded::WebhookAdded { webhook_id } => {
                    rec::Kind::WebhookAdded(rec::WebhookAdded { webhook_id })
                }
                Recorded::TokenCreated {
                    token_id,
                    expires_at_ms,
                } => rec::Kind::TokenCreated(rec::TokenCreated {
                    token_id,
                    expires_at_ms: expires_at_ms.unwrap_or(0),
                }),
            }),
        }
    }
}

/// Builds a command's response from what the state machine answered.
///
/// `log_index` is the Raft index the command was applied at (0 when answered without a log
/// write). A duplicate is answered with `duplicate = true`, `first_outcome`, and the response's
/// own fields filled from the record as far as it goes, so that a client that retried after a
/// failover reads the reservation id, node id or grant id where it always does.
pub trait FromOutcome: Sized {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome>;
}

impl FromOutcome for pb::ReserveResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        use pb::reserve_response::Result as R;
        let (result, first) = match outcome {
            Outcome::Reserved(r) => (R::Granted(r.into()), None),
            Outcome::Denied(d) => (R::Denied(d.into()), None),
            Outcome::Duplicate(
                rec @ Recorded::Reserved {
                    reservation_id,
                    amount,
                    expires_at_ms,
                },
            ) => {
                let granted = pb::Granted {
                    reservation_id,
                    amount,
                    expires_at_ms,
                    ..Default::default()
                };
                (R::Granted(granted), Some(rec.into()))
            }
            other => return Err(UnexpectedOutcome::new("ReserveResponse", &other)),
        };
        Ok(pb::ReserveResponse {
            log_index,
            duplicate: first.is_some(),
            first_outcome: first,
            result: Some(result),
        })
    }
}

impl pb::ReserveResponse {
    /// The denial, so that the server can fill in `node_path`.
    pub fn denial_mut(&mut self) -> Option<&mut pb::Denied> {
        match &mut self.result {
            Some(pb::reserve_response::Result::Denied(d)) => Some(d),
            _ => None,
        }
    }
}

impl FromOutcome for pb::CommitResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        let (settlement, first) = match outcome {
            Outcome::Settled(s) => (s.into(), None),
            Outcome::Duplicate(
                rec @ Recorded::Settled {
                    reservation_id,
                    charged,
                },
            ) => {
                let settlement = pb::Settlement {
                    reservation_id: Some(reservation_id),
                    charged,
                    ..Default::default()
                };
                (settlement, Some(rec.into()))
            }
            other => return Err(UnexpectedOutcome::new("CommitResponse", &other)),
        };
        Ok(pb::CommitResponse {
            log_index,
            duplicate: first.is_some(),
            first_outcome: first,
            settlement: Some(settlement),
        })
    }
}

impl FromOutcome for pb::ReleaseResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        let (reservation_id, amount, first) = match outcome {
            Outcome::Released {
                reservation_id,
                amount,
            } => (reservation_id, amount, None),
            Outcome::Duplicate(
                rec @ Recorded::Released {
                    reservation_id,
                    amount,
                },
            ) => (reservation_id, amount, Some(rec.into())),
            other => return Err(UnexpectedOutcome::new("ReleaseResponse", &other)),
        };
        Ok(pb::ReleaseResponse {
            log_index,
            duplicate: first.is_some(),
            first_outcome: first,
            reservation_id,
            amount,
        })
    }
}

impl FromOutcome for pb::ChargeResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        use pb::charge_response::Result as R;
        let (result, first) = match outcome {
            Outcome::Charged(s) => (R::Charged(s.into()), None),
            Outcome::Denied(d) => (R::Denied(d.into()), None),
            Outcome::Duplicate(rec @ Recorded::Charged { charged }) => {
                let settlement = pb::Settlement {
                    charged,
                    ..Default::default()
                };
                (R::Charged(settlement), Some(rec.into()))
            }
            other => return Err(UnexpectedOutcome::new("ChargeResponse", &other)),
        };
        Ok(pb::ChargeResponse {
            log_index,
            duplicate: first.is_some(),
            first_outcome: first,
            result: Some(result),
        })
    }
}

impl pb::ChargeResponse {
    /// The denial, so that the server can fill in `node_path`.
    pub fn denial_mut(&mut self) -> Option<&mut pb::Denied> {
        match &mut self.result {
            Some(pb::charge_response::Result::Denied(d)) => Some(d),
            _ => None,
        }
    }
}

impl FromOutcome for pb::CreateNodeResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        let (node_id, first) = match outcome {
            Outcome::NodeCreated { node_id } => (node_id, None),
            Outcome::Duplicate(rec @ Recorded::NodeCreated { node_id }) => {
                (node_id, Some(rec.into()))
            }
            other => return Err(UnexpectedOutcome::new("CreateNodeResponse", &other)),
        };
        Ok(pb::CreateNodeResponse {
            log_index,
            duplicate: first.is_some(),
            first_outcome: first,
            node_id,
        })
    }
}

impl FromOutcome for pb::AddGrantResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        let (grant_id, first) = match outcome {
            Outcome::GrantAdded { grant_id } => (grant_id, None),
            Outcome::Duplicate(rec @ Recorded::GrantAdded { grant_id }) => {
                (grant_id, Some(rec.into()))
            }
            other => return Err(UnexpectedOutcome::new("AddGrantResponse", &other)),
        };
        Ok(pb::AddGrantResponse {
            log_index,
            duplicate: first.is_some(),
            first_outcome: first,
            grant_id,
        })
    }
}

/// Admin commands whose outcome carries nothing but "it took effect".
macro_rules! done_responses {
    ($($response:ident),* $(,)?) => {
        $(impl FromOutcome for pb::$response {
            fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
                match outcome {
                    Outcome::Done => Ok(pb::$response {
                        log_index,
                        duplicate: false,
                        first_outcome: None,
                    }),
                    Outcome::Duplicate(rec @ Recorded::Done) => Ok(pb::$response {
                        log_index,
                        duplicate: true,
                        first_outcome: Some(rec.into()),
                    }),
                    other => Err(UnexpectedOutcome::new(stringify!($response), &other)),
                }
            }
        })*
    };
}

done_responses!(
    MoveNodeResponse,
    CloseNodeResponse,
    PauseNodeResponse,
    ResumeNodeResponse,
    SetLimitResponse,
    RemoveLimitResponse,
    SetRateLimitResponse,
    RemoveRateLimitResponse,
    DefineRoleResponse,
    RemoveRoleResponse,
    AssignRolesResponse,
    SetRoleResolutionResponse,
    SetPriceResponse,
    RemovePriceResponse,
    SetConfigResponse,
);

// ---- outbound: views ---------------------------------------------------------------------

impl From<AccountView> for pb::AccountView {
    fn from(a: AccountView) -> Self {
        pb::AccountView {
            currency: a.currency,
            scale: a.scale.into(),
            funded: a.funded,
            held: a.held,
            spent_total: a.spent_total,
            debt: a.debt,
        }
    }
}

impl From<LimitView> for pb::LimitView {
    fn from(l: LimitView) -> Self {
        pb::LimitView {
            role: l.role,
            currency: l.currency,
            amount: l.amount,
            window: Some(l.window.into()),
            mode: pb::LimitMode::from(l.mode).into(),
            thresholds: l.thresholds.into_iter().map(u32::from).collect(),
            on_exhausted: pb::OnExhausted::from(l.on_exhausted).into(),
            window_start_ms: l.window_start_ms,
            window_end_ms: l.window_end_ms,
            spent: l.spent,
            held: l.held,
            remaining: l.remaining,
        }
    }
}

impl From<RateLimitView> for pb::RateLimitView {
    fn from(r: RateLimitView) -> Self {
        pb::RateLimitView {
            key: r.key,
            kind: Some(r.kind.into()),
            amount: r.amount,
            period_ms: r.period_ms,
            available: r.available,
        }
    }
}

impl From<GrantView> for pb::GrantView {
    fn from(g: GrantView) -> Self {
        pb::GrantView {
            id: g.id,
            node_id: g.node,
            currency: g.currency,
            amount: g.amount,
            remaining: g.remaining,
            held: g.held,
            priority: g.priority,
            kind: pb::GrantKind::from(g.kind).into(),
            effective_at_ms: g.effective_at_ms,
            expires_at_ms: g.expires_at_ms,
            recur: g.recur.map(|p| pb::Period::from(p).into()),
            rollover: Some(g.rollover.into()),
            next_renewal_ms: g.next_renewal_ms,
            expired: g.expired,
        }
    }
}

impl From<HoldView> for pb::HoldView {
    fn from(h: HoldView) -> Self {
        pb::HoldView {
            reservation_id: h.reservation_id,
            node_id: h.node,
            currency: h.currency,
            amount: h.amount,
            created_at_ms: h.created_at_ms,
            expires_at_ms: h.expires_at_ms,
            plan: plan(h.plan),
            attributes: Some(h.attrs.into()),
        }
    }
}

impl From<NodeView> for pb::NodeView {
    fn from(n: NodeView) -> Self {
        pb::NodeView {
            id: n.id,
            path: n.path,
            parent_id: n.parent,
            root_id: n.root,
            depth: n.depth,
            kind: n.kind,
            status: pb::NodeStatus::from(n.status).into(),
            tags: pb_tags(n.tags),
            roles: n.roles,
            children: n.children,
            holds_open: n.holds_open,
            accounts: n.accounts.into_iter().map(Into::into).collect(),
            limits: n.limits.into_iter().map(Into::into).collect(),
            rate_limits: n.rate_limits.into_iter().map(Into::into).collect(),
            grants: n.grants.into_iter().map(Into::into).collect(),
        }
    }
}
