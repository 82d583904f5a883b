//! The one engine behind every call: pick a member, send, follow the leader's redirect, retry
//! what may be retried with the identical request, give up after a bounded time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Response, Status};

pub use purser_proto::LEADER_METADATA;

/// Before the next attempt when no member named the leader, per attempt so far (capped at
/// `PAUSE_ATTEMPTS_MAX` steps): elections and restarts take a moment.
const PAUSE_STEP: Duration = Duration::from_millis(50);
const PAUSE_ATTEMPTS_MAX: u32 = 10;

#[derive(Clone)]
pub struct ClientConfig {
    /// The bearer token every call carries (`authorization: Bearer …`); `None` for a member
    /// without authentication (`purser dev --no-auth`).
    pub token: Option<String>,
    /// The CA (PEM) that signed the members' certificates: with it, endpoints without a
    /// scheme (and redirects) are `https://`, and the members' certificates are verified.
    pub ca: Option<String>,
    /// A client certificate and key (PEM), for members that require one (`--client-ca`).
    pub identity: Option<(String, String)>,
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
            token: None,
            ca: None,
            identity: None,
            request_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            attempts_max: 30,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Never prints the token.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.as_ref().map(|_| "<set>"))
            .field("request_timeout", &self.request_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("attempts_max", &self.attempts_max)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
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

/// A connection to a Purser cluster; cheap to clone (clones share the connections and the
/// leader they learned).
///
/// Every RPC of `purser.v1` is a typed method (`reserve`, `settle`, `show`, `status`, ...).
/// Each call goes to the member last known to lead (else the next endpoint in turn), follows
/// a follower's redirect to the leader, and retries UNAVAILABLE, timed-out and cut-off
/// attempts with the identical request until `ClientConfig::call_timeout` or
/// `attempts_max`; any other status is returned at once as [`ClientError::Status`].
///
/// Two ways to talk to one member:
/// - [`Client::new`] with one endpoint: calls start there, and a redirect the member gives
///   is followed (writes and linearizable reads then reach the leader).
/// - [`Client::member`]: calls stay on that member. `Status`, `Stats`, `Snapshot` and the
///   health check are answered by the member asked; a call only the leader may answer comes
///   back as the member's UNAVAILABLE status (with the leader in [`LEADER_METADATA`]) instead
///   of being redirected.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.shared.endpoints)
            .field("follow_redirects", &self.shared.follow_redirects)
            .finish_non_exhaustive()
    }
}

struct Shared {
    endpoints: Vec<String>,
    config: ClientConfig,
    follow_redirects: bool,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
    retries: Mutex<Retries>,
}

/// Attempts a client (and its clones) sent again, for a load generator's report: a slow call
/// is most often one that was retried, and why tells an election from shed load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retries {
    /// Attempts sent again since the client was made (batch items included).
    pub count: u64,
    /// Why the newest one was.
    pub last: Option<String>,
}

/// What to do after an attempt that failed.
enum Next {
    /// Give the status to the caller.
    Fail,
    /// Try again; at this address if one is given.
    Retry(Option<String>),
}

impl Client {
    /// `endpoints` are client addresses, with or without `http://`.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        Self::with_redirects(endpoints, config, true)
    }

    /// A client of the one member at `endpoint` that never follows a redirect (see the type).
    pub fn member(endpoint: impl Into<String>, config: ClientConfig) -> Result<Self, ClientError> {
        Self::with_redirects([endpoint], config, false)
    }

    fn with_redirects(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
        follow_redirects: bool,
    ) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| with_scheme(&e.into(), config.ca.is_some()))
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint(String::new()));
        }
        for endpoint in &endpoints {
            Endpoint::from_shared(endpoint.clone())
                .map_err(|_| ClientError::BadEndpoint(endpoint.clone()))?;
            if endpoint.starts_with("https://") && config.ca.is_none() {
                return Err(ClientError::BadEndpoint(format!(
                    "{endpoint}: https needs the CA that signed the members' certificates"
                )));
            }
        }
        let shared = Shared {
            endpoints,
            config,
            follow_redirects,
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            retries: Mutex::new(Retries::default()),
        };
        Ok(Client {
            shared: Arc::new(shared),
        })
    }

    /// Attempts sent again so far, by this client and its clones.
    pub fn retries(&self) -> Retries {
        lock(&self.shared.retries).clone()
    }

    /// Counts `attempts` about to be sent again, for `why`.
    pub(crate) fn retrying(&self, attempts: u64, why: &str) {
        let mut retries = lock(&self.shared.retries);
        retries.count += attempts;
        retries.last = Some(why.to_owned());
    }

    fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        let mut channels = lock(&self.shared.channels);
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let config = &self.shared.config;
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|_| ClientError::BadEndpoint(address.to_owned()))?;
        if address.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &config.ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &config.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::BadEndpoint(format!("{address}: {e}")))?;
        }
        let channel = endpoint
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// `request` with the configured token in its `authorization` metadata. A token that
    /// cannot be a header value is left out, and the call is refused as unauthenticated.
    pub fn authorized<R>(&self, request: R) -> tonic::Request<R> {
        let mut request = tonic::Request::new(request);
        if let Some(token) = &self.shared.config.token {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }

    /// The engine behind every typed method, for a gRPC service outside `purser.v1`: runs
    /// `call` as described on the type. `call` must send the same request every time (clone
    /// it): that is what makes retries safe.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        Ok(self.call_answer(call).await?.into_inner())
    }

    /// [`Client::call`], answering the whole response (its metadata too).
    pub(crate) async fn call_answer<T, F, Fut>(&self, call: F) -> Result<Response<T>, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let config = &self.shared.config;
        let deadline = tokio::time::Instant::now() + config.call_timeout;
        let mut turn = 0usize;
        let mut last = String::from("no attempt");
        for attempt in 1..=config.attempts_max {
            let address = self.next_address(&mut turn);
            let channel = self.channel(&address)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Unreachable {
                    attempts: attempt - 1,
                    last,
                });
            }
            if attempt > 1 {
                self.retrying(1, &last);
            }
            let result =
                tokio::time::timeout(config.request_timeout.min(left), call(channel)).await;
            let status = match result {
                Ok(Ok(response)) => {
                    *lock(&self.shared.leader) = Some(address);
                    return Ok(response);
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("attempt timed out"),
            };
            last = format!("{address}: {}", status.message());
            let Next::Retry(redirect) = self.next_step(&status, &address) else {
                return Err(ClientError::Status(status));
            };
            let pause = redirect.is_none();
            *lock(&self.shared.leader) = redirect;
            if pause {
                let pause = PAUSE_STEP * attempt.min(PAUSE_ATTEMPTS_MAX);
                tokio::time::sleep(pause.min(left)).await;
            }
            tracing::debug!("attempt {attempt}: {last}");
        }
        Err(ClientError::Unreachable {
            attempts: config.attempts_max,
            last,
        })
    }

    /// The leader if one is known, else the next endpoint in turn.
    fn next_address(&self, turn: &mut usize) -> String {
        if let Some(leader) = lock(&self.shared.leader).clone() {
            return leader;
        }
        let endpoints = &self.shared.endpoints;
        *turn += 1;
        endpoints[(*turn - 1) % endpoints.len()].clone()
    }

    fn next_step(&self, status: &Status, address: &str) -> Next {
        let retryable = matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        );
        if !retryable {
            return Next::Fail;
        }
        let redirect = status
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(|leader| with_scheme(leader, self.shared.config.ca.is_some()))
            .filter(|leader| leader != address);
        match redirect {
            Some(_) if !self.shared.follow_redirects => Next::Fail,
            redirect => Next::Retry(redirect),
        }
    }
}

/// The leader hint and the channel cache stay valid whatever a panicking holder was doing
/// (each is replaced in one assignment), so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client address as the URL a channel connects to: `http://` is added when it names no
/// scheme, so that `host:port`, as members advertise themselves, can be given as it is.
pub fn normalize_endpoint(endpoint: &str) -> String {
    with_scheme(endpoint, false)
}

/// `endpoint` with `https://` (`tls`) or `http://` when it names no scheme.
fn with_scheme(endpoint: &str, tls: bool) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}
