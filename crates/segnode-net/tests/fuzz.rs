//! A seeded mutation fuzzer for segnode-net's front door, on stable Rust, in the normal test suite.
//!
//! The corpus is a recorded client side of a real association (A-ASSOCIATE-RQ, a C-ECHO, a C-STORE in
//! two data fragments, A-RELEASE-RQ) and its command sets. Each case applies a few random mutations
//! (bit flips, byte overwrites, inserted / deleted / duplicated runs, truncation, PDU length fields set
//! to edge values, PDUs spliced from the corpus) and then
//! - feeds the stream to the SCP ([`segnode_net::serve`]) over an in-memory pipe, which must end by
//!   itself (no panic, no hang: every case is bounded by a timeout far above the SCP's timers), with
//!   memory bounded by the maximum PDU (a small one here);
//! - decodes mutated command sets with the DIMSE decoder ([`segnode_net::dimse::decode`]) and mutated
//!   PDUs with the PDU reader ([`segnode_net::wire::PduStream`]).
//!
//! `SEGNODE_FUZZ_CASES` (default 20000 streams, about a second) and `SEGNODE_FUZZ_SEED` (default: fixed, so a failure is
//! reproducible; `random` for a fresh one, printed) set the run; `scripts/fuzz` runs a long one. A crash
//! found becomes a regression case in `regressions()`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_ul::pdu::{
    AssociationRJServiceUserReason, AssociationRQ, PDataValue, PDataValueType,
    PresentationContextProposed, UserVariableItem,
};
use dicom_ul::Pdu;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segnode_net::dimse;
use segnode_net::handler::{Announced, Ending, StoreStatus, Tally};
use segnode_net::wire::PduStream;
use segnode_net::{
    AssociationInfo, AssociationRequest, InstanceSink, ScpHandler, ScpOptions, Served,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Admits everyone, counts bytes, keeps nothing.
struct Sponge;

struct Drain(usize);

impl InstanceSink for Drain {
    fn write(&mut self, fragment: &[u8]) {
        self.0 += fragment.len();
    }
    async fn finish(self) -> StoreStatus {
        StoreStatus::success()
    }
}

impl ScpHandler for Sponge {
    type Sink = Drain;
    fn admit(&self, r: &AssociationRequest<'_>) -> Result<(), AssociationRJServiceUserReason> {
        if r.called_ae == r.local_ae {
            Ok(())
        } else {
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        }
    }
    async fn begin(&self, _a: &AssociationInfo) -> Result<(), String> {
        Ok(())
    }
    async fn end(&self, _a: &AssociationInfo, _e: &Ending, _t: &Tally) {}
    fn open(&self, _a: &AssociationInfo, _an: &Announced) -> Result<Drain, StoreStatus> {
        Ok(Drain(0))
    }
}

fn encode(pdu: &Pdu) -> Vec<u8> {
    let mut out = Vec::new();
    dicom_ul::write_pdu(&mut out, pdu).expect("encode corpus PDU");
    out
}

fn pdata(pc: u8, value_type: PDataValueType, is_last: bool, data: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type,
            is_last,
            data,
        }],
    }
}

/// The recorded client side of an association, PDU by PDU, and its command sets.
fn corpus() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "FUZZER".into(),
        called_ae_title: "SEGNODE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![
            PresentationContextProposed {
                id: 1,
                abstract_syntax: "1.2.840.10008.1.1".into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            },
            PresentationContextProposed {
                id: 3,
                abstract_syntax: CT.into(),
                transfer_syntaxes: vec![EXPLICIT_LE.into()],
            },
        ],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.3.4".into()),
        ],
    });
    let echo = dimse::encode_echo_rq(1);
    let store = dimse::encode_store_rq(2, CT, "1.2.826.0.1.3680043.2.1125.1.1");
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
    let pdus = vec![
        encode(&rq),
        encode(&pdata(1, PDataValueType::Command, true, echo.clone())),
        encode(&pdata(3, PDataValueType::Command, true, store.clone())),
        encode(&pdata(
            3,
            PDataValueType::Data,
            false,
            data[..1500].to_vec(),
        )),
        encode(&pdata(3, PDataValueType::Data, true, data[1500..].to_vec())),
        encode(&Pdu::ReleaseRQ),
    ];
    (pdus, vec![echo, store])
}

/// Apply 1–4 random mutations to `bytes`.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>, splice: &[Vec<u8>]) {
    for _ in 0..rng.random_range(1..=4) {
        let len = bytes.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                bytes[i] = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x04, 0xFE][rng.random_range(0..7)];
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..64);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                bytes.splice(i..i, junk);
            }
            3 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..64)).min(len);
                bytes.drain(i..j);
            }
            4 if len > 0 => bytes.truncate(rng.random_range(0..len)),
            5 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..256)).min(len);
                let run = bytes[i..j].to_vec();
                let at = rng.random_range(0..=len);
                bytes.splice(at..at, run);
            }
            6 if len >= 6 => {
                // a length field (PDU, item or element) to an edge value
                let i = rng.random_range(0..len - 3);
                let v: u32 = [
                    0,
                    1,
                    5,
                    0xFFFF,
                    0x10000,
                    0x7FFF_FFFF,
                    0xFFFF_FFFF,
                    0xFFFF_FFF0,
                ][rng.random_range(0..8)];
                if rng.random_bool(0.5) {
                    bytes[i..i + 4].copy_from_slice(&v.to_be_bytes());
                } else {
                    bytes[i..i + 2].copy_from_slice(&(v as u16).to_le_bytes());
                }
            }
            7 => {
                let p = &splice[rng.random_range(0..splice.len())];
                let at = rng.random_range(0..=len);
                bytes.splice(at..at, p.iter().copied());
            }
            _ => {
                // the same value at a 16-bit big-endian field (item lengths of the A-ASSOCIATE-RQ)
                if len >= 2 {
                    let i = rng.random_range(0..len - 1);
                    let v: u16 = [0, 1, 0xFFFF, 0x8000][rng.random_range(0..4)];
                    bytes[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
}

fn options() -> Arc<ScpOptions> {
    Arc::new(ScpOptions {
        max_pdu: 16_384,
        artim_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        dimse_timeout: Duration::from_millis(300),
        ..ScpOptions::new("SEGNODE")
    })
}

/// Serve one client stream; panics (with the case) on a panic or a hang.
async fn serve_case(bytes: Vec<u8>, case: &str) -> Served {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let (_tx, rx) = watch::channel(false);
    let peer: SocketAddr = "192.0.2.1:104".parse().unwrap();
    let scp = tokio::spawn(segnode_net::serve(
        server,
        peer,
        Arc::new(Sponge),
        options(),
        rx,
    ));
    let _ = client.write_all(&bytes).await;
    // end of stream for the SCP; our read side stays open (answers fill the pipe's buffer)
    let _ = client.shutdown().await;
    let served = match tokio::time::timeout(Duration::from_secs(5), scp).await {
        Err(_) => panic!("SCP hung on {case}"),
        Ok(Err(e)) => panic!("SCP panicked on {case}: {e}"),
        Ok(Ok(served)) => served,
    };
    drop(client);
    served
}

/// Read every PDU of `bytes` with the framing reader.
async fn read_all(bytes: &[u8]) -> usize {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let _ = a.write_all(bytes).await;
    drop(a);
    let mut wire = PduStream::new(b, 16_384);
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), wire.read()).await {
        n += 1;
    }
    n
}

/// Inputs that once misbehaved, and edge cases worth keeping (none found so far: these are seeds).
fn regressions() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x01],
        vec![0x01, 0, 0, 0, 0, 0],
        vec![0x04, 0, 0, 0, 0, 4, 0, 0, 0, 0],
        vec![0x04, 0, 0xFF, 0xFF, 0xFF, 0xF0],
        vec![0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0],
        vec![0x07, 0, 0, 0, 0, 4, 0, 0, 2, 1],
    ]
}

fn seed() -> u64 {
    match std::env::var("SEGNODE_FUZZ_SEED").ok().as_deref() {
        None | Some("") => 0x5E60_DE14,
        Some("random") => rand::random(),
        Some(s) => s.parse().expect("SEGNODE_FUZZ_SEED: a number or `random`"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_association_streams_neither_crash_nor_hang() {
    let cases: usize = std::env::var("SEGNODE_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20_000);
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let (pdus, commands) = corpus();
    let whole: Vec<u8> = pdus.concat();
    for (i, r) in regressions().into_iter().enumerate() {
        serve_case(r.clone(), &format!("regression {i}")).await;
        read_all(&r).await;
    }
    // the unmutated stream is a whole association
    assert!(matches!(
        serve_case(whole.clone(), "corpus").await,
        Served::Ended(
            Ending::Released,
            Tally {
                stored: 1,
                echoes: 1,
                ..
            }
        )
    ));
    let started = Instant::now();
    let (mut established, mut released, mut decoded) = (0usize, 0usize, 0usize);
    for case in 0..cases {
        let mut bytes = whole.clone();
        mutate(&mut rng, &mut bytes, &pdus);
        let label = format!("case {case} of seed {seed} ({} bytes)", bytes.len());
        match serve_case(bytes.clone(), &label).await {
            Served::Ended(ending, _) => {
                established += 1;
                released += usize::from(ending == Ending::Released);
            }
            Served::Rejected(_) | Served::NotEstablished(_) | Served::NotJournaled(_) => {}
        }
        read_all(&bytes).await;
        // the DIMSE decoder on mutated command sets (several per stream: it is cheap)
        for _ in 0..4 {
            let mut cmd = commands[rng.random_range(0..commands.len())].clone();
            mutate(&mut rng, &mut cmd, &commands);
            decoded += usize::from(dimse::decode(&cmd).is_ok());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz: seed {seed}, {cases} association streams + {} command sets in {secs:.1} s \
         ({:.0} streams/s); {established} established, {released} released, {decoded} command sets \
         still decoded; no panic, no hang",
        cases * 4,
        cases as f64 / secs.max(1e-9)
    );
    assert!(
        established > 0,
        "mutations too destructive to reach the DIMSE loop"
    );
}
