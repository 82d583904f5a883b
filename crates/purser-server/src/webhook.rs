//! Webhook delivery by the leader: for each subscription, the events after its replicated
//! cursor that match its kinds and its root are POSTed one at a time, signed, retried with
//! exponential backoff until the endpoint answers 2xx; after a run of deliveries the leader
//! proposes `WebhookDelivered` so that a new leader resumes there. At least once: a new leader
//! may repeat what the old one delivered after its last cursor write, always with the same
//! event id (the event's stream index).
//!
//! Signature (documented in docs/cli.md, "Webhooks"), like Stripe's:
//! `Purser-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with the
//! same `t` in `Purser-Timestamp`. A receiver recomputes it over the raw body, compares in
//! constant time, and rejects timestamps too far from its clock (replays).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use purser_core::{webhook::kind_matches, Command, Op, State, WebhookView};
use purser_storage::store::{EventRecord, EventsError};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::meter::describe;
use crate::node::{PurserNode, WriteError};

/// One POST (connect, send, read the answer) takes at most this long.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of an endpoint's answer read at most (its status line and headers; the body is
/// ignored).
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// Retry delays: the first, doubled after each failure up to the cap, each with jitter
/// (uniform in its upper half).
pub const RETRY_DELAY_MS_MIN: u64 = 100;
pub const RETRY_DELAY_MS_MAX: u64 = 30_000;
/// Events read from storage per step of a subscription.
const EVENTS_READ_MAX: usize = 256;
/// The cursor is proposed after this many deliveries, and when delivery has caught up, at
/// most once per `CURSOR_INTERVAL`.
const CURSOR_DELIVERIES_MAX: u64 = 64;
const CURSOR_INTERVAL: Duration = Duration::from_millis(500);
/// How often the supervisor compares the subscriptions with the running deliveries.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(250);

type HmacSha256 = Hmac<Sha256>;

// ---- signing -------------------------------------------------------------------------------

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature_header(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body)))
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// What a receiver does with `Purser-Signature`: the timestamp it signs, if a `v1` signature
/// matches the body and the timestamp is within `tolerance_s` of `now_s`.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<u64, &'static str> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("no timestamp (t=) in the signature header")?;
    if timestamp.abs_diff(now_s) > tolerance_s {
        return Err("timestamp outside the tolerance (a replay?)");
    }
    let mut expected = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    expected.update(timestamp.to_string().as_bytes());
    expected.update(b".");
    expected.update(body);
    // `verify_slice` compares in constant time.
    let matches = signatures
        .iter()
        .any(|s| unhex(s).is_some_and(|bytes| expected.clone().verify_slice(&bytes).is_ok()));
    if matches {
        Ok(timestamp)
    } else {
        Err("no v1 signature matches the body")
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- one POST ------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("invalid url {0:?}")]
    Url(String),
    #[error("no answer within {POST_TIMEOUT:?}")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not an HTTP answer: {0:?}")]
    Malformed(String),
}

/// `http://host:port/path` as `(host to connect to, port, Host header, path)`.
fn split_url(url: &str) -> Result<(String, u16, String, String), PostError> {
    let bad = || PostError::Url(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let slash = rest.find('/').ok_or_else(bad)?;
    let (authority, path) = rest.split_at(slash);
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port, authority.to_owned(), path.to_owned()))
}

/// POSTs one signed JSON body and returns the HTTP status of the answer.
pub async fn post(url: &str, secret: &str, event_id: u64, body: &[u8]) -> Result<u16, PostError> {
    let (host, port, authority, path) = split_url(url)?;
    let timestamp = unix_seconds();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: purser-webhook/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\
         Purser-Event-Id: {event_id}\r\nPurser-Timestamp: {timestamp}\r\n\
         Purser-Signature: {}\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len(),
        signature_header(secret.as_bytes(), timestamp, body),
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        stream.set_nodelay(true)?;
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await?;
        stream.flush().await?;
        read_status(&mut stream).await
    };
    tokio::time::timeout(POST_TIMEOUT, exchange)
        .await
        .map_err(|_| PostError::Timeout)?
}

/// Reads the answer's status line (and at most `RESPONSE_BYTES_MAX` bytes in all).
async fn read_status(stream: &mut tokio::net::TcpStream) -> Result<u16, PostError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < RESPONSE_BYTES_MAX {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n.min(RESPONSE_BYTES_MAX - buf.len())]);
    }
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(buf.len());
    let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(PostError::Malformed(line.chars().take(80).collect())),
    }
}

/// The signed `{"kind":"test"}` ping of `TestWebhook` (event id 0: no event has it).
pub async fn ping(hook: &WebhookView) -> Result<u16, PostError> {
    let body = serde_json::json!({ "kind": "test", "webhook_id": hook.id }).to_string();
    post(&hook.url, &hook.secret, 0, body.as_bytes()).await
}

/// The body of one event: `{"id", "kind", "node_id", "at_ms", "log_index", "event"}`.
pub fn event_body(
    record: &EventRecord,
    kind: &str,
    node_id: u64,
    json: serde_json::Value,
) -> Vec<u8> {
    serde_json::json!({
        "id": record.index,
        "kind": kind,
        "node_id": node_id,
        "at_ms": record.at_ms,
        "log_index": record.log_index,
        "event": json,
    })
    .to_string()
    .into_bytes()
}

/// The body to send for `record` if it matches the subscription (kind and root).
fn matching_body(state: &State, hook: &WebhookView, record: &EventRecord) -> Option<Vec<u8>> {
    let (kind, node_id, json) = describe(&record.event, state);
    let kind_ok = hook.kinds.iter().any(|k| kind_matches(k, &kind));
    let root_ok = state.root_of_node(node_id) == Some(hook.root);
    (kind_ok && root_ok).then(|| event_body(record, &kind, node_id, json))
}

// ---- the leader's deliveries ---------------------------------------------------------------

/// A delivery task that stops when dropped.
struct Worker(JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs on every member; delivers only while this member is the leader (one task per
/// subscription, each with one POST in flight at most). Holds a weak handle, like the ticker.
pub(crate) async fn deliverer(node: Weak<PurserNode>) {
    let mut workers: BTreeMap<u64, Worker> = BTreeMap::new();
    let mut interval = tokio::time::interval(SUPERVISE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(strong) = node.upgrade() else { return };
        if !strong.is_leader() {
            workers.clear();
            continue;
        }
        let hooks = strong.read_local(|state, _| state.webhooks());
        drop(strong);
        workers.retain(|id, w| !w.0.is_finished() && hooks.iter().any(|h| h.id == *id));
        for hook in hooks {
            if !workers.contains_key(&hook.id) {
                let id = hook.id;
                workers.insert(id, Worker(tokio::spawn(deliver(node.clone(), hook))));
            }
        }
    }
}

/// Delivery of a subscription stops: not the leader any more, the member is going away, or
/// the subscription is gone.
struct Stop;

/// Delivers one subscription from its replicated cursor on, until leadership is lost.
async fn deliver(node: Weak<PurserNode>, hook: WebhookView) {
    let Some(strong) = node.upgrade() else { return };
    let mut written = strong.sm.events_written();
    drop(strong);
    let mut cursor = Cursor::new(hook.delivered_through);
    loop {
        let Some(strong) = node.upgrade().filter(|n| n.is_leader()) else {
            return;
        };
        let records = match strong.sm.events_from(cursor.at + 1, EVENTS_READ_MAX) {
            Ok(records) => records,
            Err(EventsError::NotKept { wanted, oldest }) => {
                tracing::warn!(webhook = hook.id, wanted, oldest, "events before {oldest} are not kept on this member: they will not be delivered");
                cursor.at = oldest.saturating_sub(1).max(cursor.at);
                continue;
            }
            Err(EventsError::Io(e)) => {
                tracing::warn!(webhook = hook.id, "reading events: {e}");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            if cursor.due(true) && cursor.propose(&strong, hook.id).await.is_err() {
                return;
            }
            drop(strong);
            let _ = tokio::time::timeout(CURSOR_INTERVAL, written.changed()).await;
            continue;
        }
        let bodies: Vec<(u64, Option<Vec<u8>>)> = strong.read_local(|state, _| {
            records
                .iter()
                .map(|r| (r.index, matching_body(state, &hook, r)))
                .collect()
        });
        drop(strong);
        for (index, body) in bodies {
            if let Some(body) = body {
                if deliver_one(&node, &hook, index, &body).await.is_err() {
                    return;
                }
                cursor.delivered += 1;
            }
            cursor.at = index;
            if cursor.due(false) {
                let Some(strong) = node.upgrade() else { return };
                if cursor.propose(&strong, hook.id).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where delivery of one subscription stands, and what was last proposed.
struct Cursor {
    /// Every event up to here was delivered or did not match.
    at: u64,
    proposed: u64,
    proposed_at: Instant,
    /// Deliveries since the last proposal.
    delivered: u64,
}

impl Cursor {
    fn new(at: u64) -> Self {
        Cursor {
            at,
            proposed: at,
            proposed_at: Instant::now(),
            delivered: 0,
        }
    }

    /// Time to propose: many deliveries, or caught up and not proposed for a while.
    fn due(&self, caught_up: bool) -> bool {
        self.at > self.proposed
            && (self.delivered >= CURSOR_DELIVERIES_MAX
                || (caught_up && self.proposed_at.elapsed() >= CURSOR_INTERVAL))
    }

    /// Replicates the cursor. `Err` when delivery must stop (not the leader, subscription
    /// removed, shutting down); other failures are retried with the next proposal.
    async fn propose(&mut self, node: &PurserNode, id: u64) -> Result<(), Stop> {
        let command = Command {
            request: None,
            op: Op::WebhookDelivered {
                id,
                through_index: self.at,
            },
        };
        self.proposed_at = Instant::now();
        match node.write(command).await {
            Ok(written) => match written.result {
                Ok(_) => {
                    self.proposed = self.at;
                    self.delivered = 0;
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(webhook = id, "cursor not recorded: {e}");
                    Err(Stop)
                }
            },
            Err(WriteError::NotLeader { .. } | WriteError::ShuttingDown) => Err(Stop),
            Err(e) => {
                tracing::debug!(webhook = id, "cursor not recorded yet: {e}");
                Ok(())
            }
        }
    }
}

/// POSTs one event until the endpoint answers 2xx; stops early when this member is no longer
/// the leader (the next leader delivers it again).
async fn deliver_one(
    node: &Weak<PurserNode>,
    hook: &WebhookView,
    index: u64,
    body: &[u8],
) -> Result<(), Stop> {
    let mut delay_ms = RETRY_DELAY_MS_MIN;
    loop {
        if !node.upgrade().is_some_and(|n| n.is_leader()) {
            return Err(Stop);
        }
        match post(&hook.url, &hook.secret, index, body).await {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) => {
                tracing::debug!(
                    webhook = hook.id,
                    index,
                    status,
                    "endpoint refused the event"
                )
            }
            Err(e) => tracing::debug!(webhook = hook.id, index, "delivery failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(jittered(delay_ms))).await;
        delay_ms = (delay_ms * 2).min(RETRY_DELAY_MS_MAX);
    }
}

/// Uniform in `[delay / 2, delay]`, so that retries of many subscriptions spread out.
fn jittered(delay_ms: u64) -> u64 {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = delay_ms / 2;
    // Never below one millisecond for a positive delay: a zero sleep would spin.
    (half + random % (delay_ms - half + 1)).max(delay_ms.min(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering_and_old_timestamps() {
        let secret = b"0123456789abcdef";
        let body = br#"{"id":1}"#;
        let header = signature_header(secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(
            verify_signature(secret, &header, body, 1_700_000_100, 300),
            Ok(1_700_000_000)
        );
        assert!(verify_signature(secret, &header, b"{\"id\":2}", 1_700_000_000, 300).is_err());
        assert!(verify_signature(b"another secret!!", &header, body, 1_700_000_000, 300).is_err());
        assert!(verify_signature(secret, &header, body, 1_700_000_301, 300).is_err());
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let mut mac = HmacSha256::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_split_and_jitter_stays_in_range() {
        let (host, port, authority, path) = split_url("http://[::1]:8080/a/b?c=d").expect("splits");
        assert_eq!(
            (host.as_str(), port, authority.as_str(), path.as_str()),
            ("::1", 8080, "[::1]:8080", "/a/b?c=d")
        );
        assert!(split_url("https://h:1/x").is_err());
        for _ in 0..100 {
            let d = jittered(1000);
            assert!((500..=1000).contains(&d));
        }
        assert_eq!(jittered(1), 1);
    }
}
