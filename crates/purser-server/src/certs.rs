//! Certificates for a test or small cluster (`purser certs init`), made with rcgen: one CA,
//! one certificate per member (server and client use: the peer port is mutual TLS, and the
//! same certificate serves the client port), and one client certificate. They are valid from
//! a day in the past (the chaos harness moves clocks back) for a year. A member's certificate
//! names the member (`member-N.purser`, see `tls::member_name`), which the peer port checks.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// How long what `init` makes is valid, from a day before it is made.
const VALID_DAYS: i64 = 366;

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA that issues the cluster's certificates.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

fn failed(e: rcgen::Error) -> String {
    format!("certificate: {e}")
}

/// Valid from a day before `now_ms` for [`VALID_DAYS`].
fn validity(params: &mut CertificateParams, now_ms: u64) {
    let today = i64::try_from(now_ms / purser_core::time::DAY_MS).unwrap_or(i64::MAX);
    let date = |days: i64| {
        let (y, m, d) = purser_core::time::civil_from_days(days);
        rcgen::date_time_ymd(i32::try_from(y).unwrap_or(9999), m as u8, d as u8)
    };
    params.not_before = date(today - 1);
    params.not_after = date(today + VALID_DAYS);
}

impl Authority {
    pub fn new(name: &str, now_ms: u64) -> Result<Authority, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, now_ms);
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.self_signed(&key).map_err(failed)?;
        let pem = cert.pem();
        Ok(Authority { cert, key, pem })
    }

    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate named `name`, valid for `hosts` (names and IP addresses), for server and
    /// client authentication.
    pub fn issue(&self, name: &str, hosts: &[String], now_ms: u64) -> Result<Issued, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, name);
        for host in hosts {
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into().map_err(failed)?),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, now_ms);
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(failed)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The names every member certificate is valid for besides the caller's `hosts`.
pub const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Writes into `dir` a CA (`ca.pem`, `ca.key`), `member-1.pem`/`.key` to `member-N`, and
/// `client.pem`/`.key`; keys with mode 0600. Refuses to overwrite an existing CA. Returns the
/// files written.
pub fn init(
    dir: &Path,
    members: u32,
    hosts: &[String],
    now_ms: u64,
) -> Result<Vec<PathBuf>, String> {
    if dir.join("ca.pem").exists() {
        return Err(format!(
            "{} already holds a CA (ca.pem): remove it or choose another directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut hosts_all: Vec<String> = LOCAL_HOSTS.iter().map(|h| (*h).to_owned()).collect();
    hosts_all.extend(hosts.iter().cloned());
    let ca = Authority::new("purser cluster CA", now_ms)?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: &str, secret: bool| -> Result<(), String> {
        let file = dir.join(name);
        let done = if secret {
            crate::serve::write_secret(&file, text.trim_end())
        } else {
            std::fs::write(&file, text)
        };
        done.map_err(|e| format!("{}: {e}", file.display()))?;
        written.push(file);
        Ok(())
    };
    write("ca.pem", ca.cert_pem(), false)?;
    write("ca.key", &ca.key_pem(), true)?;
    for id in 1..=members {
        let mut names = hosts_all.clone();
        names.push(crate::tls::member_name(u64::from(id)));
        let issued = ca.issue(&format!("purser member {id}"), &names, now_ms)?;
        write(&format!("member-{id}.pem"), &issued.cert_pem, false)?;
        write(&format!("member-{id}.key"), &issued.key_pem, true)?;
    }
    let client = ca.issue("purser client", &[], now_ms)?;
    write("client.pem", &client.cert_pem, false)?;
    write("client.key", &client.key_pem, true)?;
    Ok(written)
}
