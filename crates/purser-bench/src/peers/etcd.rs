//! etcd as the budget store: one key per node whose value is `remaining,spent,limit` as text.
//! A reservation reads the four keys of the user's chain in one read-only transaction, checks
//! `remaining`, then writes the four new values in one transaction guarded by the four keys'
//! `mod_revision`: the optimistic compare-and-swap that etcd's own STM does. When a guard
//! fails (a conflict), the session backs off for a random time whose ceiling doubles with
//! each conflict in a row, reads again and retries. Every reservation touches the
//! organization's key, so all sessions contend for it: retrying at once made 256 clients
//! collide in lockstep (about 6 reservations/s in our runs); with the backoff, about 25.
//! Every request goes through Raft (linearizable reads included), forwarded by the member a
//! session talks to when it does not lead.

use std::time::Duration;

use purser_client::normalize_endpoint;
use tonic::transport::{Channel, Endpoint};

use super::{ChainHold, ChainSession};
use crate::backend::{Backend, NodeAudit, Result};
use crate::workload::{Rng, Tree};

/// The generated client of etcd's KV service (`proto/etcd/rpc.proto`).
pub mod pb {
    // Generated code: new clippy lints or proto comments must not fail the workspace build.
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::{compare, request_op, response_op};

const PREFIX: &str = "/purser-bench/node/";
const CONNECT_TIMEOUT_MS: u64 = 5_000;
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// The audit reads the tree in pages of this many keys.
const RANGE_PAGE_KEYS: i64 = 1_000;
/// etcd refuses transactions of more than 128 operations by default (`--max-txn-ops`).
const SETUP_TXN_OPS_MAX: usize = 100;
const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Compare-and-swap attempts of one reservation or settlement before it fails.
const CAS_ATTEMPTS_MAX: u32 = 10_000;
/// The first retry waits up to this long; each conflict in a row doubles it, up to the max.
const BACKOFF_BASE_US: u64 = 500;
const BACKOFF_MAX_US: u64 = 1_000_000;

pub struct Etcd {
    endpoints: Vec<String>,
    /// Setup, audit and limit changes go through the first endpoint.
    admin: KvClient<Channel>,
}

impl Etcd {
    /// `endpoints` are client URLs such as `http://127.0.0.1:2379` (`http://` may be left out).
    pub async fn connect(endpoints: &[String]) -> Result<Etcd> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| normalize_endpoint(e)).collect();
        let first = endpoints
            .first()
            .ok_or("etcd needs at least one endpoint")?;
        let mut admin = kv_client(first).await?;
        let probe = pb::RangeRequest {
            key: PREFIX.into(),
            range_end: prefix_end(PREFIX),
            count_only: true,
            ..Default::default()
        };
        admin.range(probe).await?;
        Ok(Etcd { endpoints, admin })
    }
}

async fn kv_client(endpoint: &str) -> Result<KvClient<Channel>> {
    let channel = Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connecting to etcd at {endpoint}: {e}"))?;
    Ok(KvClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX))
}

/// Zero-padded, so that keys sort in `tree.nodes` order.
fn key(node: usize) -> Vec<u8> {
    format!("{PREFIX}{node:08}").into_bytes()
}

fn node_of(key: &[u8]) -> Result<usize> {
    let digits = key
        .strip_prefix(PREFIX.as_bytes())
        .ok_or("an etcd key outside the benchmark's prefix")?;
    Ok(std::str::from_utf8(digits)?.parse()?)
}

/// The end of the range of every key that starts with `prefix` (its last byte plus one).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.last_mut().expect("the prefix is not empty");
    assert!(
        *last < 0xff,
        "the prefix ends in a byte that can be incremented"
    );
    *last += 1;
    end
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Balance {
    remaining: i64,
    spent: i64,
    limit: i64,
}

impl Balance {
    fn encode(&self) -> Vec<u8> {
        format!("{},{},{}", self.remaining, self.spent, self.limit).into_bytes()
    }

    fn decode(value: &[u8]) -> Result<Balance> {
        let text = std::str::from_utf8(value)?;
        let mut fields = text.split(',').map(str::parse::<i64>);
        let mut next = || -> Result<i64> {
            Ok(fields
                .next()
                .ok_or_else(|| format!("a budget value with too few fields: {text:?}"))??)
        };
        let balance = Balance {
            remaining: next()?,
            spent: next()?,
            limit: next()?,
        };
        if fields.next().is_some() {
            return Err(format!("a budget value with too many fields: {text:?}").into());
        }
        Ok(balance)
    }
}

fn range_op(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

fn same_mod_revision(key: Vec<u8>, mod_revision: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Mod as i32,
        key,
        target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
        ..Default::default()
    }
}

/// The key-values of a transaction made only of single-key Range operations, in order.
fn read_values(keys: &[Vec<u8>], responses: Vec<pb::ResponseOp>) -> Result<Vec<pb::KeyValue>> {
    if responses.len() != keys.len() {
        return Err(format!("etcd answered {} of {} reads", responses.len(), keys.len()).into());
    }
    let mut values = Vec::with_capacity(keys.len());
    for (key, response) in keys.iter().zip(responses) {
        let Some(response_op::Response::ResponseRange(range)) = response.response else {
            return Err("etcd answered a read with something else".into());
        };
        let kv = range
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| format!("no budget node {}", String::from_utf8_lossy(key)))?;
        values.push(kv);
    }
    Ok(values)
}

/// What a session keeps between compare-and-swap loops: the conflicts it met, and the random
/// stream that spreads its retries out.
struct Contention {
    conflicts: u64,
    rng: Rng,
}

impl Contention {
    fn new(seed: u64) -> Contention {
        Contention {
            conflicts: 0,
            rng: Rng::new(seed),
        }
    }

    /// Sleeps a random time below a ceiling that doubles with each conflict in a row (full
    /// jitter), so that contenders for a hot key stop colliding in lockstep.
    async fn back_off(&mut self, in_a_row: u32) {
        self.conflicts += 1;
        let ceiling_us = (BACKOFF_BASE_US << in_a_row.min(16)).min(BACKOFF_MAX_US);
        let sleep_us = self.rng.below(ceiling_us + 1);
        tokio::time::sleep(Duration::from_micros(sleep_us)).await;
    }
}

/// Reads `keys` linearizably in one round trip (a read-only transaction).
async fn read(kv: &mut KvClient<Channel>, keys: &[Vec<u8>]) -> Result<Vec<pb::KeyValue>> {
    let txn = pb::TxnRequest {
        success: keys.iter().cloned().map(range_op).collect(),
        ..Default::default()
    };
    read_values(keys, kv.txn(txn).await?.into_inner().responses)
}

/// Reads `keys`, applies `change` to their balances and writes them back if none changed
/// meanwhile; on a conflict, backs off, reads again and retries. `change` returning false
/// leaves everything as it is (a denial): the answer is then false.
async fn compare_and_swap<F>(
    kv: &mut KvClient<Channel>,
    keys: &[Vec<u8>],
    contention: &mut Contention,
    mut change: F,
) -> Result<bool>
where
    F: FnMut(&mut [Balance]) -> bool,
{
    for attempt in 0..CAS_ATTEMPTS_MAX {
        if attempt > 0 {
            contention.back_off(attempt - 1).await;
        }
        let current = read(kv, keys).await?;
        let mut balances = current
            .iter()
            .map(|kv| Balance::decode(&kv.value))
            .collect::<Result<Vec<_>>>()?;
        if !change(&mut balances) {
            return Ok(false);
        }
        let txn = pb::TxnRequest {
            compare: keys
                .iter()
                .zip(&current)
                .map(|(key, kv)| same_mod_revision(key.clone(), kv.mod_revision))
                .collect(),
            success: keys
                .iter()
                .zip(&balances)
                .map(|(key, balance)| put_op(key.clone(), balance.encode()))
                .collect(),
            failure: Vec::new(),
        };
        if kv.txn(txn).await?.into_inner().succeeded {
            return Ok(true);
        }
    }
    Err(format!("{CAS_ATTEMPTS_MAX} conflicting attempts in a row").into())
}

impl Backend for Etcd {
    type Session = EtcdSession;

    async fn setup(&self, tree: &Tree) -> Result<()> {
        let mut kv = self.admin.clone();
        kv.delete_range(pb::DeleteRangeRequest {
            key: PREFIX.into(),
            range_end: prefix_end(PREFIX),
            ..Default::default()
        })
        .await?;
        let indices: Vec<usize> = (0..tree.nodes.len()).collect();
        for batch in indices.chunks(SETUP_TXN_OPS_MAX) {
            let success = batch
                .iter()
                .map(|&node| {
                    let limit = tree.nodes[node].limit;
                    let balance = Balance {
                        remaining: limit,
                        spent: 0,
                        limit,
                    };
                    put_op(key(node), balance.encode())
                })
                .collect();
            let txn = pb::TxnRequest {
                success,
                ..Default::default()
            };
            if !kv.txn(txn).await?.into_inner().succeeded {
                return Err("etcd refused an unconditional transaction".into());
            }
        }
        Ok(())
    }

    async fn session(&self, index: usize) -> Result<EtcdSession> {
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        Ok(EtcdSession {
            kv: kv_client(endpoint).await?,
            contention: Contention::new(index as u64 + 1),
        })
    }

    async fn set_org_limit(&self, tree: &Tree, limit: i64) -> Result<()> {
        assert!(tree.nodes[0].parent.is_none(), "node 0 is the organization");
        let mut kv = self.admin.clone();
        let mut contention = Contention::new(0);
        compare_and_swap(&mut kv, &[key(0)], &mut contention, |b| {
            b[0].remaining += limit - b[0].limit;
            b[0].limit = limit;
            true
        })
        .await
        .map(drop)
    }

    async fn audit(&self, tree: &Tree) -> Result<Vec<NodeAudit>> {
        let mut kv = self.admin.clone();
        let mut audit = Vec::with_capacity(tree.nodes.len());
        let mut start = key(0);
        // Every page at the first page's revision: one consistent snapshot.
        let mut revision = 0;
        loop {
            let page = kv
                .range(pb::RangeRequest {
                    key: start.clone(),
                    range_end: prefix_end(PREFIX),
                    limit: RANGE_PAGE_KEYS,
                    revision,
                    ..Default::default()
                })
                .await?
                .into_inner();
            revision = page.header.as_ref().map_or(0, |h| h.revision);
            for kv in &page.kvs {
                let node = node_of(&kv.key)?;
                if node != audit.len() {
                    return Err(format!("node {} missing from etcd", audit.len()).into());
                }
                let b = Balance::decode(&kv.value)?;
                audit.push(NodeAudit {
                    limit: b.limit,
                    spent: b.spent,
                    held: b.limit - b.spent - b.remaining,
                });
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        if audit.len() != tree.nodes.len() {
            return Err(format!("etcd holds {} of {} nodes", audit.len(), tree.nodes.len()).into());
        }
        Ok(audit)
    }
}

pub struct EtcdSession {
    kv: KvClient<Channel>,
    contention: Contention,
}

impl ChainSession for EtcdSession {
    async fn hold_chain(&mut self, hold: &ChainHold) -> Result<bool> {
        let amount = hold.amount;
        let keys = hold.chain.map(key);
        compare_and_swap(&mut self.kv, &keys, &mut self.contention, |balances| {
            if balances.iter().any(|b| b.remaining < amount) {
                return false;
            }
            for b in balances.iter_mut() {
                b.remaining -= amount;
            }
            true
        })
        .await
    }

    async fn settle_chain(&mut self, chain: &[usize; 4], back: i64, spent: i64) -> Result<()> {
        let keys = chain.map(key);
        compare_and_swap(&mut self.kv, &keys, &mut self.contention, |balances| {
            for b in balances.iter_mut() {
                b.remaining += back;
                b.spent += spent;
            }
            true
        })
        .await?;
        Ok(())
    }

    fn conflicts_retried(&self) -> u64 {
        self.contention.conflicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_round_trip_and_keys_sort_by_node() {
        let b = Balance {
            remaining: -5,
            spent: 10_000_000_000_000_000,
            limit: 7,
        };
        assert_eq!(Balance::decode(&b.encode()).expect("decodes"), b);
        assert!(Balance::decode(b"1,2").is_err());
        assert!(Balance::decode(b"1,2,3,4").is_err());
        assert!(key(9) < key(10));
        assert_eq!(node_of(&key(3712)).expect("parses"), 3712);
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }
}
