//! Who may do what: bearer tokens scoped to a subtree, with an access level.
//!
//! A token is a secret the caller holds; the state keeps only a hash of it (computed by the
//! member, never here: apply stays pure), its scope (a node, or the whole cluster) and its
//! access. A command carries the id of the token it acts for ([`crate::Command::actor`]), and
//! apply judges it against the state as it is at that point of the log, with the command's
//! time for expiry, so every member reaches the same verdict. Members judge reads and refuse
//! forbidden writes early with the same functions ([`State::authorize`],
//! [`State::authorize_op`]) on their applied state.
//!
//! "Access" is the word here because "role" is a budget role (R-ROLE).
//!
//! - viewer: reads of nodes at or below the scope node.
//! - editor: viewer + reserve, settle, release, charge at or below the scope node.
//! - admin: editor + configuration of nodes strictly below the scope node, and tokens no wider
//!   than its own. The scope node's own limits and grants are set from above it, so an admin
//!   can neither raise the cap set on its scope node nor grant it credit.
//! - Scope `/`: the same over every root, and with admin, what belongs to the cluster: roots,
//!   root-wide rules (budget roles, role resolution, prices), the configuration, membership.

use serde::{Deserialize, Serialize};

use crate::command::{NodeRef, Op};
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::state::{limits, Ctx, State};

/// What a token may do within its scope; each level includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    Viewer,
    Editor,
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Viewer => "viewer",
            Access::Editor => "editor",
            Access::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Access {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "viewer" => Ok(Access::Viewer),
            "editor" => Ok(Access::Editor),
            "admin" => Ok(Access::Admin),
            other => Err(Error::invalid(format!(
                "access {other:?} is not viewer, editor or admin"
            ))),
        }
    }
}

/// The SHA-256 of a token's secret, as the member computed it.
pub type SecretHash = [u8; 32];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Token {
    pub id: u64,
    pub name: String,
    /// `None`: the whole cluster (`/`).
    pub scope: Option<u64>,
    pub access: Access,
    pub secret_hash: SecretHash,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    /// The token that created this one; `None` for the cluster's first.
    pub created_by: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

impl Token {
    fn live_at(&self, now_ms: u64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

/// A token as listed: never its secret, nor the hash of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: u64,
    pub name: String,
    /// `/` or the scope node's path.
    pub scope: String,
    pub access: Access,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub created_by: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

/// What a call needs of the token it acts for.
#[derive(Clone, Copy, Debug)]
pub enum Need<'a> {
    /// `access` over the node (at or below the scope node).
    Node(&'a NodeRef, Access),
    /// Admin over configuration of the node: strictly below the scope node.
    Configure(&'a NodeRef),
    /// `access` over the node a reservation (open, or expired and still remembered) is on.
    Reservation(u64, Access),
    /// `access` over the node a grant belongs to.
    Grant(u64, Access),
    /// Admin over the root a webhook subscribes to.
    Webhook(u64),
    /// `access` over a whole root: its own node at or below the scope node.
    Root(&'a NodeRef, Access),
    /// `access` with the scope `/`.
    Cluster(Access),
}

impl State {
    /// The live token whose secret hashes to `hash`, judged at the last applied time: a
    /// member resolves the bearer of a call with this, with no Raft round.
    pub fn token_by_hash(&self, hash: &SecretHash) -> Result<u64> {
        let id = self
            .token_index
            .get(hash)
            .copied()
            .ok_or_else(|| Error::unauthenticated("the token is not known to the cluster"))?;
        self.live_token(id, self.now_ms)?;
        Ok(id)
    }

    pub(crate) fn live_token(&self, id: u64, now_ms: u64) -> Result<&Token> {
        let token = self
            .tokens
            .get(&id)
            .ok_or_else(|| Error::unauthenticated(format!("token {id} does not exist")))?;
        if let Some(at) = token.revoked_at_ms {
            return Err(Error::unauthenticated(format!(
                "token {id} was revoked at {at} ms"
            )));
        }
        if !token.live_at(now_ms) {
            return Err(Error::unauthenticated(format!("token {id} has expired")));
        }
        Ok(token)
    }

    /// Whether token `actor` may do what `need` says, at the last applied time. Returns the
    /// node id `need` is about, when it names one.
    pub fn authorize(&self, actor: u64, need: Need<'_>) -> Result<Option<u64>> {
        self.authorize_at(actor, self.now_ms, need)
    }

    pub(crate) fn authorize_at(
        &self,
        actor: u64,
        now_ms: u64,
        need: Need<'_>,
    ) -> Result<Option<u64>> {
        let token = self.live_token(actor, now_ms)?;
        let denied = |what: &str| {
            Error::forbidden(format!(
                "token {actor} ({} of {}) may not {what}",
                token.access.as_str(),
                self.scope_name(token.scope)
            ))
        };
        let (access, target) = self.target_of(need, now_ms)?;
        if token.access < access {
            return Err(denied(&format!(
                "do this ({} access needed)",
                access.as_str()
            )));
        }
        let Some(target) = target else {
            if token.scope.is_some() {
                return Err(denied("act on the cluster (that takes scope /)"));
            }
            return Ok(None);
        };
        let id = self.node_in_scope(token, &target.node, &|path| match &target.item {
            Some(item) => denied(&format!("reach {item}, which is outside its scope")),
            None => denied(&format!("reach {path}, which is outside its scope")),
        })?;
        if target.strictly_below && token.scope == Some(id) {
            return Err(denied(
                "configure its own scope node: its limits and grants are set from above",
            ));
        }
        if target.root && self.node(id).parent != 0 {
            return Err(Error::invalid(format!(
                "node {} is not a root",
                self.path_of(id)?
            )));
        }
        Ok(Some(id))
    }

    /// The access `need` takes, and the node it is about (`None`: the cluster).
    fn target_of(&self, need: Need<'_>, now_ms: u64) -> Result<(Access, Option<Target>)> {
        let on = |node: &NodeRef| Target {
            node: node.clone(),
            strictly_below: false,
            root: false,
            item: None,
        };
        let owner = |node: u64, item: String| Target {
            node: NodeRef::Id(node),
            strictly_below: false,
            root: false,
            item: Some(item),
        };
        Ok(match need {
            Need::Cluster(access) => (access, None),
            Need::Node(node, access) => (access, Some(on(node))),
            Need::Root(root, access) => (
                access,
                Some(Target {
                    root: true,
                    ..on(root)
                }),
            ),
            Need::Configure(node) => (
                Access::Admin,
                Some(Target {
                    strictly_below: true,
                    ..on(node)
                }),
            ),
            Need::Reservation(id, access) => {
                let node = self
                    .reservation_node(id, now_ms)
                    .ok_or_else(|| Error::not_found(format!("reservation {id} is not open")))?;
                (access, Some(owner(node, format!("reservation {id}"))))
            }
            Need::Grant(id, access) => {
                let grant = self
                    .grants
                    .get(&id)
                    .ok_or_else(|| Error::not_found(format!("grant {id} does not exist")))?;
                (access, Some(owner(grant.node, format!("grant {id}"))))
            }
            Need::Webhook(id) => {
                let hook = self
                    .webhooks
                    .get(&id)
                    .ok_or_else(|| Error::not_found(format!("webhook {id} does not exist")))?;
                (
                    Access::Admin,
                    Some(owner(hook.root, format!("webhook {id}"))),
                )
            }
        })
    }

    /// Whether a command of `op` may be applied for token `actor` at `now_ms`.
    pub fn authorize_op(&self, actor: u64, now_ms: u64, op: &Op) -> Result<()> {
        use Access::*;
        let need = match op {
            Op::CreateNode(create) => match &create.parent {
                // A new child is strictly below its parent: the parent may be the scope node.
                Some(parent) => Need::Node(parent, Admin),
                None => Need::Cluster(Admin),
            },
            Op::MoveNode { node, new_parent } => {
                self.authorize_at(actor, now_ms, Need::Node(new_parent, Admin))?;
                Need::Configure(node)
            }
            Op::CloseNode { node }
            | Op::PauseNode { node }
            | Op::ResumeNode { node }
            | Op::SetLimit { node, .. }
            | Op::RemoveLimit { node, .. }
            | Op::SetRateLimit { node, .. }
            | Op::RemoveRateLimit { node, .. }
            | Op::AddGrant { node, .. }
            | Op::AssignRoles { node, .. } => Need::Configure(node),
            // Root-wide rules shape the spend of every node of the root, its own included.
            Op::DefineRole { .. }
            | Op::RemoveRole { .. }
            | Op::SetRoleResolution { .. }
            | Op::SetPrice { .. }
            | Op::RemovePrice { .. }
            | Op::SetConfig(_) => Need::Cluster(Admin),
            Op::Reserve(reserve) => Need::Node(&reserve.node, Editor),
            Op::Charge(charge) => Need::Node(&charge.node, Editor),
            Op::Settle { reservation_id, .. } | Op::Release { reservation_id } => {
                Need::Reservation(*reservation_id, Editor)
            }
            Op::AddWebhook { root, .. } => Need::Root(root, Admin),
            Op::RemoveWebhook { id } => Need::Webhook(*id),
            Op::CreateToken {
                scope,
                access,
                expires_in_ms,
                ..
            } => {
                return self.authorize_new_token(
                    actor,
                    now_ms,
                    scope.as_ref(),
                    *access,
                    *expires_in_ms,
                )
            }
            Op::RevokeToken { id } => {
                let scope = self
                    .tokens
                    .get(id)
                    .map(|t| t.scope)
                    .ok_or_else(|| Error::not_found(format!("token {id} does not exist")))?;
                let scope = scope.map(NodeRef::Id);
                let need = match &scope {
                    Some(node) => Need::Node(node, Admin),
                    None => Need::Cluster(Admin),
                };
                return self.authorize_at(actor, now_ms, need).map(|_| ());
            }
            Op::Tick | Op::WebhookDelivered { .. } => {
                return Err(Error::forbidden(
                    "tick and webhook-delivered are the leader's, never a client's",
                ))
            }
        };
        self.authorize_at(actor, now_ms, need).map(|_| ())
    }

    /// A token may create tokens no wider than itself: a scope at or below its own, an access
    /// at most its own, and an expiry no later than its own.
    fn authorize_new_token(
        &self,
        actor: u64,
        now_ms: u64,
        scope: Option<&NodeRef>,
        access: Access,
        expires_in_ms: Option<u64>,
    ) -> Result<()> {
        match scope {
            Some(node) => self.authorize_at(actor, now_ms, Need::Node(node, Access::Admin))?,
            None => self.authorize_at(actor, now_ms, Need::Cluster(Access::Admin))?,
        };
        let creator = self.live_token(actor, now_ms)?;
        if access > creator.access {
            return Err(Error::forbidden(format!(
                "token {actor} ({}) may not create a token with more access ({})",
                creator.access.as_str(),
                access.as_str()
            )));
        }
        if let Some(limit) = creator.expires_at_ms {
            let expires = expires_in_ms.map(|ttl| now_ms.saturating_add(ttl));
            if expires.is_none_or(|at| at > limit) {
                return Err(Error::forbidden(format!(
                    "token {actor} expires at {limit} ms and may not create a token that outlives it: give a shorter --ttl"
                )));
            }
        }
        Ok(())
    }

    /// Resolves `node` for `token`, refusing anything outside its scope with `denied(path)`.
    /// A path outside the scope is refused before it is looked up, so that a token cannot learn which names
    /// exist in another tenant's tree.
    fn node_in_scope(
        &self,
        token: &Token,
        node: &NodeRef,
        denied: &dyn Fn(&str) -> Error,
    ) -> Result<u64> {
        let Some(scope) = token.scope else {
            return self.resolve(node);
        };
        if let NodeRef::Path(path) = node {
            let scope_path = self.path_of(scope)?;
            let inside = path == &scope_path
                || path
                    .strip_prefix(scope_path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            if !inside {
                return Err(denied(path));
            }
        }
        let id = self.resolve(node)?;
        if !self.within(id, scope) {
            return Err(denied(&self.path_of(id)?));
        }
        Ok(id)
    }

    /// Whether `node` is `scope` or below it.
    pub(crate) fn within(&self, node: u64, scope: u64) -> bool {
        self.path_ids(node).as_slice().contains(&scope)
    }

    /// Whether token `actor` (live or not) covers node `node`: what a watch or a report of
    /// that token may show. An unknown token covers nothing.
    pub fn token_covers(&self, actor: u64, node: u64) -> bool {
        match self.tokens.get(&actor) {
            Some(token) => match token.scope {
                None => true,
                Some(scope) => {
                    node != 0 && node <= self.nodes.len() as u64 && self.within(node, scope)
                }
            },
            None => false,
        }
    }

    /// The scope node of token `actor`: `None` for `/`.
    pub fn token_scope(&self, actor: u64) -> Result<Option<u64>> {
        self.tokens
            .get(&actor)
            .map(|t| t.scope)
            .ok_or_else(|| Error::not_found(format!("token {actor} does not exist")))
    }

    pub(crate) fn reservation_node(&self, id: u64, now_ms: u64) -> Option<u64> {
        if let Some(hold) = self.holds.get(&id) {
            return Some(hold.node);
        }
        self.live_expired(id, now_ms).map(|e| e.node)
    }

    fn scope_name(&self, scope: Option<u64>) -> String {
        match scope {
            None => "/".to_owned(),
            Some(id) => self.path_of(id).unwrap_or_else(|_| format!("node {id}")),
        }
    }

    pub(crate) fn create_token(
        &mut self,
        ctx: &mut Ctx,
        actor: Option<u64>,
        create: NewToken,
    ) -> Result<Outcome> {
        let NewToken {
            scope,
            access,
            name,
            expires_in_ms,
            secret_hash,
        } = create;
        if name.len() > limits::TEXT_BYTES_MAX {
            return Err(Error::invalid(format!(
                "a token name is at most {} bytes",
                limits::TEXT_BYTES_MAX
            )));
        }
        if actor.is_none() && !self.tokens.is_empty() {
            return Err(Error::forbidden(
                "the cluster has its first token already: a new token needs an admin's token",
            ));
        }
        if expires_in_ms == Some(0) {
            return Err(Error::invalid("a token's time to live must be positive"));
        }
        if self.tokens.len() >= limits::TOKENS_MAX {
            return Err(Error::exhausted(format!(
                "the cluster keeps at most {} tokens: revoke some first",
                limits::TOKENS_MAX
            )));
        }
        if self.token_index.contains_key(&secret_hash) {
            return Err(Error::exists("a token with this secret exists"));
        }
        let scope = scope.map(|node| self.resolve(&node)).transpose()?;
        let id = self.next_token_id;
        self.next_token_id += 1;
        let expires_at_ms = expires_in_ms.map(|ttl| ctx.now_ms.saturating_add(ttl));
        self.token_index.insert(secret_hash, id);
        self.tokens.insert(
            id,
            Token {
                id,
                name,
                scope,
                access,
                secret_hash,
                created_at_ms: ctx.now_ms,
                expires_at_ms,
                created_by: actor,
                revoked_at_ms: None,
            },
        );
        Ok(Outcome::TokenCreated {
            token_id: id,
            expires_at_ms,
        })
    }

    pub(crate) fn revoke_token(&mut self, ctx: &Ctx, id: u64) -> Result<Outcome> {
        let token = self
            .tokens
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("token {id} does not exist")))?;
        if token.revoked_at_ms.is_none() {
            token.revoked_at_ms = Some(ctx.now_ms);
        }
        Ok(Outcome::Done)
    }

    /// Tokens whose scope is at or below `under` (`None`: all), by id; never their secrets.
    pub fn tokens(&self, under: Option<u64>) -> Vec<TokenView> {
        self.tokens
            .values()
            .filter(|t| match (under, t.scope) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(under), Some(scope)) => self.within(scope, under),
            })
            .map(|t| TokenView {
                id: t.id,
                name: t.name.clone(),
                scope: self.scope_name(t.scope),
                access: t.access,
                created_at_ms: t.created_at_ms,
                expires_at_ms: t.expires_at_ms,
                created_by: t.created_by,
                revoked_at_ms: t.revoked_at_ms,
            })
            .collect()
    }
}

impl State {
    /// Every token filed under its id, below the next id, scoped to an existing node, and
    /// found by its own secret hash; the index holds nothing else.
    pub(crate) fn check_tokens(&self) -> std::result::Result<(), String> {
        if self.tokens.len() > limits::TOKENS_MAX {
            return Err(format!(
                "{} tokens, more than the ceiling",
                self.tokens.len()
            ));
        }
        for (id, token) in &self.tokens {
            if *id != token.id || token.id == 0 || token.id >= self.next_token_id {
                return Err(format!("token {} is filed under {id}", token.id));
            }
            if token
                .scope
                .is_some_and(|node| node == 0 || node > self.nodes.len() as u64)
            {
                return Err(format!("token {id} is scoped to a missing node"));
            }
            if self.token_index.get(&token.secret_hash) != Some(id) {
                return Err(format!("token {id} is not indexed by its secret"));
            }
        }
        if self.token_index.len() != self.tokens.len() {
            return Err("the token index names tokens that do not exist".into());
        }
        Ok(())
    }
}

/// The node a [`Need`] is about, and what else it asks of it.
struct Target {
    node: NodeRef,
    /// Admin configuration: the scope node itself is set from above.
    strictly_below: bool,
    /// The node must be a root.
    root: bool,
    /// What the call names when it names an id (`reservation 5`), for messages.
    item: Option<String>,
}

/// The parts of [`Op::CreateToken`], moved out for apply.
pub(crate) struct NewToken {
    pub scope: Option<NodeRef>,
    pub access: Access,
    pub name: String,
    pub expires_in_ms: Option<u64>,
    pub secret_hash: SecretHash,
}
