//! DICOM TLS (PS3.15 B.9, the BCP 195 profiles): rustls configurations for both roles, read from PEM
//! files, and what a TLS connection tells the application about its peer.
//!
//! The crypto provider is chosen explicitly: rustls' `ring` provider (builds with a C compiler only; the
//! default aws-lc-rs needs cmake). Only TLS 1.3 and TLS 1.2 are offered, and of TLS 1.2 only the ECDHE
//! key exchanges with AEAD ciphers (AES-GCM, ChaCha20-Poly1305) that RFC 9325 (BCP 195) recommends —
//! the suites DCMTK's and Orthanc's BCP 195 profiles negotiate. No CBC, no RSA key transport, no TLS
//! 1.0/1.1.
//!
//! Inbound, [`ServerTls`] holds the current configuration behind a lock so certificates can be reloaded
//! without a restart ([`ServerTls::reload`]; a failed reload keeps the previous configuration). With a
//! `client_ca`, peers must present a certificate issued by it (mutual TLS). Outbound,
//! [`client_config`] verifies the server against the given CA (and its name), optionally presenting our
//! own certificate.

use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::handler::TlsPeer;

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} `{path}`: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} `{path}` holds no {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

/// The cipher suites offered (BCP 195: TLS 1.3, and TLS 1.2 ECDHE with AEAD only).
pub fn bcp195_provider() -> Arc<CryptoProvider> {
    use provider::cipher_suite::*;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_256_GCM_SHA384,
            TLS13_AES_128_GCM_SHA256,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..provider::default_provider()
    })
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.display().to_string(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "private key",
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in read_certs(what, path)? {
        store
            .add(c)
            .map_err(|e| TlsError::Config(format!("{what} `{}`: {e}", path.display())))?;
    }
    Ok(store)
}

/// The files of the inbound TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// Our certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, peers must present a certificate issued by one of these CAs (PEM): mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// A server configuration from `files`.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = bcp195_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("client CA", ca)?),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            read_certs("certificate", &files.cert)?,
            read_key(&files.key)?,
        )
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// The inbound TLS configuration, replaceable while the listener runs.
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// When the certificate in use expires (None: its validity could not be read).
    not_after: RwLock<Option<SystemTime>>,
}

impl ServerTls {
    pub fn load(files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let config = server_config(&files)?;
        let not_after = leaf_not_after(&files.cert);
        Ok(ServerTls {
            files,
            current: RwLock::new(config),
            not_after: RwLock::new(not_after),
        })
    }

    /// Read the files again; on error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        *self.not_after.write().unwrap_or_else(|p| p.into_inner()) =
            leaf_not_after(&self.files.cert);
        Ok(())
    }

    /// When the certificate in use expires, if its validity could be read.
    pub fn not_after(&self) -> Option<SystemTime> {
        *self.not_after.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// An acceptor with the current configuration (new connections pick up a reload).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

/// The files of an outbound TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CAs (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// Our certificate chain and key, for servers that require client authentication.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A client configuration from `files`.
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(bcp195_provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots("CA", &files.ca)?);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs("certificate", cert)?, read_key(key)?)
            .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "a client certificate needs both `cert` and `key`".into(),
            ))
        }
    };
    Ok(Arc::new(config))
}

/// A server name as the certificate check needs it (a DNS name or an IP address).
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.into()))
}

/// What an established TLS connection says about its peer.
pub fn peer_of(conn: &rustls::CommonState) -> TlsPeer {
    TlsPeer {
        protocol: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        certificate_sha256: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| {
                ring::digest::digest(&ring::digest::SHA256, leaf.as_ref())
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            }),
    }
}

/// The notAfter of the first certificate in a PEM file.
pub fn leaf_not_after(path: &Path) -> Option<SystemTime> {
    let certs = read_certs("certificate", path).ok()?;
    not_after(certs.first()?.as_ref())
}

/// How long until `not_after` (zero when past).
pub fn remaining(not_after: SystemTime) -> Duration {
    not_after
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// The notAfter of a DER X.509 certificate: Certificate → tbsCertificate → (version) serial, signature,
/// issuer, validity → notAfter (UTCTime or GeneralizedTime). `None` for anything else.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    /// One DER TLV at `pos`: (tag, content start, content end).
    fn tlv(b: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
        let tag = *b.get(pos)?;
        let first = *b.get(pos + 1)?;
        let (len, start) = if first < 0x80 {
            (first as usize, pos + 2)
        } else {
            let n = (first & 0x7F) as usize;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(pos + 2 + i)? as usize;
            }
            (len, pos + 2 + n)
        };
        let end = start.checked_add(len)?;
        (end <= b.len()).then_some((tag, start, end))
    }
    let (t, cert, _) = tlv(der, 0)?;
    let (t2, tbs, _) = tlv(der, cert)?;
    if t != 0x30 || t2 != 0x30 {
        return None;
    }
    let mut pos = tbs;
    let (tag, _, end) = tlv(der, pos)?;
    if tag == 0xA0 {
        pos = end; // explicit version
    }
    for _ in 0..3 {
        pos = tlv(der, pos)?.2; // serial, signature algorithm, issuer
    }
    let (tag, validity, _) = tlv(der, pos)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_before) = tlv(der, validity)?;
    let (kind, s, e) = tlv(der, after_before)?;
    let text = std::str::from_utf8(&der[s..e]).ok()?;
    let digits = |a: usize, n: usize| text.get(a..a + n)?.parse::<i64>().ok();
    let (year, rest) = match kind {
        0x17 => {
            let yy = digits(0, 2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        0x18 => (digits(0, 4)?, 4),
        _ => return None,
    };
    let (month, day) = (digits(rest, 2)?, digits(rest + 2, 2)?);
    let (h, m, sec) = (
        digits(rest + 4, 2)?,
        digits(rest + 6, 2)?,
        digits(rest + 8, 2)?,
    );
    // days from civil (proleptic Gregorian), Howard Hinnant's algorithm
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}
