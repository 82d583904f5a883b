//! Redis as the budget store: one hash per node (`limit`, `spent`, `remaining`), a reservation
//! is one Lua script over the four hashes of a user's chain (scripts run atomically), and so is
//! a settlement. The client is a minimal RESP2 one over a `TcpStream`, one connection per
//! session, so that the benchmark measures Redis and not a client library's pool.
//!
//! Lua numbers are doubles: the scripts only compare with them (exact below 2^53, where a
//! comparison with a small amount can matter) and change balances with `HINCRBY`, which Redis
//! does in exact 64-bit integers.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{ChainHold, ChainSession};
use crate::backend::{Backend, NodeAudit, Result};
use crate::workload::Tree;

const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A reply slower than this fails the call (Redis answers in microseconds when healthy).
const REPLY_TIMEOUT_MS: u64 = 30_000;
/// Replies the benchmark reads are short: status lines, integers, three-field arrays.
const LINE_BYTES_MAX: u64 = 1_024;
const BULK_BYTES_MAX: usize = 64 * 1_024;
const ARRAY_LEN_MAX: usize = 1_024;
const REPLY_DEPTH_MAX: usize = 4;
/// Commands written before their replies are read, in setup and audit.
const PIPELINE_COMMANDS_MAX: usize = 1_000;

/// KEYS: the four nodes of a chain; ARGV[1]: the amount, a positive integer as text.
/// Returns 1 and takes the amount off every `remaining` if all four have it, else 0.
const RESERVE_LUA: &str = r"
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local remaining = redis.call('HGET', KEYS[i], 'remaining')
  if not remaining then return redis.error_reply('no budget node ' .. KEYS[i]) end
  if tonumber(remaining) < amount then return 0 end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'remaining', '-' .. ARGV[1])
end
return 1
";

/// KEYS: the four nodes of a chain; ARGV[1]: what goes back to `remaining`; ARGV[2]: what
/// is added to `spent` (integers ≥ 0 as text).
const SETTLE_LUA: &str = r"
for i = 1, #KEYS do
  if ARGV[1] ~= '0' then redis.call('HINCRBY', KEYS[i], 'remaining', ARGV[1]) end
  if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[i], 'spent', ARGV[2]) end
end
return 1
";

/// KEYS[1]: the organization; ARGV[1]: its new limit. `remaining` moves by new − old.
const SET_LIMIT_LUA: &str = r"
local old = redis.call('HGET', KEYS[1], 'limit')
if not old then return redis.error_reply('no budget node ' .. KEYS[1]) end
if old ~= '0' then
  local negated = string.sub(old, 1, 1) == '-' and string.sub(old, 2) or '-' .. old
  redis.call('HINCRBY', KEYS[1], 'remaining', negated)
end
redis.call('HINCRBY', KEYS[1], 'remaining', ARGV[1])
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
return 1
";

pub struct Redis {
    addr: String,
    /// Setup, audit and limit changes share one connection.
    admin: Mutex<Conn>,
}

impl Redis {
    /// `addr` is `host:port`, e.g. `127.0.0.1:6379`.
    pub async fn connect(addr: &str) -> Result<Redis> {
        let mut admin = Conn::open(addr).await?;
        match admin.call(&["PING"]).await? {
            Reply::Status(s) if s == "PONG" => {}
            other => return Err(format!("redis at {addr} answered PING with {other:?}").into()),
        }
        Ok(Redis {
            addr: addr.to_string(),
            admin: Mutex::new(admin),
        })
    }
}

fn key(node: usize) -> String {
    format!("pb:{node}")
}

impl Backend for Redis {
    type Session = RedisSession;

    async fn setup(&self, tree: &Tree) -> Result<()> {
        let mut conn = self.admin.lock().await;
        expect_ok(conn.call(&["FLUSHDB"]).await?)?;
        for (batch, nodes) in tree.nodes.chunks(PIPELINE_COMMANDS_MAX).enumerate() {
            for (i, node) in nodes.iter().enumerate() {
                let limit = node.limit.to_string();
                let key = key(batch * PIPELINE_COMMANDS_MAX + i);
                conn.push(&[
                    "HSET",
                    &key,
                    "limit",
                    &limit,
                    "spent",
                    "0",
                    "remaining",
                    &limit,
                ]);
            }
            conn.flush().await?;
            for _ in nodes {
                expect_int(conn.read().await?)?;
            }
        }
        Ok(())
    }

    async fn session(&self, _index: usize) -> Result<RedisSession> {
        let mut conn = Conn::open(&self.addr).await?;
        let reserve = Script::load(&mut conn, RESERVE_LUA).await?;
        let settle = Script::load(&mut conn, SETTLE_LUA).await?;
        Ok(RedisSession {
            conn,
            reserve,
            settle,
        })
    }

    async fn set_org_limit(&self, tree: &Tree, limit: i64) -> Result<()> {
        assert!(tree.nodes[0].parent.is_none(), "node 0 is the organization");
        let mut conn = self.admin.lock().await;
        let script = Script::load(&mut conn, SET_LIMIT_LUA).await?;
        let reply = script
            .run(&mut conn, &[&key(0)], &[&limit.to_string()])
            .await?;
        expect_int(reply).map(drop)
    }

    async fn audit(&self, tree: &Tree) -> Result<Vec<NodeAudit>> {
        let mut conn = self.admin.lock().await;
        let mut audit = Vec::with_capacity(tree.nodes.len());
        let indices: Vec<usize> = (0..tree.nodes.len()).collect();
        for batch in indices.chunks(PIPELINE_COMMANDS_MAX) {
            for &node in batch {
                conn.push(&["HMGET", &key(node), "limit", "spent", "remaining"]);
            }
            conn.flush().await?;
            for &node in batch {
                audit.push(node_audit(node, conn.read().await?)?);
            }
        }
        Ok(audit)
    }
}

fn node_audit(node: usize, reply: Reply) -> Result<NodeAudit> {
    let fields = match reply {
        Reply::Array(Some(fields)) if fields.len() == 3 => fields,
        other => return Err(format!("HMGET {} answered {other:?}", key(node)).into()),
    };
    let mut values = [0i64; 3];
    for (value, field) in values.iter_mut().zip(fields) {
        *value = match field {
            Reply::Bulk(Some(bytes)) => parse_i64(&bytes)?,
            other => return Err(format!("node {} lacks a field: {other:?}", key(node)).into()),
        };
    }
    let [limit, spent, remaining] = values;
    Ok(NodeAudit {
        limit,
        spent,
        held: limit - spent - remaining,
    })
}

pub struct RedisSession {
    conn: Conn,
    reserve: Script,
    settle: Script,
}

fn chain_keys(chain: &[usize; 4]) -> [String; 4] {
    chain.map(key)
}

impl ChainSession for RedisSession {
    async fn hold_chain(&mut self, hold: &ChainHold) -> Result<bool> {
        let keys = chain_keys(&hold.chain);
        let keys = keys.each_ref().map(String::as_str);
        let reply = self
            .reserve
            .run(&mut self.conn, &keys, &[&hold.amount.to_string()])
            .await?;
        match expect_int(reply)? {
            1 => Ok(true),
            0 => Ok(false),
            n => Err(format!("the reserve script answered {n}").into()),
        }
    }

    async fn settle_chain(&mut self, chain: &[usize; 4], back: i64, spent: i64) -> Result<()> {
        let keys = chain_keys(chain);
        let keys = keys.each_ref().map(String::as_str);
        let args = [back.to_string(), spent.to_string()];
        let args = args.each_ref().map(String::as_str);
        let reply = self.settle.run(&mut self.conn, &keys, &args).await?;
        expect_int(reply).map(drop)
    }
}

/// A script known by its SHA1 (`SCRIPT LOAD`); sent whole again if the server forgot it.
struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    async fn load(conn: &mut Conn, body: &'static str) -> Result<Script> {
        match conn.call(&["SCRIPT", "LOAD", body]).await? {
            Reply::Bulk(Some(sha)) => Ok(Script {
                body,
                sha: String::from_utf8(sha)?,
            }),
            other => Err(format!("SCRIPT LOAD answered {other:?}").into()),
        }
    }

    async fn run(&self, conn: &mut Conn, keys: &[&str], args: &[&str]) -> Result<Reply> {
        let reply = conn
            .call(&eval_args("EVALSHA", &self.sha, keys, args))
            .await?;
        match reply {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                let reply = conn.call(&eval_args("EVAL", self.body, keys, args)).await?;
                expect_no_error(reply)
            }
            reply => expect_no_error(reply),
        }
    }
}

fn eval_args<'a>(
    command: &'a str,
    script: &'a str,
    keys: &[&'a str],
    args: &[&'a str],
) -> Vec<&'a str> {
    let mut all = Vec::with_capacity(3 + keys.len() + args.len());
    all.extend([command, script]);
    // `numkeys` is pushed as a literal: the benchmark's scripts take one or four keys.
    all.push(match keys.len() {
        1 => "1",
        4 => "4",
        n => panic!("no script of the benchmark takes {n} keys"),
    });
    all.extend_from_slice(keys);
    all.extend_from_slice(args);
    all
}

#[derive(Debug, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

fn expect_no_error(reply: Reply) -> Result<Reply> {
    match reply {
        Reply::Error(e) => Err(format!("redis: {e}").into()),
        reply => Ok(reply),
    }
}

fn expect_ok(reply: Reply) -> Result<()> {
    match reply {
        Reply::Status(s) if s == "OK" => Ok(()),
        other => Err(format!("redis answered {other:?}, not OK").into()),
    }
}

fn expect_int(reply: Reply) -> Result<i64> {
    match expect_no_error(reply)? {
        Reply::Int(n) => Ok(n),
        other => Err(format!("redis answered {other:?}, not an integer").into()),
    }
}

fn parse_i64(bytes: &[u8]) -> Result<i64> {
    Ok(std::str::from_utf8(bytes)?.parse::<i64>()?)
}

/// One RESP2 connection: commands are encoded into `out` (`push`), written together
/// (`flush`), and their replies read back in order (`read`).
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    out: Vec<u8>,
    line: Vec<u8>,
}

/// What one line of a reply starts: a whole value, or an array of this many more values.
enum Head {
    Value(Reply),
    Array(usize),
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn> {
        let connect = TcpStream::connect(addr);
        let stream = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect)
            .await
            .map_err(|_| format!("connecting to redis at {addr} timed out"))??;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(Conn {
            reader: BufReader::new(reader),
            writer,
            out: Vec::with_capacity(1_024),
            line: Vec::with_capacity(128),
        })
    }

    async fn call(&mut self, args: &[&str]) -> Result<Reply> {
        self.push(args);
        self.flush().await?;
        self.read().await
    }

    fn push(&mut self, args: &[&str]) {
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            self.out
                .extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.out.extend_from_slice(arg.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
    }

    async fn flush(&mut self) -> Result<()> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    async fn read(&mut self) -> Result<Reply> {
        tokio::time::timeout(Duration::from_millis(REPLY_TIMEOUT_MS), self.read_reply())
            .await
            .map_err(|_| format!("no reply from redis in {REPLY_TIMEOUT_MS} ms"))?
    }

    /// Reads one reply, nested arrays included, with an explicit stack of open arrays.
    async fn read_reply(&mut self) -> Result<Reply> {
        let mut open: Vec<(Vec<Reply>, usize)> = Vec::new();
        loop {
            let mut value = match self.read_head().await? {
                Head::Value(value) => value,
                Head::Array(0) => Reply::Array(Some(Vec::new())),
                Head::Array(len) => {
                    if open.len() == REPLY_DEPTH_MAX {
                        return Err("redis reply nested too deep".into());
                    }
                    open.push((Vec::with_capacity(len), len));
                    continue;
                }
            };
            loop {
                let Some((items, len)) = open.last_mut() else {
                    return Ok(value);
                };
                items.push(value);
                if items.len() < *len {
                    break;
                }
                let (items, _) = open.pop().expect("an array is open");
                value = Reply::Array(Some(items));
            }
        }
    }

    async fn read_head(&mut self) -> Result<Head> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(LINE_BYTES_MAX)
            .read_until(b'\n', &mut self.line)
            .await?;
        if read == 0 {
            return Err("redis closed the connection".into());
        }
        let Some(line) = self.line.strip_suffix(b"\r\n") else {
            return Err("redis sent a line without CRLF (or longer than allowed)".into());
        };
        let (&kind, rest) = line.split_first().ok_or("redis sent an empty line")?;
        let text = std::str::from_utf8(rest)?;
        Ok(match kind {
            b'+' => Head::Value(Reply::Status(text.to_string())),
            b'-' => Head::Value(Reply::Error(text.to_string())),
            b':' => Head::Value(Reply::Int(text.parse()?)),
            b'$' => match text.parse::<i64>()? {
                -1 => Head::Value(Reply::Bulk(None)),
                len => Head::Value(Reply::Bulk(Some(self.read_bulk(len).await?))),
            },
            b'*' => match text.parse::<i64>()? {
                -1 => Head::Value(Reply::Array(None)),
                len if (0..=ARRAY_LEN_MAX as i64).contains(&len) => Head::Array(len as usize),
                len => return Err(format!("redis sent an array of {len} items").into()),
            },
            other => return Err(format!("redis sent a reply of unknown type {other:#x}").into()),
        })
    }

    async fn read_bulk(&mut self, len: i64) -> Result<Vec<u8>> {
        if !(0..=BULK_BYTES_MAX as i64).contains(&len) {
            return Err(format!("redis sent a bulk string of {len} bytes").into());
        }
        let mut bytes = vec![0u8; len as usize + 2];
        self.reader.read_exact(&mut bytes).await?;
        if !bytes.ends_with(b"\r\n") {
            return Err("redis sent a bulk string without CRLF".into());
        }
        bytes.truncate(len as usize);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connection to a one-shot server that sends `bytes` and then closes.
    async fn conn_reading(bytes: &'static [u8]) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("has an address").to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accepts");
            socket.write_all(bytes).await.expect("writes");
        });
        Conn::open(&addr).await.expect("connects")
    }

    #[tokio::test]
    async fn replies_parse_nested_and_null_values() {
        let mut conn = conn_reading(
            b"+OK\r\n-NOSCRIPT No matching script\r\n:-42\r\n$-1\r\n$3\r\na\r\n\r\n\
              *3\r\n$1\r\n7\r\n*2\r\n:1\r\n*0\r\n$-1\r\n*-1\r\n",
        )
        .await;
        assert_eq!(
            conn.read().await.expect("status"),
            Reply::Status("OK".into())
        );
        assert_eq!(
            conn.read().await.expect("error"),
            Reply::Error("NOSCRIPT No matching script".into())
        );
        assert_eq!(conn.read().await.expect("integer"), Reply::Int(-42));
        assert_eq!(conn.read().await.expect("null bulk"), Reply::Bulk(None));
        assert_eq!(
            conn.read().await.expect("bulk with CRLF inside"),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(
            conn.read().await.expect("nested array"),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"7".to_vec())),
                Reply::Array(Some(vec![Reply::Int(1), Reply::Array(Some(Vec::new()))])),
                Reply::Bulk(None),
            ]))
        );
        assert_eq!(conn.read().await.expect("null array"), Reply::Array(None));
        assert!(
            conn.read().await.is_err(),
            "the server closed the connection"
        );
    }

    #[tokio::test]
    async fn too_deep_or_too_long_replies_fail() {
        let mut conn = conn_reading(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").await;
        assert!(conn.read().await.is_err());
        let mut conn = conn_reading(b"$100000000\r\n").await;
        assert!(conn.read().await.is_err());
    }

    #[test]
    fn audits_derive_holds_from_remaining() {
        let reply = Reply::Array(Some(vec![
            Reply::Bulk(Some(b"100".to_vec())),
            Reply::Bulk(Some(b"30".to_vec())),
            Reply::Bulk(Some(b"50".to_vec())),
        ]));
        let audit = node_audit(0, reply).expect("parses");
        assert_eq!(
            audit,
            NodeAudit {
                limit: 100,
                spent: 30,
                held: 20
            }
        );
        let missing = Reply::Array(Some(vec![
            Reply::Bulk(None),
            Reply::Bulk(None),
            Reply::Bulk(None),
        ]));
        assert!(node_audit(0, missing).is_err());
        let args = eval_args("EVALSHA", "abc", &["k1"], &["5"]);
        assert_eq!(args, ["EVALSHA", "abc", "1", "k1", "5"]);
    }
}
