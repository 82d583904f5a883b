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
            "from" => request.from_ms = parse_time(&value).map_err(bad)?,
            "to" => request.to_ms = parse_time(&value).map_err(bad)?,
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

/// Milliseconds since the Unix epoch, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let err = || format!("bad time {s:?}: milliseconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(err)?)),
        None => (s, None),
    };
    let mut d = date.split('-').map(|p| p.parse::<i64>().map_err(|_| err()));
    let (y, m, day) = (
        d.next().ok_or_else(err)??,
        d.next().ok_or_else(err)??,
        d.next().ok_or_else(err)??,
    );
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(err());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut seconds = days * 86_400;
    if let Some(t) = time {
        let mut p = t.split(':').map(|p| p.parse::<i64>().map_err(|_| err()));
        let (h, mi, se) = (
            p.next().ok_or_else(err)??,
            p.next().ok_or_else(err)??,
            p.next().ok_or_else(err)??,
        );
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&se) {
            return Err(err());
        }
        seconds += h * 3600 + mi * 60 + se;
    }
    u64::try_from(seconds * 1000).map_err(|_| err())
}

/// Where the HTTP endpoint of a member listens by default: its client port + 200.
pub fn default_addr(client: SocketAddr) -> SocketAddr {
    SocketAddr::new(client.ip(), client.port().wrapping_add(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("2026-11-25"), Ok(1_795_564_800_000));
        assert_eq!(parse_time("2024-02-29T12:30:00Z"), Ok(1_709_209_800_000));
        assert!(parse_time("2026-13-01").is_err());
        assert!(parse_time("yesterday").is_err());
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
    }
}
