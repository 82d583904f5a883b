//! A member's HTTP side, for tools that speak neither gRPC nor protobuf: today
//! `GET /v1/report?from=...&to=...&group_by=day,model&format=json|csv` (plus the filters node,
//! user, model, provider, credential_type, tag, currency, and stale=true). The routes are built
//! by [`router`], the one place to add more; [`serve`] answers one request per connection,
//! everything bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use purser_core::time::parse_time;
use purser_proto::pb;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::report;
use crate::write::WritePath;

/// Bytes of a request head read at most; a larger one is answered 431.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// A request head must arrive within this long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered.
const CONNECTIONS_MAX: usize = 64;

/// Every route of the HTTP side.
pub fn router(path: Arc<WritePath>) -> Router {
    Router::new()
        .route("/v1/report", get(report_endpoint).fallback(only_get))
        .fallback(not_found)
        .with_state(path)
}

/// Serves `router` on `listener` until the task is aborted: one request per connection (the
/// answer says `Connection: close`), at most `CONNECTIONS_MAX` connections at once; over TLS
/// when an acceptor is given (the handshake counts in the read timeout).
pub async fn serve(listener: TcpListener, router: Router, tls: Option<TlsAcceptor>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => serve_connection(stream, service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, service).await,
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("http {peer}: {e}");
            }
            drop(permit);
        });
    }
}

/// One HTTP/1.1 exchange on `io`.
async fn serve_connection<IO>(io: IO, service: TowerToHyperService<Router>) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(HEAD_BYTES_MAX)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service)
        .await
        .map_err(|e| e.to_string())
}

/// Where the HTTP endpoint of a member listens by default: its client port + 200.
pub fn default_addr(client: SocketAddr) -> SocketAddr {
    SocketAddr::new(client.ip(), client.port().wrapping_add(200))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found: try /v1/report")
}

async fn only_get() -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, "only GET")
}

/// The query of `GET /v1/report`; any other parameter is refused by name.
#[derive(Debug, Default, Deserialize)]
struct ReportParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    format: Option<String>,
    stale: Option<String>,
    node: Option<String>,
    user: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    credential_type: Option<String>,
    tag: Option<String>,
    currency: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, String>,
}

/// How the rows are written out.
enum Format {
    Json,
    Csv,
}

async fn report_endpoint(
    State(path): State<Arc<WritePath>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<ReportParams>, QueryRejection>,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let caller = match path.caller_of_authorization(authorization) {
        Ok(caller) => caller,
        Err(status) => return text(http_status(status.code()), status.message()),
    };
    let (request, format) = match params
        .map_err(|e| e.body_text())
        .and_then(|q| request_of(q.0))
    {
        Ok(parsed) => parsed,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let mut query = match report::Query::parse(request) {
        Ok(query) => query,
        Err(status) => return text(StatusCode::BAD_REQUEST, status.message()),
    };
    if let Err(status) = query.restrict_to(&path, caller) {
        return text(http_status(status.code()), status.message());
    }
    let rows = match report::run(&path, &query).await {
        Ok(rows) => rows,
        Err(status) => return text(http_status(status.code()), status.message()),
    };
    let (content_type, body) = match format {
        Format::Csv => (
            "text/csv",
            purser_proto::report::csv(&rows, &query.group_by),
        ),
        Format::Json => (
            "application/json",
            purser_proto::report::json(&rows, &query.group_by).to_string(),
        ),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The gRPC request and the output format a query asks for.
fn request_of(params: ReportParams) -> Result<(pb::ReportRequest, Format), String> {
    if let Some(other) = params.unknown.keys().next() {
        return Err(format!("unknown parameter {other:?}"));
    }
    let format = match params.format.as_deref().unwrap_or("json") {
        "json" => Format::Json,
        "csv" => Format::Csv,
        other => return Err(format!("format {other:?}: json or csv")),
    };
    let time = |value: Option<String>| value.map_or(Ok(0), |v| parse_time(&v));
    let group_by = params.group_by.unwrap_or_default();
    let request = pb::ReportRequest {
        from_ms: time(params.from)?,
        to_ms: time(params.to)?,
        group_by: group_by
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        allow_stale: params.stale.as_deref() == Some("true"),
        filters: Some(pb::ReportFilters {
            node: params.node.map(|path| pb::NodeRef {
                node: Some(pb::node_ref::Node::Path(path)),
            }),
            user: params.user,
            model: params.model,
            provider: params.provider,
            credential_type: params.credential_type,
            tag: params.tag,
            currency: params.currency,
        }),
    };
    Ok((request, format))
}

/// A failed report as an HTTP status: the caller's mistake, a member that cannot answer now,
/// or ours.
fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => StatusCode::BAD_REQUEST,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeConfig, PurserNode};
    use crate::types::PeerNode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `request` on a connection of its own and reads until the server closes it.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        let read = stream.read_to_string(&mut response);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server closes the connection after one answer")
            .expect("read");
        response
    }

    fn head_and_body(response: &str) -> (&str, &str) {
        response.split_once("\r\n\r\n").expect("a head and a body")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_answer_with_their_status_content_type_and_body() {
        let dir = tempfile::tempdir().expect("temp dir");
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut config = NodeConfig::new(1, dir.path().into(), loopback, "127.0.0.1:1".into());
        // The HTTP side itself; tokens over HTTP are tested with a cluster (tests/).
        config.auth = false;
        let node = PurserNode::start(config).await.expect("start");
        let me = PeerNode {
            peer_addr: node.peer_addr().to_string(),
            client_addr: "127.0.0.1:1".into(),
        };
        node.initialize(BTreeMap::from([(1, me)]))
            .await
            .expect("init");
        let listener = TcpListener::bind(loopback).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, router(node.path()), None));
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");

        let response = exchange(addr, &get("/elsewhere")).await;
        let (head, body) = head_and_body(&response);
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        assert!(head.contains("content-type: text/plain\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert_eq!(body, "not found: try /v1/report\n");

        let post = "POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        let response = exchange(addr, post).await;
        assert!(response.starts_with("HTTP/1.1 405 "), "{response}");
        assert_eq!(head_and_body(&response).1, "only GET\n");

        let response = exchange(addr, &get("/v1/report?color=red")).await;
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
        assert_eq!(head_and_body(&response).1, "unknown parameter \"color\"\n");

        let huge = format!(
            "GET /v1/report HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(HEAD_BYTES_MAX)
        );
        assert!(exchange(addr, &huge).await.starts_with("HTTP/1.1 431 "));

        // A report waits for a leader (a read barrier) and answers JSON.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let response = loop {
            let from = crate::clock::now_ms() - 3_600_000;
            let target = format!("/v1/report?from={from}&group_by=model");
            let response = exchange(addr, &get(&target)).await;
            if !response.starts_with("HTTP/1.1 503 ") || tokio::time::Instant::now() > deadline {
                break response;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (head, body) = head_and_body(&response);
        assert!(head.starts_with("HTTP/1.1 200 "), "{response}");
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert!(json.is_object(), "{json}");
        server.abort();
        node.shutdown().await;
    }

    fn params(query: &str) -> Result<(pb::ReportRequest, Format), String> {
        let uri: axum::http::Uri = format!("/v1/report?{query}").parse().expect("a uri");
        let Query(params) = Query::<ReportParams>::try_from_uri(&uri).map_err(|e| e.body_text())?;
        request_of(params)
    }

    #[test]
    fn queries_are_percent_decoded_and_checked_by_name() {
        let (request, format) =
            params("node=acme%2Fdev&tag=env%3Dprod+x&group_by=day,model&format=csv")
                .expect("a valid query");
        assert!(matches!(format, Format::Csv));
        assert_eq!(request.group_by, ["day", "model"]);
        let filters = request.filters.expect("filters");
        assert_eq!(filters.tag.as_deref(), Some("env=prod x"));
        assert_eq!(
            filters.node.and_then(|n| n.node),
            Some(pb::node_ref::Node::Path("acme/dev".into()))
        );
        let unknown = params("color=red").err().expect("refused");
        assert_eq!(unknown, r#"unknown parameter "color""#);
        assert!(params("format=xml")
            .err()
            .expect("refused")
            .contains("json or csv"));
        assert!(params("from=yesterday").is_err());
    }
}
