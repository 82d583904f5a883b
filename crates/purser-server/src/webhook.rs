//! One signed webhook POST: the signature, the body of an event, and the HTTP client that
//! sends them (http or https). The leader's deliveries, retries and cursors are in
//! `delivery.rs`.
//!
//! Signature (documented in docs/cli.md, "Webhooks"), like Stripe's:
//! `Purser-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with the
//! same `t` in `Purser-Timestamp`. A receiver recomputes it over the raw body, compares in
//! constant time, and rejects timestamps too far from its clock (replays).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use purser_core::WebhookView;
use purser_storage::store::EventRecord;
use rustls::pki_types::CertificateDer;
use sha2::Sha256;

use crate::clock::unix_seconds;

/// One POST (connect, TLS handshake, send, the answer's head) takes at most this long.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);

type HmacSha256 = Hmac<Sha256>;

// ---- signing -------------------------------------------------------------------------------

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature_header(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body)))
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Vec<u8> {
    keyed(secret, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// HMAC-SHA256 keyed with `secret`, fed `"<timestamp>.<body>"`.
fn keyed(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
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
    let expected = keyed(secret, timestamp, body);
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

// ---- one POST ------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("invalid url {0:?}: {1}")]
    Url(String, String),
    #[error("no answer within {POST_TIMEOUT:?}")]
    Timeout,
    #[error("{0}")]
    Http(String),
    #[error("{0} is a loopback, private or link-local address: refused (a member started with --webhook-allow-private delivers there)")]
    Refused(String),
}

/// The IP address a URL names literally (`http://10.0.0.1/`, `http://[::1]:80/`), if any.
fn literal_ip(url: &str) -> Option<IpAddr> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Addresses a webhook of one tenant must not reach without the cluster's consent: this
/// host and its network (loopback, private and shared ranges, link-local, where cloud
/// metadata services answer, and unspecified, multicast or broadcast addresses).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                // 100.64.0.0/10, carrier-grade NAT: often the cluster's own network.
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            match v6.to_ipv4_mapped() {
                Some(v4) => is_private(IpAddr::V4(v4)),
                None => {
                    v6.is_loopback()
                        || v6.is_unspecified()
                        || v6.is_multicast()
                        // fc00::/7 unique local (fd00:ec2::254 is a metadata service),
                        // fe80::/10 link-local.
                        || (first & 0xfe00) == 0xfc00
                        || (first & 0xffc0) == 0xfe80
                }
            }
        }
    }
}

/// Resolves a webhook's host name and keeps only the addresses it may reach; the connector
/// connects to what this returns, nothing else.
#[derive(Clone, Copy, Debug)]
pub struct CheckedResolver {
    allow_private: bool,
}

type Resolved = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for CheckedResolver {
    type Response = Resolved;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if allowed.is_empty() && !all.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    PostError::Refused(format!("{host} ({})", all[0].ip())).to_string(),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The HTTP client that POSTs webhooks: http, or https through rustls (the `ring` provider)
/// trusting the public web PKI's roots. No redirect is followed (a receiver answers 2xx or
/// the event is retried) and no proxy is used. One connection per POST, as `Connection:
/// close` asks. Cheap to clone.
///
/// Unless `allow_private`, a destination on a loopback, private, link-local (cloud metadata),
/// shared or unspecified address is refused: a tenant's webhook must not reach into the
/// cluster's own network. Host names are resolved here ([`CheckedResolver`]) and the
/// connection goes to an address that was checked, so a name cannot pass the check and then
/// resolve elsewhere.
#[derive(Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(allow_private: bool) -> Result<Self, rustls::Error> {
        Self::trusting(Vec::new(), allow_private)
    }

    /// A client that also trusts `extra` certificates (a private CA, or a test's receiver).
    pub fn trusting(
        extra: Vec<CertificateDer<'static>>,
        allow_private: bool,
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in extra {
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new_with_resolver(CheckedResolver { allow_private });
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(POST_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            // The header names as receivers have always seen them (`Purser-Signature`).
            .http1_title_case_headers(true)
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(WebhookClient {
            client,
            allow_private,
        })
    }

    /// POSTs one signed JSON body and returns the HTTP status of the answer.
    pub async fn post(
        &self,
        url: &str,
        secret: &str,
        event_id: u64,
        body: &[u8],
    ) -> Result<u16, PostError> {
        // An address written in the URL is never resolved: it is checked here.
        if let Some(ip) = literal_ip(url) {
            if !self.allow_private && is_private(ip) {
                return Err(PostError::Refused(ip.to_string()));
            }
        }
        let timestamp = unix_seconds();
        let signature = signature_header(secret.as_bytes(), timestamp, body);
        let request = http::Request::post(url)
            .header(
                "User-Agent",
                concat!("purser-webhook/", env!("CARGO_PKG_VERSION")),
            )
            .header("Content-Type", "application/json")
            .header("Connection", "close")
            .header("Purser-Event-Id", event_id)
            .header("Purser-Timestamp", timestamp)
            .header("Purser-Signature", signature)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| PostError::Url(url.to_owned(), e.to_string()))?;
        let answer = tokio::time::timeout(POST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| PostError::Timeout)?
            .map_err(|e| PostError::Http(with_causes(&e)))?;
        // The body is not read: the status is the answer.
        Ok(answer.status().as_u16())
    }

    /// Whether this member would deliver to `url`: refused when it names, or its host
    /// resolves only to, an address [`is_private`] (unless private ones are allowed). A name
    /// that does not resolve now passes: it may later, and is checked at each delivery.
    pub async fn check_destination(&self, url: &str) -> Result<(), PostError> {
        if self.allow_private {
            return Ok(());
        }
        if let Some(ip) = literal_ip(url) {
            return if is_private(ip) {
                Err(PostError::Refused(ip.to_string()))
            } else {
                Ok(())
            };
        }
        let host = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned))
            .ok_or_else(|| PostError::Url(url.to_owned(), "no host".into()))?;
        let Ok(found) = tokio::net::lookup_host((host.as_str(), 0)).await else {
            return Ok(());
        };
        let found: Vec<SocketAddr> = found.collect();
        match found.iter().find(|a| !is_private(a.ip())) {
            Some(_) => Ok(()),
            None => match found.first() {
                Some(a) => Err(PostError::Refused(format!("{host} ({})", a.ip()))),
                None => Ok(()),
            },
        }
    }

    /// The signed `{"kind":"test"}` ping of `TestWebhook` (event id 0: no event has it).
    pub async fn ping(&self, hook: &WebhookView) -> Result<u16, PostError> {
        let body = serde_json::json!({ "kind": "test", "webhook_id": hook.id }).to_string();
        self.post(&hook.url, hook.secret.expose(), 0, body.as_bytes())
            .await
    }
}

/// An error and its causes, `outer: inner: ...` (hyper's own message alone says little).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_metadata_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(private.parse().expect("ip")), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700::1111"] {
            assert!(!is_private(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn a_private_destination_is_refused_unless_allowed() {
        let refusing = WebhookClient::new(false).expect("client");
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:9/hook",
        ] {
            let refused = refusing.post(url, "0123456789abcdef", 1, b"{}").await;
            assert!(
                matches!(&refused, Err(PostError::Refused(_)))
                    || matches!(&refused, Err(PostError::Http(e)) if e.contains("refused (a member")),
                "{url}: {refused:?}"
            );
            assert!(refusing.check_destination(url).await.is_err(), "{url}");
        }
        assert!(refusing
            .check_destination("https://example.com/hook")
            .await
            .is_ok());
        let allowing = WebhookClient::new(true).expect("client");
        assert!(allowing
            .check_destination("http://127.0.0.1:9/hook")
            .await
            .is_ok());
    }

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

    /// Takes one request on `stream`, answers `status`, and returns its head and body.
    async fn receive_one<S>(mut stream: S, status: u16) -> (String, Vec<u8>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the request ended early");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("a Content-Length header")
            .parse()
            .expect("a length");
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the body ended early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let answer =
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(answer.as_bytes()).await.expect("answer");
        stream.shutdown().await.expect("close");
        (head, buf[head_end..].to_vec())
    }

    fn header<'a>(head: &'a str, name: &str) -> &'a str {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("no {name} header in {head}"))
    }

    /// What a receiver checks: the request line, the Host the URL names, the headers by their
    /// usual names, a signature over the body.
    fn check_request(head: &str, body: &[u8], host: &str) {
        assert!(head.starts_with("POST /a/b?c=d HTTP/1.1\r\n"), "{head}");
        assert_eq!(header(head, "Host"), host);
        assert_eq!(header(head, "Content-Type"), "application/json");
        assert_eq!(header(head, "Connection"), "close");
        assert_eq!(header(head, "Purser-Event-Id"), "7");
        assert!(header(head, "User-Agent").starts_with("purser-webhook/"));
        assert_eq!(body, br#"{"id":7}"#);
        let timestamp = header(head, "Purser-Timestamp");
        let signed = verify_signature(
            b"0123456789abcdef",
            header(head, "Purser-Signature"),
            body,
            unix_seconds(),
            60,
        );
        assert_eq!(signed.map(|t| t.to_string()).as_deref(), Ok(timestamp));
    }

    #[tokio::test]
    async fn a_post_carries_the_url_path_the_host_and_a_signature() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            receive_one(stream, 503).await
        });
        let client = WebhookClient::new(true).expect("client");
        let url = format!("http://{addr}/a/b?c=d");
        let status = client
            .post(&url, "0123456789abcdef", 7, br#"{"id":7}"#)
            .await;
        assert_eq!(status.expect("an answer"), 503);
        let (head, body) = receiver.await.expect("received");
        check_request(&head, &body, &addr.to_string());
    }

    #[tokio::test]
    async fn https_receivers_are_reached_and_their_certificate_checked() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let cert = CertificateDer::from_pem_slice(include_bytes!("../tests/fixtures/receiver.crt"))
            .expect("the fixture certificate");
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../tests/fixtures/receiver.key"))
            .expect("the fixture key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("a server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = tokio::spawn(async move {
            // The first connection comes from the client that does not trust the receiver.
            let (refused, _) = listener.accept().await.expect("accept");
            assert!(acceptor.accept(refused).await.is_err());
            let (stream, _) = listener.accept().await.expect("accept");
            let stream = acceptor.accept(stream).await.expect("a TLS handshake");
            receive_one(stream, 204).await
        });
        let url = format!("https://localhost:{}/a/b?c=d", addr.port());
        let body = br#"{"id":7}"#;
        let untrusting = WebhookClient::new(true).expect("client");
        let refused = untrusting.post(&url, "0123456789abcdef", 7, body).await;
        let refused = refused.expect_err("an unknown certificate is refused");
        assert!(refused.to_string().contains("certificate"), "{refused}");
        let client = WebhookClient::trusting(vec![cert], true).expect("client");
        let status = client.post(&url, "0123456789abcdef", 7, body).await;
        assert_eq!(status.expect("an answer"), 204);
        let (head, body) = receiver.await.expect("received");
        check_request(&head, &body, &format!("localhost:{}", addr.port()));
    }
}
