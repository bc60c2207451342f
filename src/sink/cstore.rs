//! The C-STORE SCU sink: a batch of result files over one association to a DICOM destination, each sent
//! in Explicit VR Little Endian (the transfer syntax segnode writes its results in), over DICOM TLS when
//! the destination says `tls = true`. Every batch leaves a `results_sent` line in the audit trail.

use segnode_net::dimse;
use segnode_net::scu::{self, Outgoing, Peer, ScuOptions};

use super::{Answer, SendFuture, Sink, SinkItem, Unreachable};
use crate::config::{secs, DestinationSettings, Settings};

/// The Out of Resources family of failure statuses (A7xx): the destination may accept the object later.
const OUT_OF_RESOURCES_MASK: (u16, u16) = (0xFF00, 0xA700);

/// A DICOM destination reached by C-STORE.
pub struct CStoreSink {
    name: String,
    peer: Peer,
    options: ScuOptions,
    /// Why the destination's TLS configuration could not be built (checked at start; files can go
    /// away later): every send fails as unreachable with this.
    tls_error: Option<String>,
}

impl CStoreSink {
    pub fn new(dest: &DestinationSettings, settings: &Settings) -> CStoreSink {
        let d = &settings.dispatch;
        let (tls, tls_error) = match dest.scu_tls() {
            Ok(t) => (t, None),
            Err(e) => (
                None,
                Some(format!("TLS configuration of `{}`: {e}", dest.name)),
            ),
        };
        CStoreSink {
            name: dest.name.clone(),
            tls_error,
            peer: Peer {
                ae_title: dest.ae_title.clone(),
                host: dest.host.clone(),
                port: dest.port,
                calling_ae: dest
                    .calling_ae
                    .clone()
                    .unwrap_or_else(|| settings.dicom.ae_title.clone()),
            },
            options: ScuOptions {
                connect_timeout: secs(d.connect_timeout_s),
                dimse_timeout: secs(d.dimse_timeout_s),
                max_pdu: settings.dicom.max_pdu,
                tls,
            },
        }
    }
}

/// The answer a C-STORE response status means.
fn answer(status: u16) -> Answer {
    if !dimse::is_failure(status) {
        Answer::Accepted(status)
    } else {
        Answer::Refused {
            status,
            retryable: status & OUT_OF_RESOURCES_MASK.0 == OUT_OF_RESOURCES_MASK.1,
        }
    }
}

impl Sink for CStoreSink {
    fn send<'a>(&'a self, items: &'a [SinkItem]) -> SendFuture<'a> {
        Box::pin(async move {
            if let Some(e) = &self.tls_error {
                return Err(Unreachable(e.clone()));
            }
            let outgoing: Vec<Outgoing> = items
                .iter()
                .map(|i| Outgoing {
                    path: i.path.clone(),
                    sop_class: i.sop_class_uid.clone(),
                    sop_instance: i.sop_instance_uid.clone(),
                    transfer_syntax: "1.2.840.10008.1.2.1".into(),
                })
                .collect();
            let results = scu::store(&self.peer, &self.options, &outgoing).await;
            let audit = |fields: serde_json::Value| {
                let mut line = serde_json::json!({
                    "destination": self.name,
                    "ae_title": self.peer.ae_title,
                    "address": format!("{}:{}", self.peer.host, self.peer.port),
                    "tls": self.options.tls.is_some(),
                });
                if let (Some(l), serde_json::Value::Object(f)) = (line.as_object_mut(), fields) {
                    l.extend(f);
                }
                crate::audit::record("results_sent", line);
            };
            let results = results.map_err(|e| {
                audit(serde_json::json!({ "error": e.to_string(), "instances": [] }));
                Unreachable(e.to_string())
            })?;
            audit(serde_json::json!({
                "instances": outgoing.iter().zip(&results).map(|(o, r)| serde_json::json!({
                    "sop_instance_uid": o.sop_instance,
                    "status": r.as_ref().ok().map(|st| format!("{st:04X}")),
                    "error": r.as_ref().err().map(|e| e.to_string()),
                })).collect::<Vec<_>>(),
            }));
            Ok(results
                .into_iter()
                .map(|r| match r {
                    Ok(status) => answer(status),
                    Err(e) => Answer::Failed(e.to_string()),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_answers() {
        assert_eq!(answer(0x0000), Answer::Accepted(0));
        assert_eq!(answer(0xB000), Answer::Accepted(0xB000));
        assert_eq!(
            answer(0xA700),
            Answer::Refused {
                status: 0xA700,
                retryable: true
            }
        );
        assert_eq!(
            answer(0xA7FF),
            Answer::Refused {
                status: 0xA7FF,
                retryable: true
            }
        );
        for refused in [0xA900, 0xC000, 0x0122] {
            assert_eq!(
                answer(refused),
                Answer::Refused {
                    status: refused,
                    retryable: false
                }
            );
        }
    }
}
