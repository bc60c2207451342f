//! What every console handler shares: the index, settings, the admin token, the CSRF token of this
//! process, the viewer's cache, and the admin token's loading (generated at the first start).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use segnode_db::Index;
use subtle::ConstantTimeEq;

use crate::config::Settings;
use crate::view::ViewCache;

/// The admin token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "http.bind = {bind} is not a loopback address: the console refuses to start without an admin \
         token file ({path}); create it (e.g. `head -c 32 /dev/urandom | xxd -p -c 64 > {path}; chmod 600 \
         {path}`) or bind to 127.0.0.1"
    )]
    NeededForRemote { bind: String, path: String },
    #[error("admin token file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("admin token file {path} holds fewer than 16 characters")]
    TooShort { path: String },
}

/// The admin token: actions need it (Bearer header, or the login cookie).
#[derive(Clone)]
pub struct AdminToken(Arc<String>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl AdminToken {
    /// Read the token file; create it (32 random bytes as hex, mode 0600) when it does not exist and the
    /// console is bound to a loopback address.
    pub fn load_or_create(path: &Path, bind: IpAddr) -> Result<(AdminToken, bool), TokenError> {
        let io = |source| TokenError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let t = text.trim().to_string();
                if t.len() < 16 {
                    return Err(TokenError::TooShort {
                        path: path.display().to_string(),
                    });
                }
                Ok((AdminToken(Arc::new(t)), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !bind.is_loopback() {
                    return Err(TokenError::NeededForRemote {
                        bind: bind.to_string(),
                        path: path.display().to_string(),
                    });
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let token = random_hex(32);
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(format!("{token}\n").as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(io)?;
                Ok((AdminToken(Arc::new(token)), true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Whether `candidate` is the token (constant time in the token's content).
    pub fn verify(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.trim().as_bytes());
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

/// The console's shared state.
#[derive(Clone)]
pub struct Console {
    /// `node.name` of this process.
    pub node: String,
    pub settings: Arc<Settings>,
    pub index: Index,
    /// Root of the instance store (series folders are relative to it).
    pub store_root: PathBuf,
    /// None: actions are refused (a worker's monitoring endpoint).
    pub token: Option<AdminToken>,
    /// Sent with cookie-authenticated actions (`X-CSRF-Token`); one per process.
    pub csrf: Arc<String>,
    pub views: Arc<ViewCache>,
    /// The port actually bound (for the Host check).
    pub port: u16,
    /// When this process started (ms since the epoch).
    pub started_ms: i64,
    /// The running configuration, for the reload action (None: a worker's monitoring endpoint).
    pub live: Option<Arc<crate::reload::Live>>,
}

impl Console {
    pub fn new(
        node: String,
        settings: Arc<Settings>,
        index: Index,
        store_root: PathBuf,
        token: Option<AdminToken>,
        port: u16,
    ) -> Console {
        Console {
            node,
            settings,
            index,
            store_root,
            token,
            csrf: Arc::new(random_hex(16)),
            views: Arc::new(ViewCache::default()),
            port,
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            live: None,
        }
    }

    /// The console of a node whose configuration can be reloaded.
    pub fn with_live(mut self, live: Arc<crate::reload::Live>) -> Console {
        self.live = Some(live);
        self
    }

    /// Whether a Host header names this console: the bound address, localhost, or `http.allowed_hosts`
    /// (each with or without the port).
    pub fn host_allowed(&self, host: &str) -> bool {
        host_allowed(
            host,
            self.port,
            self.settings.http.bind.parse::<IpAddr>().ok(),
            &self.settings.http.allowed_hosts,
        )
    }
}

/// Whether `host` (a Host header) names a console listening on `bind`:`port`: localhost, 127.0.0.1,
/// [::1], the bound address unless it is unspecified, or an `allowed` entry; each bare or with the port.
pub fn host_allowed(host: &str, port: u16, bind: Option<IpAddr>, allowed: &[String]) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
    match bind {
        Some(IpAddr::V6(a)) if !a.is_unspecified() => names.push(format!("[{a}]")),
        Some(IpAddr::V4(a)) if !a.is_unspecified() => names.push(a.to_string()),
        _ => {}
    }
    names.extend(allowed.iter().map(|a| a.trim().to_ascii_lowercase()));
    !host.is_empty()
        && names
            .iter()
            .any(|n| host == *n || host == format!("{n}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_console_only() {
        let lo = Some("127.0.0.1".parse().unwrap());
        let none: Vec<String> = Vec::new();
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST:8080",
        ] {
            assert!(host_allowed(ok, 8080, lo, &none), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost:8081",
            "127.0.0.1.evil.example",
            "0.0.0.0:8080",
        ] {
            assert!(!host_allowed(bad, 8080, lo, &none), "{bad}");
        }
        let lan = Some("10.1.2.3".parse().unwrap());
        assert!(host_allowed("10.1.2.3:8080", 8080, lan, &none));
        let any = Some("0.0.0.0".parse().unwrap());
        let names = vec!["segnode.example.org".to_string()];
        assert!(host_allowed("segnode.example.org", 8080, any, &names));
        assert!(host_allowed("Segnode.Example.org:8080", 8080, any, &names));
        assert!(!host_allowed("other.example.org", 8080, any, &names));
    }

    #[test]
    fn token_is_generated_once_owner_only_and_verified() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin-token");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let (t, created) = AdminToken::load_or_create(&path, lo).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(t.verify(text.trim()));
        assert!(!t.verify(""));
        assert!(!t.verify(&text.trim()[1..]));
        let (again, created) = AdminToken::load_or_create(&path, lo).unwrap();
        assert!(!created && again.verify(text.trim()));
        // a remote bind never generates one
        let remote: IpAddr = "0.0.0.0".parse().unwrap();
        let err = AdminToken::load_or_create(&dir.path().join("none"), remote).unwrap_err();
        assert!(matches!(err, TokenError::NeededForRemote { .. }), "{err}");
        // an existing file is used on any bind; a short one is refused
        assert!(AdminToken::load_or_create(&path, remote).is_ok());
        std::fs::write(dir.path().join("short"), "abc\n").unwrap();
        assert!(matches!(
            AdminToken::load_or_create(&dir.path().join("short"), lo),
            Err(TokenError::TooShort { .. })
        ));
    }
}
