//! Association access control: the called AE must be ours, and the calling AE must be on the
//! allowlist (optionally bound to a peer address, optionally only over TLS) unless `dicom.accept_any` is
//! set.

use crate::config::DicomSettings;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use std::net::IpAddr;

/// One allowed caller.
#[derive(Debug, Clone)]
pub struct AllowedCaller {
    pub ae_title: String,
    pub host: Option<IpAddr>,
    /// Only over the TLS listener.
    pub require_tls: bool,
}

/// The access policy as the running node holds it: replaced whole on a configuration reload; each new
/// association reads the one in force when it asks.
pub type SharedPolicy = std::sync::Arc<std::sync::RwLock<std::sync::Arc<AccessPolicy>>>;

/// The policy in force.
pub fn current(p: &SharedPolicy) -> std::sync::Arc<AccessPolicy> {
    p.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The access policy of the node (shared by every connection).
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub accept_any: bool,
    pub callers: Vec<AllowedCaller>,
}

impl AccessPolicy {
    pub fn from_settings(d: &DicomSettings) -> AccessPolicy {
        AccessPolicy {
            accept_any: d.accept_any,
            callers: d
                .callers
                .iter()
                .map(|c| AllowedCaller {
                    ae_title: c.ae_title.trim().to_string(),
                    // validated at start
                    host: c.host.as_deref().and_then(|h| h.parse().ok()),
                    require_tls: c.require_tls,
                })
                .collect(),
        }
    }

    /// Whether `calling` connecting from `peer` (over plain TCP) may associate.
    pub fn allows(&self, calling: &str, peer: IpAddr) -> bool {
        self.allows_over(calling, peer, false)
    }

    /// Whether `calling` connecting from `peer`, over TLS when `tls`, may associate.
    pub fn allows_over(&self, calling: &str, peer: IpAddr, tls: bool) -> bool {
        self.accept_any
            || self.callers.iter().any(|c| {
                c.ae_title == calling.trim()
                    && c.host.is_none_or(|h| same_host(h, peer))
                    && (tls || !c.require_tls)
            })
    }
}

/// IPv4 and IPv4-mapped IPv6 forms of one address are the same host.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// The per-connection access check handed to dicom-ul (it knows the peer address).
#[derive(Debug, Clone)]
pub struct ConnectionAccess {
    pub policy: std::sync::Arc<AccessPolicy>,
    pub peer: IpAddr,
    /// The connection came over the TLS listener.
    pub tls: bool,
}

impl AccessControl for ConnectionAccess {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self
            .policy
            .allows_over(calling_ae_title, self.peer, self.tls)
        {
            if !self.tls && self.policy.allows_over(calling_ae_title, self.peer, true) {
                tracing::warn!(
                    calling_ae = calling_ae_title.trim(),
                    "calling AE title refused over plain TCP: its entry has require_tls = true"
                );
                return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
            }
            let hint = crate::config::caller_hint(calling_ae_title, self.peer);
            tracing::warn!(
                calling_ae = calling_ae_title.trim(),
                "calling AE title refused; {hint}"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        AccessPolicy {
            accept_any: false,
            callers: vec![
                AllowedCaller {
                    ae_title: "STORESCU".into(),
                    host: Some("127.0.0.1".parse().unwrap()),
                    require_tls: false,
                },
                AllowedCaller {
                    ae_title: "ANYWHERE".into(),
                    host: None,
                    require_tls: false,
                },
                AllowedCaller {
                    ae_title: "SECURE".into(),
                    host: None,
                    require_tls: true,
                },
            ],
        }
    }

    #[test]
    fn allowlist_with_host_binding() {
        let p = policy();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(p.allows("STORESCU", local));
        assert!(p.allows("STORESCU  ", local));
        assert!(!p.allows("STORESCU", other));
        assert!(p.allows("ANYWHERE", other));
        assert!(!p.allows("INTRUDER", local));
        assert!(p.allows("STORESCU", "::ffff:127.0.0.1".parse().unwrap()));
        let open = AccessPolicy {
            accept_any: true,
            ..p
        };
        assert!(open.allows("INTRUDER", other));
    }

    #[test]
    fn require_tls_admits_only_over_tls() {
        let p = policy();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!p.allows("SECURE", local));
        assert!(p.allows_over("SECURE", local, true));
        assert!(p.allows_over("STORESCU", local, true));
        let plain = ConnectionAccess {
            policy: std::sync::Arc::new(p),
            peer: local,
            tls: false,
        };
        assert_eq!(
            plain.check_access("SEGNODE", "SECURE", "SEGNODE", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        let secure = ConnectionAccess { tls: true, ..plain };
        assert_eq!(
            secure.check_access("SEGNODE", "SECURE", "SEGNODE", None),
            Ok(())
        );
    }

    #[test]
    fn called_ae_must_be_ours() {
        let acc = ConnectionAccess {
            policy: std::sync::Arc::new(policy()),
            peer: "127.0.0.1".parse().unwrap(),
            tls: false,
        };
        assert_eq!(
            acc.check_access("SEGNODE", "STORESCU", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        assert_eq!(
            acc.check_access("SEGNODE", "INTRUDER", "SEGNODE", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            acc.check_access("SEGNODE", "STORESCU", "SEGNODE", None),
            Ok(())
        );
    }
}
