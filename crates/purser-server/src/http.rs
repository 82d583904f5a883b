//! A small HTTP/1.1 endpoint for reports, for tools that speak neither gRPC nor protobuf:
//! `GET /v1/report?from=...&to=...&group_by=day,model&format=json|csv` (plus the filters
//! node, user, model, provider, credential_type, tag, currency, and stale=true). One request
//! per connection; everything bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use purser_proto::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::node::PurserNode;
use crate::report::{run, Query};

const HEAD_BYTES_MAX: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTIONS_MAX: usize = 64;

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, node: Arc<PurserNode>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &node).await {
                tracing::debug!("http {peer}: {e}");
            }
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, node: &Arc<PurserNode>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > HEAD_BYTES_MAX {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("read timed out"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/v1/report" {
        return respond(
            &mut stream,
            404,
            "text/plain",
            "not found: try /v1/report\n",
        )
        .await;
    }
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match report(node, query).await {
        Ok((content_type, body)) => respond(&mut stream, 200, content_type, &body).await,
        Err((status, message)) => {
            respond(&mut stream, status, "text/plain", &(message + "\n")).await
        }
    }
}

async fn report(
    node: &Arc<PurserNode>,
    query: &str,
) -> Result<(&'static str, String), (u16, String)> {
    let bad = |m: String| (400u16, m);
    let mut request = pb::ReportRequest::default();
    let mut filters = pb::ReportFilters::default();
    let mut format = "json".to_owned();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| bad(format!("bad encoding in {key}")))?;
        match key {
            "from" => request.from_ms = purser_core::time::parse_time(&value).map_err(bad)?,
            "to" => request.to_ms = purser_core::time::parse_time(&value).map_err(bad)?,
            "group_by" => {
                request.group_by = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "format" => format = value,
            "stale" => request.allow_stale = value == "true",
            "node" => {
                filters.node = Some(pb::NodeRef {
                    node: Some(pb::node_ref::Node::Path(value)),
                })
            }
            "user" => filters.user = Some(value),
            "model" => filters.model = Some(value),
            "provider" => filters.provider = Some(value),
            "credential_type" => filters.credential_type = Some(value),
            "tag" => filters.tag = Some(value),
            "currency" => filters.currency = Some(value),
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    request.filters = Some(filters);
    let query = Query::parse(request).map_err(|s| bad(s.message().to_owned()))?;
    let rows = run(node, &query).await.map_err(|s| {
        let code = match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::NotFound => 400,
            tonic::Code::Unavailable => 503,
            _ => 500,
        };
        (code, s.message().to_owned())
    })?;
    match format.as_str() {
        "csv" => Ok((
            "text/csv",
            purser_proto::report::csv(&rows, &query.group_by),
        )),
        "json" => Ok((
            "application/json",
            purser_proto::report::json(&rows, &query.group_by).to_string(),
        )),
        other => Err(bad(format!("format {other:?}: json or csv"))),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Where the HTTP endpoint of a member listens by default: its client port + 200.
pub fn default_addr(client: SocketAddr) -> SocketAddr {
    SocketAddr::new(client.ip(), client.port().wrapping_add(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
    }
}
