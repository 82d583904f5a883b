//! A Purser client: give it every member's client address; it finds the leader, follows
//! redirects, retries unavailable members and unknown outcomes with the same request (so the
//! same request id, which the cluster deduplicates), and gives up after a bounded time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use purser_proto::pb;

mod coalesce;
pub use coalesce::{CoalesceConfig, Coalescer, ItemResult, Op};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

/// Metadata key a follower sets to the leader's client address.
pub const LEADER_METADATA: &str = "purser-leader";

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Per attempt.
    pub request_timeout: Duration,
    /// All attempts of one call together.
    pub call_timeout: Duration,
    pub attempts_max: u32,
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            attempts_max: 30,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered and refused: not worth retrying as is.
    #[error("{}", .0.message())]
    Status(Status),
    /// No member answered in time; a write may or may not have been applied.
    #[error("no answer from the cluster after {attempts} attempts ({last})")]
    Unreachable { attempts: u32, last: String },
    #[error("bad endpoint {0:?}")]
    BadEndpoint(String),
}

impl ClientError {
    /// The same error, for each of several callers that shared one attempt.
    pub fn duplicate(&self) -> ClientError {
        match self {
            ClientError::Status(s) => ClientError::Status(s.clone()),
            ClientError::Unreachable { attempts, last } => ClientError::Unreachable {
                attempts: *attempts,
                last: last.clone(),
            },
            ClientError::BadEndpoint(e) => ClientError::BadEndpoint(e.clone()),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ClientError::Status(s) => s.code(),
            ClientError::Unreachable { .. } => Code::Unavailable,
            ClientError::BadEndpoint(_) => Code::InvalidArgument,
        }
    }
}

pub struct Client {
    endpoints: Vec<String>,
    config: ClientConfig,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Client {
    /// `endpoints` are client addresses, with or without `http://`.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| normalize(&e.into()))
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint(String::new()));
        }
        for endpoint in &endpoints {
            Endpoint::from_shared(endpoint.clone())
                .map_err(|_| ClientError::BadEndpoint(endpoint.clone()))?;
        }
        Ok(Client {
            endpoints,
            config,
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
        })
    }

    fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().expect("channel cache");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(address.to_owned())
            .map_err(|_| ClientError::BadEndpoint(address.to_owned()))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Runs `call` against the leader, retrying as described on the crate. `call` must send the
    /// same request every time (clone it): that is what makes retries safe.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.call_timeout;
        let mut next_endpoint = 0usize;
        let mut last = String::from("no attempt");
        for attempt in 1..=self.config.attempts_max {
            let hinted = self.leader.lock().expect("leader hint").clone();
            let address = hinted.clone().unwrap_or_else(|| {
                next_endpoint += 1;
                self.endpoints[(next_endpoint - 1) % self.endpoints.len()].clone()
            });
            let channel = self.channel(&address)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Unreachable {
                    attempts: attempt - 1,
                    last,
                });
            }
            let result =
                tokio::time::timeout(self.config.request_timeout.min(left), call(channel)).await;
            let status = match result {
                Ok(Ok(response)) => {
                    *self.leader.lock().expect("leader hint") = Some(address);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("attempt timed out"),
            };
            let redirect = status
                .metadata()
                .get(LEADER_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(normalize)
                .filter(|leader| *leader != address);
            last = format!("{address}: {}", status.message());
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    *self.leader.lock().expect("leader hint") = redirect.clone();
                    if redirect.is_none() {
                        // Give elections and restarts a moment before the next member.
                        let pause = Duration::from_millis(50 * u64::from(attempt.min(10)));
                        tokio::time::sleep(pause.min(left)).await;
                    }
                    tracing::debug!("attempt {attempt}: {last}");
                }
                _ => return Err(ClientError::Status(status)),
            }
        }
        Err(ClientError::Unreachable {
            attempts: self.config.attempts_max,
            last,
        })
    }
}

fn normalize(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// A request id unique to this process and moment, for callers that have none of their own.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
