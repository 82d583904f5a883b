//! Snapshots: the whole state in a canonical byte form. Restoring a snapshot and taking one
//! again gives the same bytes, and two replicas with equal state give equal bytes, so the
//! digest of a snapshot is the digest of the state.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::access::Token;
use crate::cow::{CowMap, CowVec};
use crate::dedup::FrozenDedup;
use crate::error::{Error, Result};
use crate::hash::{fingerprint128, fingerprint64};
use crate::state::{
    Config, Dedup, DedupEntry, Expired, Grant, Hold, Node, RoleHolders, Root, State,
};
use crate::webhook::Webhook;

const MAGIC: &[u8; 8] = b"PURSERSM";
/// Bumped on any change to the encoding; `restore` refuses versions it does not know.
/// 2: webhook subscriptions, their cursors and the count of events emitted.
/// 3: tokens.
/// 4: the root each remembered request id counts against.
/// 5: every request id held, dead ones still waiting included, in the order recorded.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 5;

/// The encoded form, borrowed for encoding; [`Image`] is the same layout, owned, for decoding.
#[derive(Serialize)]
struct ImageRef<'a> {
    now_ms: u64,
    config: &'a Config,
    nodes: &'a CowVec<Node>,
    kinds: &'a [String],
    roots: Vec<(u64, &'a Root)>,
    grants: Vec<&'a Grant>,
    holds: Vec<&'a Hold>,
    expired: Vec<(u64, &'a Expired)>,
    dedup: &'a FrozenDedup,
    next_grant_id: u64,
    next_reservation_id: u64,
    sent_floor_ms: u64,
    webhooks: Vec<&'a Webhook>,
    next_webhook_id: u64,
    events_emitted: u64,
    tokens: Vec<&'a Token>,
    next_token_id: u64,
}

/// What a snapshot encodes, frozen at one point: the large parts are copy-on-write clones
/// that share their chunks with the live state, so freezing costs time in the number of
/// chunks (and in the small parts: configuration, webhooks, tokens, the expiry queue), not in
/// the number of nodes, holds or request ids. Encoding it can then run without the lock that
/// apply needs, while the live state moves on.
#[derive(Clone, Debug)]
pub struct Frozen {
    now_ms: u64,
    config: Config,
    nodes: CowVec<Node>,
    kinds: Vec<String>,
    roots: CowMap<u64, Root>,
    grants: CowMap<u64, Grant>,
    holds: CowMap<u64, Hold>,
    expired: CowMap<u64, Expired>,
    expired_order: VecDeque<u64>,
    dedup: FrozenDedup,
    next_grant_id: u64,
    next_reservation_id: u64,
    sent_floor_ms: u64,
    webhooks: BTreeMap<u64, Webhook>,
    next_webhook_id: u64,
    events_emitted: u64,
    tokens: BTreeMap<u64, Token>,
    next_token_id: u64,
}

impl Frozen {
    /// `MAGIC ++ version (u32 LE) ++ length (u64 LE) ++ body ++ checksum (u64 LE)`, the same
    /// bytes [`State::snapshot`] gives for the state it was frozen from.
    pub fn encode(&self) -> Vec<u8> {
        fn sorted<V: Clone>(map: &CowMap<u64, V>) -> Vec<(u64, &V)> {
            let mut entries: Vec<(u64, &V)> = map.iter().map(|(k, v)| (*k, v)).collect();
            entries.sort_unstable_by_key(|(k, _)| *k);
            entries
        }
        let image = ImageRef {
            now_ms: self.now_ms,
            config: &self.config,
            nodes: &self.nodes,
            kinds: &self.kinds,
            roots: sorted(&self.roots),
            grants: sorted(&self.grants).into_iter().map(|(_, g)| g).collect(),
            holds: sorted(&self.holds).into_iter().map(|(_, h)| h).collect(),
            expired: self
                .expired_order
                .iter()
                .filter_map(|id| self.expired.get(id).map(|e| (*id, e)))
                .collect(),
            dedup: &self.dedup,
            next_grant_id: self.next_grant_id,
            next_reservation_id: self.next_reservation_id,
            sent_floor_ms: self.sent_floor_ms,
            webhooks: self.webhooks.values().collect(),
            next_webhook_id: self.next_webhook_id,
            events_emitted: self.events_emitted,
            tokens: self.tokens.values().collect(),
            next_token_id: self.next_token_id,
        };
        // The body is encoded in place after a header whose length is filled in after it: a
        // state of hundreds of megabytes is never held twice.
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        bincode::serde::encode_into_std_write(&image, &mut out, bincode::config::standard())
            .unwrap_or_else(|e| {
                unreachable!("invariant `the state encodes`: plain data into memory: {e}")
            });
        let body_len = (out.len() - 20) as u64;
        out[12..20].copy_from_slice(&body_len.to_le_bytes());
        let checksum = fingerprint64(&out[20..]);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// [`State::digest`] of the state it was frozen from.
    pub fn digest(&self) -> u128 {
        fingerprint128(&self.encode())
    }

    /// The snapshot bytes. Debug builds (every test) check them by restoring them: every
    /// invariant, on the bytes that will be shipped. Release builds leave that check to where
    /// a snapshot is restored (a member's start, every follower that installs it), because
    /// here it would cost a second whole state in memory and as much CPU again as encoding.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let bytes = self.encode();
        if cfg!(debug_assertions) {
            State::restore(&bytes).map_err(|why| {
                Error::invalid(format!("invariant broken when building a snapshot: {why}"))
            })?;
        }
        Ok(bytes)
    }
}

#[derive(Deserialize)]
struct Image {
    now_ms: u64,
    config: Config,
    nodes: Vec<Node>,
    kinds: Vec<String>,
    roots: Vec<(u64, Root)>,
    grants: Vec<Grant>,
    holds: Vec<Hold>,
    expired: Vec<(u64, Expired)>,
    dedup: Vec<(u128, DedupEntry)>,
    next_grant_id: u64,
    next_reservation_id: u64,
    sent_floor_ms: u64,
    webhooks: Vec<Webhook>,
    next_webhook_id: u64,
    events_emitted: u64,
    tokens: Vec<Token>,
    next_token_id: u64,
}

impl State {
    /// `MAGIC ++ version (u32 LE) ++ length (u64 LE) ++ body ++ checksum (u64 LE)`.
    ///
    /// Runs [`State::check_invariants`] first: a state that breaks one must not be written
    /// down and shipped to followers, so it panics with the invariant's message.
    pub fn snapshot(&self) -> Vec<u8> {
        if let Err(why) = self.check_invariants() {
            panic!("invariant broken when building a snapshot: {why}");
        }
        self.encode()
    }

    /// A copy of what a snapshot encodes, sharing the large parts with this state until they
    /// are written to (see [`Frozen`]).
    pub fn freeze(&self) -> Frozen {
        Frozen {
            now_ms: self.now_ms,
            config: self.config.clone(),
            nodes: self.nodes.clone(),
            kinds: self.kinds.clone(),
            roots: self.roots.clone(),
            grants: self.grants.clone(),
            holds: self.holds.clone(),
            expired: self.expired.clone(),
            expired_order: self.expired_order.clone(),
            dedup: self.dedup.freeze(),
            next_grant_id: self.next_grant_id,
            next_reservation_id: self.next_reservation_id,
            sent_floor_ms: self.sent_floor_ms,
            webhooks: self.webhooks.clone(),
            next_webhook_id: self.next_webhook_id,
            events_emitted: self.events_emitted,
            tokens: self.tokens.clone(),
            next_token_id: self.next_token_id,
        }
    }

    /// The snapshot bytes, unchecked: what [`State::digest`] hashes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        self.freeze().encode()
    }

    /// Rebuilds a state from [`State::snapshot`] bytes. A damaged, truncated or foreign
    /// snapshot is refused with an error, never half-loaded.
    pub fn restore(bytes: &[u8]) -> Result<State> {
        let corrupt = |why: &str| Error::invalid(format!("snapshot refused: {why}"));
        if bytes.len() < 28 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a Purser state snapshot"));
        }
        let version = u32::from_le_bytes(le_bytes(&bytes[8..12]));
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(corrupt(&format!(
                "format version {version}, this build reads {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        let len = u64::from_le_bytes(le_bytes(&bytes[12..20]));
        if len != (bytes.len() - 28) as u64 {
            return Err(corrupt("length does not match (truncated?)"));
        }
        let body = &bytes[20..bytes.len() - 8];
        let checksum = u64::from_le_bytes(le_bytes(&bytes[bytes.len() - 8..]));
        if checksum != fingerprint64(body) {
            return Err(corrupt("checksum mismatch"));
        }
        let (image, _): (Image, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| corrupt(&format!("undecodable: {e}")))?;
        let mut state = State {
            now_ms: image.now_ms,
            config: image.config,
            nodes: image.nodes.into(),
            kinds: image.kinds,
            roots: image.roots.into_iter().collect(),
            grants: image.grants.into_iter().map(|g| (g.id, g)).collect(),
            holds: image.holds.into_iter().map(|h| (h.id, h)).collect(),
            next_grant_id: image.next_grant_id,
            next_reservation_id: image.next_reservation_id,
            sent_floor_ms: image.sent_floor_ms,
            webhooks: image.webhooks.into_iter().map(|w| (w.id, w)).collect(),
            next_webhook_id: image.next_webhook_id,
            events_emitted: image.events_emitted,
            tokens: image.tokens.into_iter().map(|t| (t.id, t)).collect(),
            next_token_id: image.next_token_id,
            ..State::default()
        };
        for (id, expired) in image.expired {
            state.expired_order.push_back(id);
            state.expired.insert(id, expired);
        }
        state.dedup = Dedup::restore(image.dedup);
        state.rebuild_indexes().map_err(|why| corrupt(&why))?;
        state.check_invariants().map_err(|why| corrupt(&why))?;
        Ok(state)
    }

    /// The nodes at each depth and the holders of each role, counted from the nodes.
    pub(crate) fn tree_indexes(&self) -> (Vec<u64>, RoleHolders) {
        let mut at_depth: Vec<u64> = Vec::new();
        let mut holders = RoleHolders::default();
        for (i, node) in self.nodes.iter().enumerate() {
            let depth = usize::from(node.depth);
            if at_depth.len() <= depth {
                at_depth.resize(depth + 1, 0);
            }
            at_depth[depth] += 1;
            for role in node.extra().map(|e| e.roles.as_slice()).unwrap_or_default() {
                holders
                    .entry((node.root, role.clone()))
                    .or_default()
                    .insert(i as u64 + 1);
            }
        }
        (at_depth, holders)
    }

    fn rebuild_indexes(&mut self) -> std::result::Result<(), String> {
        let count = self.nodes.len() as u64;
        for (i, node) in self.nodes.iter().enumerate() {
            let id = i as u64 + 1;
            if node.parent > count
                || node.root == 0
                || node.root > count
                || usize::from(node.kind) >= self.kinds.len()
            {
                return Err(format!("node {id} references a missing node or kind"));
            }
            self.names
                .insert((node.parent, fingerprint64(node.name.as_bytes())), id);
        }
        (self.nodes_at_depth, self.role_holders) = self.tree_indexes();
        for (i, kind) in self.kinds.iter().enumerate() {
            self.kind_index.insert(kind.clone(), i as u16);
        }
        for hold in self.holds.values() {
            self.hold_due.insert((hold.expires_at_ms, hold.id));
            self.holds_by_node.insert((hold.node, hold.id));
            *self
                .holds_per_root
                .entry(self.node(hold.node).root)
                .or_default() += 1;
        }
        for grant in self.grants.values() {
            if let Some(due) = grant.due_ms() {
                self.grant_due.insert((due, grant.id));
            }
        }
        for token in self.tokens.values() {
            if token.scope.is_some_and(|node| node == 0 || node > count) {
                return Err(format!("token {} is scoped to a missing node", token.id));
            }
            if self
                .token_index
                .insert(token.secret_hash, token.id)
                .is_some()
            {
                return Err(format!("token {} shares its secret with another", token.id));
            }
        }
        Ok(())
    }

    /// A 128-bit digest of the whole state: equal on replicas that applied the same log.
    pub fn digest(&self) -> u128 {
        self.freeze().digest()
    }
}

/// A fixed-size header field; the caller slices exactly `N` bytes.
fn le_bytes<const N: usize>(field: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(field);
    out
}
