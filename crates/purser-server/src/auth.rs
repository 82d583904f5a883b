//! Who is calling. A client call carries a bearer token (`authorization: Bearer purser_…`);
//! this member hashes it and looks the hash up in its applied state: a hash and a map lookup,
//! never a Raft round. The rules of what a token may do live in `purser_core::access`; this
//! file only finds the token, and judges reads and (early) writes with those rules on the
//! applied state. Apply judges every write again, at its place in the log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use purser_core::{Access, Command, Need, Op, Outcome, RequestMeta, SecretHash};
use purser_proto::convert::status_from_error;
use purser_proto::{pb, TOKEN_ID_METADATA};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::write::WritePath;

/// Every token starts with this, so that one found in a log or a repository is recognisable.
pub const TOKEN_PREFIX: &str = "purser_";
/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;
/// The longest `authorization` value read; a token is 71 characters.
const AUTHORIZATION_BYTES_MAX: usize = 512;

/// A fresh token and the hash the cluster keeps of it.
pub fn new_token() -> Result<(String, SecretHash), Status> {
    let mut secret = [0u8; SECRET_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| Status::internal("the system random source failed"))?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 2 * SECRET_BYTES);
    token.push_str(TOKEN_PREFIX);
    for byte in secret {
        token.push_str(&format!("{byte:02x}"));
    }
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// What the cluster keeps of a token: SHA-256 of the whole token text. A token is 256 random
/// bits, so a fast hash is enough (no password stretching needed).
pub fn hash_token(token: &str) -> SecretHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The `authorization` value of a call's metadata, if it carries one.
fn authorization(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    metadata
        .get("authorization")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Status::unauthenticated("the authorization header is not text"))
        })
        .transpose()
}

/// The token of an `Authorization` value, `Bearer <token>` (scheme case-insensitive).
pub fn bearer_value(value: &str) -> Result<&str, Status> {
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(Status::unauthenticated(
            "the authorization header is too long",
        ));
    }
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let token = token.trim();
    if !token.starts_with(TOKEN_PREFIX) || token.len() != TOKEN_PREFIX.len() + 2 * SECRET_BYTES {
        return Err(Status::unauthenticated(format!(
            "the bearer token is malformed: a Purser token is {TOKEN_PREFIX} and {} hex digits",
            2 * SECRET_BYTES
        )));
    }
    Ok(token)
}

fn malformed() -> Status {
    Status::unauthenticated("the authorization header must be `Bearer <token>`")
}

/// The token a call acts for, found once per call by [`ActingToken`] and read by the services.
#[derive(Clone)]
struct Found(Result<Option<u64>, Status>);

/// Finds the token each call of the client port acts for (kept in the request for the
/// service) and names it in the answer's [`TOKEN_ID_METADATA`].
#[derive(Clone)]
pub struct ActingTokenLayer(pub Arc<WritePath>);

impl<S> tower_layer::Layer<S> for ActingTokenLayer {
    type Service = ActingToken<S>;

    fn layer(&self, inner: S) -> ActingToken<S> {
        ActingToken {
            inner,
            path: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ActingToken<S> {
    inner: S,
    path: Arc<WritePath>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower_service::Service<http::Request<B>> for ActingToken<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let value = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| {
                v.to_str()
                    .map_err(|_| Status::unauthenticated("the authorization header is not text"))
            })
            .transpose();
        let found = value.and_then(|value| self.path.caller_of_authorization(value));
        let token_id = found.as_ref().ok().copied().flatten();
        request.extensions_mut().insert(Found(found));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(id) = token_id {
                response
                    .headers_mut()
                    .insert(TOKEN_ID_METADATA, http::HeaderValue::from(id));
            }
            Ok(response)
        })
    }
}

impl WritePath {
    /// The token a call acts for: `None` when this member runs without authentication,
    /// otherwise the live token its metadata carries, or UNAUTHENTICATED. Found once, by
    /// [`ActingToken`], when the call came through it.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Option<u64>, Status> {
        match request.extensions().get::<Found>() {
            Some(Found(found)) => found.clone(),
            None => self.caller_of_authorization(authorization(request.metadata())?),
        }
    }

    /// [`WritePath::caller`] from the value of an `authorization` header (gRPC or HTTP).
    pub fn caller_of_authorization(&self, value: Option<&str>) -> Result<Option<u64>, Status> {
        if !self.auth {
            return Ok(None);
        }
        let value = value.ok_or_else(|| {
            Status::unauthenticated(
                "this call needs a token: send `authorization: Bearer <token>` (the CLI takes --token or PURSER_TOKEN)",
            )
        })?;
        self.caller_of_token(bearer_value(value)?).map(Some)
    }

    /// The live token id of a bearer token, judged on this member's applied state.
    pub fn caller_of_token(&self, token: &str) -> Result<u64, Status> {
        let hash = hash_token(token);
        self.read_local(|state, _| state.token_by_hash(&hash))
            .map_err(|e| status_from_error(&e))
    }

    /// Whether `caller` may do what `need` says, on this member's applied state; the node id
    /// `need` is about, when it names one. A member without authentication allows all.
    pub fn authorize(&self, caller: Option<u64>, need: Need<'_>) -> Result<Option<u64>, Status> {
        let Some(actor) = caller else {
            return Ok(None);
        };
        self.read_local(|state, _| state.authorize(actor, need))
            .map_err(|e| status_from_error(&e))
    }

    /// `command`, acting for `caller`, if the leader's applied state lets `caller` do it: a
    /// forbidden write is refused here, before the log (and before the leader's fast denial,
    /// which would tell a stranger how much room a node has). Apply judges it again.
    ///
    /// Judged on the leader only (elsewhere the write is redirected anyway, and a lagging
    /// member must not answer for the leader), and not for a retry of a request the state
    /// remembers: apply answers that with its first outcome, even when the call would no
    /// longer be allowed (the reservation it settled is gone).
    pub fn authorize_command(
        &self,
        caller: Option<u64>,
        command: Command,
    ) -> Result<Command, Status> {
        let command = command.by(caller);
        let Some(actor) = caller else {
            return Ok(command);
        };
        if !self.is_leader() {
            return Ok(command);
        }
        self.read_local(|state, _| {
            let retry = command
                .request
                .as_ref()
                .is_some_and(|r| state.remembers_request(Some(actor), &r.id));
            if retry {
                return Ok(());
            }
            state.authorize_op(actor, state.now_ms(), &command.op)
        })
        .map_err(|e| status_from_error(&e))?;
        Ok(command)
    }

    /// The cluster's first token (scope `/`, admin), from the hash of its text, written
    /// without an actor: apply refuses it once the cluster has a token. Only the leader
    /// writes it (`Cluster.Bootstrap`, which `Init` and `purser dev` call).
    pub async fn create_first_token(&self, request: pb::BootstrapRequest) -> Result<u64, Status> {
        if !self.is_leader() {
            return Err(self.not_leader().into());
        }
        let secret_hash = request
            .token_hash
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("token_hash is 32 bytes"))?;
        let command = Command {
            request: Some(RequestMeta {
                id: request.request_id,
                sent_at_ms: request.sent_at_ms,
            }),
            actor: None,
            op: Op::CreateToken {
                scope: None,
                access: Access::Admin,
                name: "bootstrap".into(),
                expires_in_ms: None,
                secret_hash,
            },
        };
        let written = self.write(command).await?;
        match written.result.map_err(|e| status_from_error(&e))?.outcome {
            Outcome::TokenCreated { token_id, .. } => Ok(token_id),
            other => Err(Status::internal(format!(
                "bootstrap answered {other:?}, not a token"
            ))),
        }
    }

    /// Whether this member checks tokens (`purser dev --no-auth` does not).
    pub fn auth_enabled(&self) -> bool {
        self.auth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_hex_and_parse_back_from_a_header() {
        let (a, hash_a) = new_token().unwrap_or_else(|e| panic!("{e}"));
        let (b, _) = new_token().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 71, "{a}");
        assert_eq!(hash_token(&a), hash_a);
        assert_eq!(bearer_value(&format!("Bearer {a}")).ok(), Some(a.as_str()));
        assert_eq!(
            bearer_value(&format!("bearer  {a} ")).ok(),
            Some(a.as_str())
        );
        for bad in ["", "Bearer", &a, &format!("Basic {a}"), "Bearer purser_00"] {
            let refused = bearer_value(bad).expect_err(bad);
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{bad}");
        }
    }
}
