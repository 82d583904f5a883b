//! TLS on a member's ports, with rustls and `ring` (the workspace's one crypto provider).
//!
//! The client and HTTP ports take a certificate and key (`--tls-cert`, `--tls-key`) and, when
//! clients must present certificates, a CA (`--client-ca`). The peer port is mutual TLS
//! (`--peer-cert`, `--peer-key`, `--peer-ca`): a member accepts Raft traffic only from a
//! certificate of the cluster's CA, and presents its own when it calls the others.
//!
//! A member's certificate and key are read again when their files change (checked at most
//! once a second, on a handshake), so a renewal needs no restart; a file that does not load
//! keeps the previous certificate, with a warning.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::StartError;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the certificate files are looked at for a change.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The files of one port's TLS: its certificate chain and key (PEM) and, when the other side
/// must present a certificate, the CA it must be signed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(file: &Path, why: impl std::fmt::Display) -> StartError {
    StartError::Config(format!("TLS file {}: {why}", file.display()))
}

/// The certificates of a PEM file (a chain, or the CAs to trust).
pub fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, StartError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(file, e))?;
    if certs.is_empty() {
        return Err(bad(file, "no certificate in it"));
    }
    Ok(certs)
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, StartError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| bad(key, e))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

fn modified(file: &Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// The member's certificate, read again when its files change.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCert {
    fn load(cert: &Path, key: &Path) -> Result<Self, StartError> {
        let loaded = Loaded {
            key: certified_key(cert, key)?,
            stamps: (modified(cert), modified(key)),
            checked: Instant::now(),
        };
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            state: Mutex::new(loaded),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= RELOAD_CHECK_EVERY {
            state.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != state.stamps {
                match certified_key(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                        state.key = key;
                        state.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!("TLS certificate not reloaded, the previous one serves: {e}")
                    }
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS acceptor for one port. `alpn`: the protocols it speaks (`h2` for gRPC, `http/1.1`).
pub fn acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsAcceptor, StartError> {
    let resolver = Arc::new(ReloadingCert::load(&files.cert, &files.key)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Config(format!("TLS: {e}")))?;
    let builder = match &files.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| bad(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| bad(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connections of `listener` after their TLS handshake, for a gRPC server. Handshakes run
/// apart from the accept loop (a slow or silent client holds up nobody) and are bounded in
/// time; a failed one is dropped with a debug line. Ends when the server stops taking them.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {peer}: timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// What a member presents and trusts when it calls the other members (mutual TLS).
pub fn peer_client_config(
    files: &TlsFiles,
) -> Result<tonic::transport::ClientTlsConfig, StartError> {
    let read = |file: &Path| std::fs::read(file).map_err(|e| bad(file, e));
    let ca = files
        .ca
        .as_ref()
        .ok_or_else(|| StartError::Config("--peer-ca is required with --peer-cert".into()))?;
    read_certs(ca)?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
        .identity(tonic::transport::Identity::from_pem(
            read(&files.cert)?,
            read(&files.key)?,
        )))
}

/// The name a member's peer certificate carries (a DNS subject alternative name), so that a
/// certificate of the cluster's CA made for a client, or for another member, cannot speak for
/// member `id` on the peer port. `purser certs init` writes it; an operator's own CA must too.
pub fn member_name(id: u64) -> String {
    format!("member-{id}.purser")
}

/// Whether `cert` (already verified against the peer CA) names member `id`.
pub fn names_member(cert: &CertificateDer<'_>, id: u64) -> bool {
    let Ok(name) = rustls::pki_types::ServerName::try_from(member_name(id)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}
