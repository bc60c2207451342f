//! Whole associations run in-process: the SCP of this crate on one end of a `tokio::io::duplex` pipe,
//! the crate's SCU (or hand-built PDUs) on the other. No binary, no port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJServiceUserReason,
    AssociationRJSource, PDataValue, PDataValueType, PresentationContextResultReason,
};
use dicom_ul::Pdu;
use segnode_net::dimse::{self, status};
use segnode_net::handler::{Announced, Ending, StoreStatus, Tally};
use segnode_net::negotiation;
use segnode_net::scu::{self, Client, Peer, ScuError, ScuOptions};
use segnode_net::sop::VERIFICATION;
use segnode_net::wire::PduStream;
use segnode_net::{
    AssociationInfo, AssociationRequest, Event, InstanceSink, RejectKind, ScpHandler, ScpOptions,
    Served,
};
use tokio::io::DuplexStream;
use tokio::sync::watch;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// What the test application saw.
#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    begun: Vec<String>,
    ended: Vec<(Ending, Tally)>,
    /// Instances filed: SOP instance UID, transfer syntax, bytes.
    filed: Vec<(String, String, Vec<u8>)>,
    /// Sinks dropped without being finished.
    discarded: usize,
    fragments: usize,
}

/// A test application: admits callers named `OK*`, files into memory, refuses instances whose UID
/// ends in `.999`, and can fail to journal.
struct TestApp {
    seen: Arc<Mutex<Seen>>,
    journal_down: bool,
}

struct MemorySink {
    seen: Arc<Mutex<Seen>>,
    announced: Announced,
    data: Vec<u8>,
    finished: bool,
}

impl InstanceSink for MemorySink {
    fn write(&mut self, fragment: &[u8]) {
        self.data.extend_from_slice(fragment);
        self.seen.lock().unwrap().fragments += 1;
    }

    async fn finish(mut self) -> StoreStatus {
        self.finished = true;
        let data = std::mem::take(&mut self.data);
        self.seen.lock().unwrap().filed.push((
            self.announced.sop_instance.clone(),
            self.announced.transfer_syntax.clone(),
            data,
        ));
        StoreStatus::success()
    }
}

impl Drop for MemorySink {
    fn drop(&mut self) {
        if !self.finished {
            self.seen.lock().unwrap().discarded += 1;
        }
    }
}

impl ScpHandler for TestApp {
    type Sink = MemorySink;

    fn admit(&self, r: &AssociationRequest<'_>) -> Result<(), AssociationRJServiceUserReason> {
        if r.called_ae != r.local_ae {
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        } else if !r.calling_ae.starts_with("OK") {
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        } else {
            Ok(())
        }
    }

    async fn begin(&self, a: &AssociationInfo) -> Result<(), String> {
        if self.journal_down {
            return Err("journal down".into());
        }
        self.seen.lock().unwrap().begun.push(a.calling_ae.clone());
        Ok(())
    }

    async fn end(&self, _a: &AssociationInfo, ending: &Ending, tally: &Tally) {
        self.seen
            .lock()
            .unwrap()
            .ended
            .push((ending.clone(), tally.clone()));
    }

    fn open(&self, _a: &AssociationInfo, announced: &Announced) -> Result<MemorySink, StoreStatus> {
        if announced.sop_instance.ends_with(".999") {
            return Err(StoreStatus::failure(status::OUT_OF_RESOURCES, "disk full"));
        }
        Ok(MemorySink {
            seen: self.seen.clone(),
            announced: announced.clone(),
            data: Vec::new(),
            finished: false,
        })
    }

    fn event(&self, event: Event) {
        self.seen.lock().unwrap().events.push(event);
    }
}

struct Harness {
    seen: Arc<Mutex<Seen>>,
    scp: tokio::task::JoinHandle<Served>,
    _shutdown: watch::Sender<bool>,
}

impl Harness {
    async fn served(self) -> (Served, Arc<Mutex<Seen>>) {
        let served = tokio::time::timeout(Duration::from_secs(10), self.scp)
            .await
            .expect("SCP finished")
            .expect("SCP task");
        (served, self.seen)
    }
}

fn options() -> ScpOptions {
    ScpOptions {
        max_pdu: 4096,
        artim_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        dimse_timeout: Duration::from_secs(5),
        ..ScpOptions::new("SEGNODE")
    }
}

/// Start the SCP on one end of a pipe; returns the other end.
fn start(opts: ScpOptions, journal_down: bool) -> (DuplexStream, Harness) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Arc::new(TestApp {
        seen: seen.clone(),
        journal_down,
    });
    let (tx, rx) = watch::channel(false);
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let scp = tokio::spawn(segnode_net::serve(theirs, peer, app, Arc::new(opts), rx));
    (
        ours,
        Harness {
            seen,
            scp,
            _shutdown: tx,
        },
    )
}

fn peer(calling: &str, called: &str) -> Peer {
    Peer {
        ae_title: called.into(),
        host: "in-memory".into(),
        port: 104,
        calling_ae: calling.into(),
    }
}

fn scu_options() -> ScuOptions {
    ScuOptions {
        max_pdu: 16_384,
        ..ScuOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_then_release() {
    let (stream, h) = start(options(), false);
    let p = peer("OK_SCU", "SEGNODE");
    let mut c = Client::associate(stream, &p, &scu_options(), &scu::echo_contexts())
        .await
        .unwrap();
    assert_eq!(c.peer_max_pdu(), 4096);
    assert_eq!(c.echo(&p).await.unwrap(), status::SUCCESS);
    assert_eq!(c.echo(&p).await.unwrap(), status::SUCCESS);
    c.release().await.unwrap();
    let (served, seen) = h.served().await;
    let tally = Tally {
        echoes: 2,
        ..Tally::default()
    };
    assert_eq!(served, Served::Ended(Ending::Released, tally.clone()));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.begun, vec!["OK_SCU".to_string()]);
    assert_eq!(seen.ended, vec![(Ending::Released, tally)]);
    assert_eq!(seen.events, vec![Event::Accepted, Event::Echo, Event::Echo]);
}

/// A data set of `n` bytes with a recognisable pattern.
fn dataset(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn store_spanning_many_fragments_then_a_refusal_then_another_store() {
    let (stream, h) = start(options(), false);
    let p = peer("OK_SCU", "SEGNODE");
    let contexts = vec![
        (CT.to_string(), vec![EXPLICIT_LE.to_string()]),
        (VERIFICATION.to_string(), vec![EXPLICIT_LE.to_string()]),
    ];
    let mut c = Client::associate(stream, &p, &scu_options(), &contexts)
        .await
        .unwrap();
    let ct_pc = c
        .contexts()
        .iter()
        .find(|pc| pc.abstract_syntax == CT)
        .unwrap()
        .id;
    let verification_pc = c
        .contexts()
        .iter()
        .find(|pc| pc.abstract_syntax == VERIFICATION)
        .unwrap()
        .id;
    // 100 kB through a 4 kB maximum PDU: 25 fragments
    let big = dataset(100_000);
    let st = c
        .store_dataset(ct_pc, 1, CT, "1.2.3.1", &big)
        .await
        .unwrap();
    assert_eq!(st, status::SUCCESS);
    // refused by the application: drained, answered, association goes on
    let st = c
        .store_dataset(ct_pc, 2, CT, "1.2.3.999", &dataset(10_000))
        .await
        .unwrap();
    assert_eq!(st, status::OUT_OF_RESOURCES);
    // a SOP class other than the context's: refused by the DICOM layer
    let st = c
        .store_dataset(verification_pc, 3, CT, "1.2.3.3", &dataset(100))
        .await
        .unwrap();
    assert_eq!(st, status::SOP_CLASS_NOT_SUPPORTED);
    let st = c
        .store_dataset(ct_pc, 4, CT, "1.2.3.4", &dataset(5000))
        .await
        .unwrap();
    assert_eq!(st, status::SUCCESS);
    c.release().await.unwrap();
    let (served, seen) = h.served().await;
    let total = (100_000 + 10_000 + 100 + 5000) as i64;
    assert_eq!(
        served,
        Served::Ended(
            Ending::Released,
            Tally {
                stored: 2,
                failed: 2,
                echoes: 0,
                bytes: total
            }
        )
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.filed.len(), 2);
    assert_eq!(seen.filed[0].0, "1.2.3.1");
    assert_eq!(seen.filed[0].1, EXPLICIT_LE);
    assert_eq!(seen.filed[0].2, big, "data set arrives intact");
    assert!(seen.fragments >= 25, "{} fragments", seen.fragments);
    let received: u64 = seen
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Received(n) => Some(*n),
            _ => None,
        })
        .sum();
    assert_eq!(received, total as u64);
    let outcomes: Vec<bool> = seen
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Instance { stored } => Some(*stored),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, vec![true, false, false, true]);
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_abort_mid_data_set_discards_the_instance() {
    let (stream, h) = start(options(), false);
    let p = peer("OK_SCU", "SEGNODE");
    let contexts = vec![(CT.to_string(), vec![EXPLICIT_LE.to_string()])];
    let mut c = Client::associate(stream, &p, &scu_options(), &contexts)
        .await
        .unwrap();
    let pc = c.contexts()[0].id;
    c.send(&dimse::command_pdu(
        pc,
        dimse::encode_store_rq(1, CT, "1.2.3.1"),
    ))
    .await
    .unwrap();
    c.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Data,
            is_last: false,
            data: dataset(1000),
        }],
    })
    .await
    .unwrap();
    c.abort().await;
    let (served, seen) = h.served().await;
    assert!(
        matches!(served, Served::Ended(Ending::PeerAborted, ref t) if t.stored == 0 && t.bytes == 1000),
        "{served:?}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.discarded, 1);
    assert!(seen.filed.is_empty());
    assert_eq!(seen.ended.len(), 1);
    assert_eq!(seen.ended[0].0, Ending::PeerAborted);
}

/// Hand-built client: A-ASSOCIATE-RQ for Verification from OK_SCU, the AC read back.
async fn raw_associate(
    stream: DuplexStream,
    contexts: &[(String, Vec<String>)],
) -> (PduStream<DuplexStream>, Pdu) {
    let mut w = PduStream::new(stream, 16_384);
    let rq = negotiation::request("OK_SCU", "SEGNODE", 16_384, contexts);
    w.write(&Pdu::AssociationRQ(rq)).await.unwrap();
    let answer = w.read_within(Duration::from_secs(5)).await.unwrap();
    (w, answer)
}

fn is_abort(pdu: &Pdu) -> bool {
    matches!(pdu, Pdu::AbortRQ { .. })
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_command_set_aborts_the_association() {
    let (stream, h) = start(options(), false);
    let (mut w, ac) = raw_associate(stream, &scu::echo_contexts()).await;
    assert!(matches!(ac, Pdu::AssociationAC(_)));
    // a complete command fragment whose bytes are no command set
    w.write(&dimse::command_pdu(1, vec![0xAB; 8]))
        .await
        .unwrap();
    let answer = w.read_within(Duration::from_secs(5)).await.unwrap();
    assert!(is_abort(&answer), "{answer:?}");
    let (served, seen) = h.served().await;
    assert!(
        matches!(&served, Served::Ended(Ending::Aborted(why), _) if why.contains("bad command set")),
        "{served:?}"
    );
    assert_eq!(seen.lock().unwrap().ended.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_without_a_command_aborts() {
    let (stream, h) = start(options(), false);
    let (mut w, _) = raw_associate(stream, &scu::echo_contexts()).await;
    w.write(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: 1,
            value_type: PDataValueType::Data,
            is_last: true,
            data: vec![1, 2, 3, 4],
        }],
    })
    .await
    .unwrap();
    assert!(is_abort(
        &w.read_within(Duration::from_secs(5)).await.unwrap()
    ));
    let (served, _) = h.served().await;
    assert!(
        matches!(&served, Served::Ended(Ending::Aborted(why), _) if why.contains("without a command")),
        "{served:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_pdus_before_and_after_association() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // an unknown PDU type instead of A-ASSOCIATE-RQ: A-ABORT (unrecognized PDU), no association
    let (stream, h) = start(options(), false);
    let mut w = PduStream::new(stream, 16_384);
    w.write(&Pdu::Unknown {
        pdu_type: 0x42,
        data: vec![0; 4],
    })
    .await
    .unwrap();
    assert_eq!(
        w.read_within(Duration::from_secs(5)).await.unwrap(),
        Pdu::AbortRQ {
            source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnrecognizedPdu)
        }
    );
    let (served, seen) = h.served().await;
    assert!(matches!(served, Served::NotEstablished(_)), "{served:?}");
    assert!(seen.lock().unwrap().begun.is_empty());

    // a PDU claiming 4 GB: the connection is closed without reading it
    let (mut raw, h) = start(options(), false);
    raw.write_all(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3])
        .await
        .unwrap();
    let (served, _) = h.served().await;
    assert!(
        matches!(&served, Served::NotEstablished(why) if why.contains("exceeds")),
        "{served:?}"
    );
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest).await;
    assert!(rest.is_empty());

    // after association: a P-DATA larger than the 4 kB we announced aborts
    let (stream, h) = start(options(), false);
    let (mut w, _) = raw_associate(stream, &scu::echo_contexts()).await;
    w.write(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: 1,
            value_type: PDataValueType::Data,
            is_last: true,
            data: vec![0; 8000],
        }],
    })
    .await
    .unwrap();
    let (served, _) = h.served().await;
    assert!(
        matches!(&served, Served::Ended(Ending::Aborted(why), _) if why.contains("exceeds")),
        "{served:?}"
    );

    // a truncated PDU, then silence: aborted at the idle timeout
    let (stream, h) = start(
        ScpOptions {
            idle_timeout: Duration::from_millis(300),
            ..options()
        },
        false,
    );
    let (w, _) = raw_associate(stream, &scu::echo_contexts()).await;
    let mut raw = w.into_inner();
    raw.write_all(&[0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00])
        .await
        .unwrap();
    let (served, _) = h.served().await;
    assert!(
        matches!(&served, Served::Ended(Ending::Aborted(why), _) if why.contains("no PDU within")),
        "{served:?}"
    );
    let mut back = PduStream::new(raw, 16_384);
    assert!(is_abort(
        &back.read_within(Duration::from_secs(5)).await.unwrap()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_abstract_syntax_rejected_per_presentation_context() {
    let (stream, h) = start(options(), false);
    let contexts = vec![
        (VERIFICATION.to_string(), vec![EXPLICIT_LE.to_string()]),
        ("1.2.3.4.5.6".to_string(), vec![EXPLICIT_LE.to_string()]),
        // 12-bit lossy JPEG (Process 2 & 4) is not among the transfer syntaxes we take for images
        (CT.to_string(), vec!["1.2.840.10008.1.2.4.51".to_string()]),
        (
            CT.to_string(),
            vec![
                "1.2.840.10008.1.2.4.51".to_string(),
                "1.2.840.10008.1.2".to_string(),
            ],
        ),
    ];
    let (mut w, ac) = raw_associate(stream, &contexts).await;
    let Pdu::AssociationAC(ac) = ac else {
        panic!("{ac:?}")
    };
    use PresentationContextResultReason::*;
    let results: Vec<_> = ac
        .presentation_contexts
        .iter()
        .map(|pc| (pc.id, pc.reason.clone(), pc.transfer_syntax.clone()))
        .collect();
    assert_eq!(results[0], (1, Acceptance, EXPLICIT_LE.to_string()));
    assert_eq!(results[1].1, AbstractSyntaxNotSupported);
    assert_eq!(results[2].1, TransferSyntaxesNotSupported);
    assert_eq!(results[3], (7, Acceptance, "1.2.840.10008.1.2".to_string()));
    // a command on a rejected context is a protocol error
    w.write(&dimse::command_pdu(3, dimse::encode_echo_rq(1)))
        .await
        .unwrap();
    assert!(is_abort(
        &w.read_within(Duration::from_secs(5)).await.unwrap()
    ));
    let (served, _) = h.served().await;
    assert!(
        matches!(&served, Served::Ended(Ending::Aborted(why), _) if why.contains("not accepted")),
        "{served:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_callers() {
    for (calling, called, reason) in [
        (
            "INTRUDER",
            "SEGNODE",
            AssociationRJServiceUserReason::CallingAETitleNotRecognized,
        ),
        (
            "OK_SCU",
            "SOMEONE",
            AssociationRJServiceUserReason::CalledAETitleNotRecognized,
        ),
    ] {
        let (stream, h) = start(options(), false);
        let err = Client::associate(
            stream,
            &peer(calling, called),
            &scu_options(),
            &scu::echo_contexts(),
        )
        .await
        .err()
        .expect("rejected");
        assert!(matches!(err, ScuError::Associate(_)), "{err}");
        let (served, seen) = h.served().await;
        match served {
            Served::Rejected(rj) => {
                assert_eq!(rj.result, dicom_ul::pdu::AssociationRJResult::Permanent);
                assert_eq!(rj.source, AssociationRJSource::ServiceUser(reason));
            }
            other => panic!("{other:?}"),
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.events, vec![Event::Rejected(RejectKind::Refused)]);
        assert!(seen.begun.is_empty() && seen.ended.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn journal_failure_aborts_before_any_message() {
    let (stream, h) = start(options(), true);
    let (mut w, ac) = raw_associate(stream, &scu::echo_contexts()).await;
    assert!(matches!(ac, Pdu::AssociationAC(_)));
    assert!(is_abort(
        &w.read_within(Duration::from_secs(5)).await.unwrap()
    ));
    let (served, seen) = h.served().await;
    assert_eq!(served, Served::NotJournaled("journal down".into()));
    assert!(seen.lock().unwrap().ended.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_connection_closed_at_artim_timeout() {
    let (_stream, h) = start(
        ScpOptions {
            artim_timeout: Duration::from_millis(200),
            ..options()
        },
        false,
    );
    let (served, _) = h.served().await;
    assert_eq!(served, Served::NotEstablished("ARTIM timeout".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_an_idle_association() {
    let (stream, h) = start(options(), false);
    let (mut w, _) = raw_associate(stream, &scu::echo_contexts()).await;
    h._shutdown.send(true).unwrap();
    assert!(is_abort(
        &w.read_within(Duration::from_secs(5)).await.unwrap()
    ));
    let (served, _) = h.served().await;
    assert!(
        matches!(&served, Served::Ended(Ending::Aborted(why), _) if why == "node shutting down"),
        "{served:?}"
    );
}
