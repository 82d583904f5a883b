//! Snapshots: the whole state in a canonical byte form. Restoring a snapshot and taking one
//! again gives the same bytes, and two replicas with equal state give equal bytes, so the
//! digest of a snapshot is the digest of the state.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::{fingerprint128, fingerprint64};
use crate::state::{Config, Dedup, DedupEntry, Expired, Grant, Hold, Node, Root, State};
use crate::webhook::Webhook;

const MAGIC: &[u8; 8] = b"PURSERSM";
/// Bumped on any change to the encoding; `restore` refuses versions it does not know.
/// 2: webhook subscriptions, their cursors and the count of events emitted.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

/// The encoded form, borrowed for encoding; [`Image`] is the same layout, owned, for decoding.
#[derive(Serialize)]
struct ImageRef<'a> {
    now_ms: u64,
    config: &'a Config,
    nodes: &'a [Node],
    kinds: &'a [String],
    roots: Vec<(u64, &'a Root)>,
    grants: Vec<&'a Grant>,
    holds: Vec<&'a Hold>,
    expired: Vec<(u64, &'a Expired)>,
    dedup: Vec<(u128, DedupEntry)>,
    next_grant_id: u64,
    next_reservation_id: u64,
    sent_floor_ms: u64,
    webhooks: Vec<&'a Webhook>,
    next_webhook_id: u64,
    events_emitted: u64,
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
}

impl State {
    /// `MAGIC ++ version (u32 LE) ++ length (u64 LE) ++ body ++ checksum (u64 LE)`.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut holds: Vec<&Hold> = self.holds.values().collect();
        holds.sort_unstable_by_key(|h| h.id);
        let image = ImageRef {
            now_ms: self.now_ms,
            config: &self.config,
            nodes: &self.nodes,
            kinds: &self.kinds,
            roots: self.roots.iter().map(|(k, v)| (*k, v)).collect(),
            grants: self.grants.values().collect(),
            holds,
            expired: self
                .expired_order
                .iter()
                .filter_map(|id| self.expired.get(id).map(|e| (*id, e)))
                .collect(),
            dedup: self.live_requests(),
            next_grant_id: self.next_grant_id,
            next_reservation_id: self.next_reservation_id,
            sent_floor_ms: self.sent_floor_ms,
            webhooks: self.webhooks.values().collect(),
            next_webhook_id: self.next_webhook_id,
            events_emitted: self.events_emitted,
        };
        let body = bincode::serde::encode_to_vec(&image, bincode::config::standard())
            .expect("state encodes");
        let mut out = Vec::with_capacity(body.len() + 28);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&fingerprint64(&body).to_le_bytes());
        out
    }

    /// Rebuilds a state from [`State::snapshot`] bytes. A damaged, truncated or foreign
    /// snapshot is refused with an error, never half-loaded.
    pub fn restore(bytes: &[u8]) -> Result<State> {
        let corrupt = |why: &str| Error::invalid(format!("snapshot refused: {why}"));
        if bytes.len() < 28 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a Purser state snapshot"));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(corrupt(&format!(
                "format version {version}, this build reads {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        if len != (bytes.len() - 28) as u64 {
            return Err(corrupt("length does not match (truncated?)"));
        }
        let body = &bytes[20..bytes.len() - 8];
        let checksum = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().expect("8 bytes"));
        if checksum != fingerprint64(body) {
            return Err(corrupt("checksum mismatch"));
        }
        let (image, _): (Image, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| corrupt(&format!("undecodable: {e}")))?;
        let mut state = State {
            now_ms: image.now_ms,
            config: image.config,
            nodes: image.nodes,
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
            ..State::default()
        };
        for (id, expired) in image.expired {
            state.expired_order.push_back(id);
            state.expired.insert(id, expired);
        }
        let mut dedup = Dedup::default();
        dedup.map.extend(image.dedup);
        state.dedup = dedup;
        state.rebuild_indexes().map_err(|why| corrupt(&why))?;
        state.check_invariants().map_err(|why| corrupt(&why))?;
        Ok(state)
    }

    /// Remembered request ids that are still live, in canonical order.
    pub(crate) fn live_requests(&self) -> Vec<(u128, DedupEntry)> {
        let mut live: Vec<(u128, DedupEntry)> = self
            .dedup
            .map
            .iter()
            .filter(|(_, e)| e.forget_at_ms >= self.now_ms)
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        live.sort_unstable_by_key(|(k, e)| (e.forget_at_ms, *k));
        live
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
        for (i, kind) in self.kinds.iter().enumerate() {
            self.kind_index.insert(kind.clone(), i as u16);
        }
        for hold in self.holds.values() {
            self.hold_due.insert((hold.expires_at_ms, hold.id));
        }
        for grant in self.grants.values() {
            if let Some(due) = grant.due_ms() {
                self.grant_due.insert((due, grant.id));
            }
        }
        Ok(())
    }

    /// A 128-bit digest of the whole state: equal on replicas that applied the same log.
    pub fn digest(&self) -> u128 {
        fingerprint128(&self.snapshot())
    }

    /// Structural invariants that hold after every applied command (I2, and the bookkeeping
    /// that I1 and I3 rest on). Cost is linear in the state: for tests, restore and audits.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let count = self.nodes.len();
        let mut held = vec![Vec::<u64>::new(); count];
        let mut holds_open = vec![0u32; count];
        let mut subtree_debt = vec![Vec::<u64>::new(); count];
        for (i, node) in self.nodes.iter().enumerate() {
            let currencies = self
                .roots
                .get(&node.root)
                .ok_or("node without root")?
                .currencies
                .len();
            if node.accounts.len() != currencies {
                return Err(format!(
                    "node {} has {} accounts for {currencies} currencies",
                    i + 1,
                    node.accounts.len()
                ));
            }
            held[i] = vec![0; currencies];
            subtree_debt[i] = vec![0; currencies];
        }
        let mut grant_held = std::collections::BTreeMap::<u64, u64>::new();
        for hold in self.holds.values() {
            if hold.node == 0 || hold.node as usize > count {
                return Err(format!("hold {} on a missing node", hold.id));
            }
            holds_open[hold.node as usize - 1] += 1;
            for &id in self.path_ids(hold.node).as_slice() {
                held[id as usize - 1][hold.currency as usize] += hold.amount;
            }
            let planned: u64 = hold.plan.iter().map(|p| p.1).sum();
            if !hold.plan.is_empty() && planned != hold.amount {
                return Err(format!(
                    "hold {} plans {planned} of {}",
                    hold.id, hold.amount
                ));
            }
            for &(g, part) in &hold.plan {
                *grant_held.entry(g).or_default() += part;
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            for (c, account) in node.accounts.iter().enumerate() {
                if account.debt > 0 {
                    for &id in self.path_ids(i as u64 + 1).as_slice() {
                        subtree_debt[id as usize - 1][c] += account.debt;
                    }
                }
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.holds_open != holds_open[i] {
                return Err(format!(
                    "node {} counts {} open holds, has {}",
                    i + 1,
                    node.holds_open,
                    holds_open[i]
                ));
            }
            for (c, account) in node.accounts.iter().enumerate() {
                if account.held != held[i][c] {
                    return Err(format!(
                        "node {} holds {} but its subtree's holds sum to {}",
                        i + 1,
                        account.held,
                        held[i][c]
                    ));
                }
                if account.subtree_debt != subtree_debt[i][c] {
                    return Err(format!(
                        "node {} subtree debt {} != {}",
                        i + 1,
                        account.subtree_debt,
                        subtree_debt[i][c]
                    ));
                }
            }
        }
        for grant in self.grants.values() {
            if grant.held > grant.remaining {
                return Err(format!(
                    "grant {} holds {} of {} remaining (I2)",
                    grant.id, grant.held, grant.remaining
                ));
            }
            let expected = grant_held.get(&grant.id).copied().unwrap_or(0);
            if grant.held != expected {
                return Err(format!(
                    "grant {} held {} but holds plan {expected}",
                    grant.id, grant.held
                ));
            }
            if grant.expired && grant.remaining != grant.held {
                return Err(format!(
                    "expired grant {} keeps more than it holds",
                    grant.id
                ));
            }
        }
        for g in grant_held.keys() {
            if !self.grants.contains_key(g) {
                return Err(format!("a hold plans on missing grant {g}"));
            }
        }
        self.check_webhooks()
    }
}
