//! The C-STORE SCU sink: a batch of result files over one association to a DICOM destination, each sent
//! in Explicit VR Little Endian (the transfer syntax segnode writes its results in).

use segnode_net::dimse;
use segnode_net::scu::{self, Outgoing, Peer, ScuOptions};

use super::{Answer, SendFuture, Sink, SinkItem, Unreachable};
use crate::config::{secs, DestinationSettings, Settings};

/// The Out of Resources family of failure statuses (A7xx): the destination may accept the object later.
const OUT_OF_RESOURCES_MASK: (u16, u16) = (0xFF00, 0xA700);

/// A DICOM destination reached by C-STORE.
pub struct CStoreSink {
    peer: Peer,
    options: ScuOptions,
}

impl CStoreSink {
    pub fn new(dest: &DestinationSettings, settings: &Settings) -> CStoreSink {
        let d = &settings.dispatch;
        CStoreSink {
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
            let outgoing: Vec<Outgoing> = items
                .iter()
                .map(|i| Outgoing {
                    path: i.path.clone(),
                    sop_class: i.sop_class_uid.clone(),
                    sop_instance: i.sop_instance_uid.clone(),
                    transfer_syntax: "1.2.840.10008.1.2.1".into(),
                })
                .collect();
            let results = scu::store(&self.peer, &self.options, &outgoing)
                .await
                .map_err(|e| Unreachable(e.to_string()))?;
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
