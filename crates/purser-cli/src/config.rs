//! `purser serve`'s settings. Each comes from the first of: its flag, its `PURSER_*`
//! environment variable (both read by clap), its key in the `--config` TOML file, its
//! default. Every flag has a key of the same name (`peer_listen` or `peer-listen`), and an
//! unknown key is refused rather than ignored: a typo in a file must not quietly fall back to
//! a default.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use clap::Args;
use serde::Deserialize;

use purser_server::tls::TlsFiles;

use crate::parse::{host_port, Flagged};
use crate::CliError;

/// One layer of settings: what the command line (flags, then environment) or the file sets.
#[derive(Args, Deserialize, Default, Debug, Clone, PartialEq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// This member's id, unique in the cluster (positive).
    #[arg(long, env = "PURSER_ID")]
    pub id: Option<u64>,
    /// Where clients connect (Budget, Admin and Cluster services).
    #[arg(long, env = "PURSER_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Where the other members connect (Raft).
    #[arg(long, env = "PURSER_PEER_LISTEN", value_name = "HOST:PORT")]
    #[serde(alias = "peer-listen")]
    pub peer_listen: Option<String>,
    /// Where the state lives; created if missing.
    #[arg(long, env = "PURSER_DATA_DIR", value_name = "DIR")]
    #[serde(alias = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// The client address other members hand to clients when they redirect them here
    /// (default: --listen). Needed when --listen is 0.0.0.0 or behind NAT.
    #[arg(long, env = "PURSER_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Serve `GET /v1/report` (CSV or JSON) over plain HTTP here (default: not at all).
    #[arg(long, env = "PURSER_HTTP_LISTEN", value_name = "HOST:PORT")]
    #[serde(alias = "http-listen")]
    pub http_listen: Option<String>,
    /// Serve linearizable reads and denials under the leader's lease, without a quorum round
    /// trip. Assumes the members' clocks run at the same rate (docs/architecture.md); an
    /// expired lease falls back to a read index.
    #[arg(
        long,
        env = "PURSER_LEASE_READS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    #[serde(alias = "lease-reads")]
    pub lease_reads: Option<bool>,
    /// The newest events this member keeps for `watch` and webhooks (at least 1000; default
    /// 10,000,000); older ones leave once folded into the report rollups.
    #[arg(long, env = "PURSER_EVENTS_KEPT", value_name = "N")]
    #[serde(alias = "events-kept")]
    pub events_kept: Option<u64>,
    /// Appends in flight to each follower before the first is answered (1..=64, default 16);
    /// 1 sends one at a time and waits for its answer (stop-and-wait).
    #[arg(long, env = "PURSER_REPLICATION_DEPTH", value_name = "N")]
    #[serde(alias = "replication-depth")]
    pub replication_depth: Option<usize>,
    /// Log entries the leader proposes before the first is answered (1..=16, default 1);
    /// commands that arrive meanwhile wait and form the next entry.
    #[arg(long, env = "PURSER_ENTRIES_IN_FLIGHT", value_name = "N")]
    #[serde(alias = "entries-in-flight")]
    pub entries_in_flight: Option<usize>,
    /// Deliver webhooks to loopback, private and link-local addresses too (refused by
    /// default: a tenant's webhook must not reach into the cluster's own network).
    #[arg(
        long,
        env = "PURSER_WEBHOOK_ALLOW_PRIVATE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    #[serde(alias = "webhook-allow-private")]
    pub webhook_allow_private: Option<bool>,
    /// A CA (PEM) whose certificates https webhook receivers may present, besides the public
    /// web PKI's.
    #[arg(long, env = "PURSER_WEBHOOK_CA", value_name = "FILE")]
    #[serde(alias = "webhook-ca")]
    pub webhook_ca: Option<PathBuf>,
    /// The client and HTTP ports' certificate chain (PEM): TLS there. With --tls-key.
    #[arg(long, env = "PURSER_TLS_CERT", value_name = "FILE")]
    #[serde(alias = "tls-cert")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PURSER_TLS_KEY", value_name = "FILE")]
    #[serde(alias = "tls-key")]
    pub tls_key: Option<PathBuf>,
    /// Clients must present a certificate this CA signed (PEM), besides their token.
    #[arg(long, env = "PURSER_CLIENT_CA", value_name = "FILE")]
    #[serde(alias = "client-ca")]
    pub client_ca: Option<PathBuf>,
    /// This member's certificate on the peer port, mutual TLS (PEM). With --peer-key and --peer-ca.
    #[arg(long, env = "PURSER_PEER_CERT", value_name = "FILE")]
    #[serde(alias = "peer-cert")]
    pub peer_cert: Option<PathBuf>,
    /// The private key of --peer-cert (PEM).
    #[arg(long, env = "PURSER_PEER_KEY", value_name = "FILE")]
    #[serde(alias = "peer-key")]
    pub peer_key: Option<PathBuf>,
    /// The cluster's CA (PEM): the peer port accepts only certificates it signed, and members check each other's.
    #[arg(long, env = "PURSER_PEER_CA", value_name = "FILE")]
    #[serde(alias = "peer-ca")]
    pub peer_ca: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS (refused otherwise: tokens would cross
    /// the network in the clear).
    #[arg(
        long,
        env = "PURSER_INSECURE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub insecure: Option<bool>,
}

impl Settings {
    /// Every setting from `self` where it is set, else from `fallback`.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            id: self.id.or(fallback.id),
            listen: self.listen.or(fallback.listen),
            peer_listen: self.peer_listen.or(fallback.peer_listen),
            data_dir: self.data_dir.or(fallback.data_dir),
            advertise: self.advertise.or(fallback.advertise),
            http_listen: self.http_listen.or(fallback.http_listen),
            lease_reads: self.lease_reads.or(fallback.lease_reads),
            events_kept: self.events_kept.or(fallback.events_kept),
            replication_depth: self.replication_depth.or(fallback.replication_depth),
            entries_in_flight: self.entries_in_flight.or(fallback.entries_in_flight),
            webhook_allow_private: self
                .webhook_allow_private
                .or(fallback.webhook_allow_private),
            webhook_ca: self.webhook_ca.or(fallback.webhook_ca),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
            client_ca: self.client_ca.or(fallback.client_ca),
            peer_cert: self.peer_cert.or(fallback.peer_cert),
            peer_key: self.peer_key.or(fallback.peer_key),
            peer_ca: self.peer_ca.or(fallback.peer_ca),
            insecure: self.insecure.or(fallback.insecure),
        }
    }

    /// The settings of a `--config` file.
    pub fn read(path: &Path) -> Result<Settings, CliError> {
        let at = |e: String| CliError(format!("--config {}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        Settings::parse(&text).map_err(at)
    }

    fn parse(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| describe(text, &e))
    }
}

/// The keys of a `--config` file, as the messages about it list them (each also takes
/// dashes for underscores).
const KEYS: &[&str] = &[
    "id",
    "listen",
    "peer_listen",
    "data_dir",
    "advertise",
    "http_listen",
    "lease_reads",
    "events_kept",
    "replication_depth",
    "entries_in_flight",
    "webhook_allow_private",
    "webhook_ca",
    "tls_cert",
    "tls_key",
    "client_ca",
    "peer_cert",
    "peer_key",
    "peer_ca",
    "insecure",
];

/// A TOML error on one line: where, the line itself (which names the key), and what is wrong.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let mut message = error.message().trim().to_owned();
    // serde lists every alias beside its key; one spelling of each reads better.
    if let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_owned())
    {
        message = format!("unknown key `{key}` (the keys are {})", KEYS.join(", "));
    }
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let number = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or_default().trim();
    format!("line {number} ({line}): {message}")
}

/// The settings a member runs with, every one decided and checked.
#[derive(Debug, PartialEq)]
pub struct Effective {
    pub id: u64,
    pub listen: SocketAddr,
    pub peer_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub advertise: String,
    pub http_listen: Option<SocketAddr>,
    pub lease_reads: bool,
    pub events_kept: u64,
    pub replication_depth: usize,
    pub entries_in_flight: usize,
    pub webhook_allow_private: bool,
    pub webhook_ca: Option<PathBuf>,
    /// The client and HTTP ports' TLS.
    pub tls: Option<TlsFiles>,
    /// The peer port's mutual TLS.
    pub peer_tls: Option<TlsFiles>,
}

/// The TLS of the client and HTTP ports, and of the peer port (mutual: the CA is required).
fn tls_of(s: &Settings) -> Result<(Option<TlsFiles>, Option<TlsFiles>), CliError> {
    let tls =
        pair(&s.tls_cert, &s.tls_key, "--tls-cert", "--tls-key")?.map(|(cert, key)| TlsFiles {
            cert,
            key,
            ca: s.client_ca.clone(),
        });
    if tls.is_none() && s.client_ca.is_some() {
        return Err("--client-ca takes --tls-cert and --tls-key".into());
    }
    let peer = pair(&s.peer_cert, &s.peer_key, "--peer-cert", "--peer-key")?;
    let peer_tls = match (peer, s.peer_ca.clone()) {
        (Some((cert, key)), Some(ca)) => Some(TlsFiles {
            cert,
            key,
            ca: Some(ca),
        }),
        (None, None) => None,
        _ => return Err("--peer-cert, --peer-key and --peer-ca go together".into()),
    };
    Ok((tls, peer_tls))
}

/// A port without TLS on an address that is not loopback is refused: tokens would cross the
/// network in the clear. `ports`: (address, plaintext, flag).
fn refuse_plaintext(ports: [(Option<SocketAddr>, bool, &str); 3]) -> Result<(), CliError> {
    for (addr, plaintext, flag) in ports {
        if let Some(addr) = addr.filter(|a| plaintext && !a.ip().is_loopback()) {
            return Err(CliError(format!(
                "{flag} {addr} is not a loopback address: give it TLS (docs/security.md) or --insecure"
            )));
        }
    }
    Ok(())
}

/// A certificate and its key, both or neither.
fn pair(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    cert_flag: &str,
    key_flag: &str,
) -> Result<Option<(PathBuf, PathBuf)>, CliError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
        (None, None) => Ok(None),
        _ => Err(CliError(format!("{cert_flag} and {key_flag} go together"))),
    }
}

/// A setting without a default that nothing set.
fn required<T>(value: Option<T>, key: &str) -> Result<T, CliError> {
    value.ok_or_else(|| {
        CliError(format!(
            "--{} is required (or {}, or `{key}` in --config)",
            key.replace('_', "-"),
            env_name(key)
        ))
    })
}

fn env_name(key: &str) -> String {
    format!("PURSER_{}", key.to_uppercase())
}

pub fn socket_addr(text: &str, flag: &str) -> Result<SocketAddr, CliError> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| CliError(format!("{flag} {text:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| CliError(format!("{flag} {text:?}: no address")))
}

impl Effective {
    pub fn of(s: Settings) -> Result<Effective, CliError> {
        let (tls, peer_tls) = tls_of(&s)?;
        let insecure = s.insecure.unwrap_or(false);
        let id = required(s.id, "id")?;
        if id == 0 {
            return Err("--id must be positive".into());
        }
        let listen = socket_addr(&required(s.listen, "listen")?, "--listen")?;
        let peer_listen = socket_addr(&required(s.peer_listen, "peer_listen")?, "--peer-listen")?;
        let data_dir = required(s.data_dir, "data_dir")?;
        let advertise = match s.advertise {
            Some(addr) => {
                host_port(&addr).flag("--advertise")?;
                addr
            }
            None => {
                if listen.ip().is_unspecified() {
                    tracing::warn!(
                        "--listen {listen} is a wildcard: give --advertise so that redirects to \
                         this member reach it"
                    );
                }
                listen.to_string()
            }
        };
        let http_listen = match s.http_listen {
            Some(text) => Some(socket_addr(&text, "--http-listen")?),
            None => None,
        };
        let plaintext = [
            (Some(listen), tls.is_none(), "--listen"),
            (http_listen, tls.is_none(), "--http-listen"),
            (Some(peer_listen), peer_tls.is_none(), "--peer-listen"),
        ];
        if !insecure {
            refuse_plaintext(plaintext)?;
        }
        Ok(Effective {
            id,
            listen,
            peer_listen,
            data_dir,
            advertise,
            http_listen,
            lease_reads: s.lease_reads.unwrap_or(false),
            events_kept: s.events_kept.unwrap_or(purser_server::store::EVENTS_KEPT),
            replication_depth: s
                .replication_depth
                .unwrap_or(purser_server::network::STREAM_APPEND_DEPTH),
            entries_in_flight: s
                .entries_in_flight
                .unwrap_or(purser_server::batcher::ENTRIES_IN_FLIGHT),
            webhook_allow_private: s.webhook_allow_private.unwrap_or(false),
            webhook_ca: s.webhook_ca,
            tls,
            peer_tls,
        })
    }
}

/// One line, every key as the file spells it: what an operator checks first in the log.
impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let http = self
            .http_listen
            .map_or("none".to_owned(), |a| a.to_string());
        write!(
            f,
            "id={} listen={} peer_listen={} data_dir={} advertise={} http_listen={http} \
             lease_reads={} events_kept={} replication_depth={} entries_in_flight={} \
             webhook_allow_private={} tls={} peer_tls={}",
            self.id,
            self.listen,
            self.peer_listen,
            self.data_dir.display(),
            self.advertise,
            self.lease_reads,
            self.events_kept,
            self.replication_depth,
            self.entries_in_flight,
            self.webhook_allow_private,
            self.tls.is_some(),
            self.peer_tls.is_some()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_every_key() {
        let text = r#"
            # member 2
            id = 2
            listen = "0.0.0.0:7601"   # clients
            peer-listen = '0.0.0.0:7701'
            data_dir = "/var/lib/purser/2"
            advertise = "10.0.0.2:7601"
            http_listen = "127.0.0.1:7801"
            lease_reads = true
            events_kept = 5_000
            replication-depth = 8
            entries-in-flight = 4
            webhook-allow-private = true
            webhook_ca = "/etc/purser/hooks-ca.pem"
            tls_cert = "/etc/purser/member.pem"
            tls_key = "/etc/purser/member.key"
            client_ca = "/etc/purser/clients.pem"
            peer-cert = "/etc/purser/member.pem"
            peer_key = "/etc/purser/member.key"
            peer_ca = "/etc/purser/ca.pem"
            insecure = false
        "#;
        let s = Settings::parse(text).unwrap();
        assert_eq!(
            s,
            Settings {
                id: Some(2),
                listen: Some("0.0.0.0:7601".into()),
                peer_listen: Some("0.0.0.0:7701".into()),
                data_dir: Some(PathBuf::from("/var/lib/purser/2")),
                advertise: Some("10.0.0.2:7601".into()),
                http_listen: Some("127.0.0.1:7801".into()),
                lease_reads: Some(true),
                events_kept: Some(5_000),
                replication_depth: Some(8),
                entries_in_flight: Some(4),
                webhook_allow_private: Some(true),
                webhook_ca: Some("/etc/purser/hooks-ca.pem".into()),
                tls_cert: Some("/etc/purser/member.pem".into()),
                tls_key: Some("/etc/purser/member.key".into()),
                client_ca: Some("/etc/purser/clients.pem".into()),
                peer_cert: Some("/etc/purser/member.pem".into()),
                peer_key: Some("/etc/purser/member.key".into()),
                peer_ca: Some("/etc/purser/ca.pem".into()),
                insecure: Some(false),
            }
        );
        let e = Effective::of(s).unwrap();
        assert_eq!(
            e.to_string(),
            "id=2 listen=0.0.0.0:7601 peer_listen=0.0.0.0:7701 data_dir=/var/lib/purser/2 \
             advertise=10.0.0.2:7601 http_listen=127.0.0.1:7801 lease_reads=true \
             events_kept=5000 replication_depth=8 entries_in_flight=4 \
             webhook_allow_private=true tls=true peer_tls=true"
        );
    }

    #[test]
    fn a_non_loopback_address_takes_tls_or_insecure() {
        let plain = Settings {
            id: Some(1),
            listen: Some("0.0.0.0:7600".into()),
            peer_listen: Some("127.0.0.1:7700".into()),
            data_dir: Some("/tmp/x".into()),
            advertise: Some("10.0.0.1:7600".into()),
            ..Settings::default()
        };
        let refused = Effective::of(plain.clone()).unwrap_err().0;
        assert!(
            refused.contains("--listen 0.0.0.0:7600 is not a loopback address"),
            "{refused}"
        );
        let insecure = Settings {
            insecure: Some(true),
            ..plain.clone()
        };
        assert!(Effective::of(insecure).unwrap().tls.is_none());
        let half = Settings {
            tls_cert: Some("c.pem".into()),
            ..plain.clone()
        };
        assert!(Effective::of(half).unwrap_err().0.contains("go together"));
        let peer_without_ca = Settings {
            peer_cert: Some("c.pem".into()),
            peer_key: Some("c.key".into()),
            insecure: Some(true),
            ..plain
        };
        assert!(Effective::of(peer_without_ca)
            .unwrap_err()
            .0
            .contains("--peer-ca"));
    }

    #[test]
    fn the_keys_listed_are_the_keys_read() {
        let value = serde_json::to_value(Settings::default()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, KEYS);
    }

    #[test]
    fn the_first_layer_that_sets_a_key_wins() {
        let flags = Settings {
            id: Some(1),
            ..Settings::default()
        };
        let file = Settings {
            id: Some(9),
            listen: Some("127.0.0.1:1".into()),
            ..Settings::default()
        };
        let s = flags.or(file);
        assert_eq!((s.id, s.listen.as_deref()), (Some(1), Some("127.0.0.1:1")));
        assert_eq!(s.peer_listen, None);
    }

    #[test]
    fn bad_files_are_refused_with_the_key_named() {
        for (text, needles) in [
            (
                "port = 1",
                &["line 1", "unknown key `port`", "peer_listen"][..],
            ),
            ("id = 1\nlisten = 5", &["line 2", "listen = 5", "string"]),
            ("id = \"1\"", &["line 1", "id = \"1\""]),
            ("id = -1", &["line 1", "id = -1"]),
            ("lease_reads = \"yes\"", &["lease_reads"]),
            ("[server]\nid = 1", &["server"]),
            ("id = 1\nid = 2", &["line 2", "id"]),
            ("listen = \"a", &["line 1"]),
            ("id", &["line 1"]),
        ] {
            let error = Settings::parse(text).unwrap_err();
            for needle in needles {
                assert!(
                    error.contains(needle),
                    "{text:?}: {error:?} lacks {needle:?}"
                );
            }
        }
    }

    #[test]
    fn what_has_no_default_is_required_and_checked() {
        let all = Settings::parse(
            "id = 1\nlisten = \"127.0.0.1:7600\"\npeer_listen = \"127.0.0.1:7700\"\n\
             data_dir = \"d\"",
        )
        .unwrap();
        let e = Effective::of(all.clone()).unwrap();
        assert_eq!(e.advertise, "127.0.0.1:7600");
        assert_eq!(e.events_kept, purser_server::store::EVENTS_KEPT);
        assert!(!e.lease_reads);
        let without = |f: fn(&mut Settings)| {
            let mut s = all.clone();
            f(&mut s);
            Effective::of(s).unwrap_err().0
        };
        assert!(without(|s| s.id = None).contains("PURSER_ID"));
        assert!(without(|s| s.peer_listen = None).contains("`peer_listen` in --config"));
        assert!(without(|s| s.id = Some(0)).contains("positive"));
        assert!(without(|s| s.listen = Some("nowhere".into())).contains("--listen"));
    }
}
