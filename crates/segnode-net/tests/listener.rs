//! The listener on a real 127.0.0.1 socket, with this crate's SCU as the peer: connections without an
//! A-ASSOCIATE-RQ take no association slot, the limit still holds for real associations, and DICOM TLS
//! both ways (certificates made with the `openssl` CLI): mutual TLS, a client without a certificate
//! refused, the server name checked, a reload taking effect.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::pdu::AssociationRJServiceUserReason;
use segnode_net::handler::{Announced, Ending, StoreStatus, Tally};
use segnode_net::listener::{run_with, Gate, Transport};
use segnode_net::scu::{self, ClientTls, Peer, ScuOptions};
use segnode_net::tls::{self, ClientTlsFiles, ServerTls, ServerTlsFiles};
use segnode_net::{
    AssociationInfo, AssociationRequest, Event, HandshakeEnd, InstanceSink, ScpHandler, ScpOptions,
    TlsPeer,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    tls: Vec<Option<TlsPeer>>,
}

struct App {
    seen: Arc<Mutex<Seen>>,
}

struct Nothing;

impl InstanceSink for Nothing {
    fn write(&mut self, _f: &[u8]) {}
    async fn finish(self) -> StoreStatus {
        StoreStatus::success()
    }
}

impl ScpHandler for App {
    type Sink = Nothing;
    fn admit(&self, r: &AssociationRequest<'_>) -> Result<(), AssociationRJServiceUserReason> {
        self.seen.lock().unwrap().tls.push(r.tls.cloned());
        Ok(())
    }
    async fn begin(&self, _a: &AssociationInfo) -> Result<(), String> {
        Ok(())
    }
    async fn end(&self, _a: &AssociationInfo, _e: &Ending, _t: &Tally) {}
    fn open(&self, _a: &AssociationInfo, _an: &Announced) -> Result<Nothing, StoreStatus> {
        Ok(Nothing)
    }
    fn event(&self, e: Event) {
        self.seen.lock().unwrap().events.push(e);
    }
}

async fn start(
    options: ScpOptions,
    transport: Transport,
) -> (SocketAddr, Arc<Mutex<Seen>>, watch::Sender<bool>, Gate) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Arc::new(App { seen: seen.clone() });
    let (tx, rx) = watch::channel(false);
    let gate = Gate::new(&options);
    tokio::spawn(run_with(
        app,
        Arc::new(options),
        listener,
        transport,
        gate.clone(),
        rx,
    ));
    (addr, seen, tx, gate)
}

/// Wait until every association permit is back (the SCP drops it just after the release).
async fn all_free(gate: &Gate, n: usize) {
    for _ in 0..200 {
        if gate.free_associations() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("association permits not given back");
}

fn peer(addr: SocketAddr, host: &str) -> Peer {
    Peer {
        ae_title: "SEGNODE".into(),
        host: host.into(),
        port: addr.port(),
        calling_ae: "TEST".into(),
    }
}

fn opts(tls: Option<ClientTls>) -> ScuOptions {
    ScuOptions {
        connect_timeout: Duration::from_secs(5),
        dimse_timeout: Duration::from_secs(5),
        tls,
        ..ScuOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_take_no_association_slot() {
    let options = ScpOptions {
        max_associations: 1,
        max_pending: 8,
        max_pending_per_peer: 4,
        ..ScpOptions::new("SEGNODE")
    };
    let (addr, seen, _stop, gate) = start(options, Transport::Plain).await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..3 {
        all_free(&gate, 1).await;
        let st = tokio::time::timeout(
            Duration::from_secs(2),
            scu::echo(&peer(addr, "127.0.0.1"), &opts(None)),
        )
        .await
        .expect("echo within 2 s")
        .expect("echo with 50 idle connections open and max_associations = 1");
        assert_eq!(st, 0);
    }
    let evicted = seen
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Handshake {
                    end: HandshakeEnd::Evicted,
                    ..
                }
            )
        })
        .count();
    assert!(evicted >= 46, "{evicted} evicted");
    assert!(gate.pending() <= 4, "{} pending", gate.pending());
    // the association limit still holds for associations: hold one, the next is rejected
    all_free(&gate, 1).await;
    let holder = scu::Client::associate(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        &peer(addr, "127.0.0.1"),
        &opts(None),
        &scu::echo_contexts(),
    )
    .await
    .unwrap();
    let busy = scu::echo(&peer(addr, "127.0.0.1"), &opts(None)).await;
    assert!(busy.is_err(), "{busy:?}");
    holder.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_holds_at_most_its_own_limit() {
    let options = ScpOptions {
        max_associations: 8,
        caller_slots: segnode_net::slots::CallerSlots::new([("BUSY".to_string(), 1)]),
        ..ScpOptions::new("SEGNODE")
    };
    let (addr, _seen, _stop, _gate) = start(options, Transport::Plain).await;
    let as_ae = |ae: &str| Peer {
        calling_ae: ae.into(),
        ..peer(addr, "127.0.0.1")
    };
    let holder = scu::Client::associate(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        &as_ae("BUSY"),
        &opts(None),
        &scu::echo_contexts(),
    )
    .await
    .unwrap();
    let second = scu::echo(&as_ae("BUSY"), &opts(None)).await;
    assert!(
        format!("{second:?}").contains("local limit exceeded"),
        "{second:?}"
    );
    assert_eq!(scu::echo(&as_ae("OTHER"), &opts(None)).await.unwrap(), 0);
    holder.release().await.unwrap();
    for _ in 0..200 {
        if scu::echo(&as_ae("BUSY"), &opts(None)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("BUSY's slot not given back after its release");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and two leaves it issued (`server`, `client`), EC P-256, SAN 127.0.0.1 / localhost.
fn pki(dir: &Path) {
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    for leaf in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
                "-subj",
                &format!("/CN={leaf}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{leaf}.pem"),
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_our_scu_and_scp() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d);
    let server = Arc::new(
        ServerTls::load(ServerTlsFiles {
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            client_ca: Some(d.join("ca.pem")),
        })
        .unwrap(),
    );
    let options = ScpOptions {
        handshake_timeout: Duration::from_secs(2),
        ..ScpOptions::new("SEGNODE")
    };
    let (addr, seen, _stop, _gate) = start(options, Transport::Tls(server.clone())).await;
    let client = |cert: bool, name: Option<&str>| {
        let config = tls::client_config(&ClientTlsFiles {
            ca: d.join("ca.pem"),
            cert: cert.then(|| d.join("client.pem")),
            key: cert.then(|| d.join("client.key")),
        })
        .unwrap();
        Some(ClientTls {
            config,
            server_name: name.map(String::from),
        })
    };
    // mutual TLS: echo, and the SCP saw the client's certificate
    let st = scu::echo(&peer(addr, "127.0.0.1"), &opts(client(true, None)))
        .await
        .unwrap();
    assert_eq!(st, 0);
    {
        let seen = seen.lock().unwrap();
        let t = seen.tls[0].as_ref().expect("admitted over TLS");
        assert!(t.protocol.contains("TLSv1_3"), "{t:?}");
        assert_eq!(t.certificate_sha256.as_deref().map(str::len), Some(64));
    }
    // by DNS name too
    assert_eq!(
        scu::echo(&peer(addr, "localhost"), &opts(client(true, None)))
            .await
            .unwrap(),
        0
    );
    // no client certificate: refused in the handshake
    let e = scu::echo(&peer(addr, "127.0.0.1"), &opts(client(false, None))).await;
    assert!(e.is_err(), "{e:?}");
    // a name the server's certificate does not carry: our SCU refuses it
    let e = scu::echo(
        &peer(addr, "127.0.0.1"),
        &opts(client(true, Some("pacs.example.org"))),
    )
    .await;
    assert!(format!("{e:?}").contains("TLS handshake failed"), "{e:?}");
    // plain TCP on the TLS port: no association
    let e = scu::echo(&peer(addr, "127.0.0.1"), &opts(None)).await;
    assert!(e.is_err(), "{e:?}");
    let failed = seen
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Handshake {
                    end: HandshakeEnd::TlsFailed,
                    ..
                }
            )
        })
        .count();
    assert!(failed >= 2, "{failed} TLS handshakes failed");
    // the certificate was made for 2 days: its expiry is read (and would be warned about)
    let left = tls::remaining(server.not_after().expect("notAfter read"));
    assert!(
        left > Duration::from_secs(86_400) && left <= Duration::from_secs(2 * 86_400 + 60),
        "{left:?}"
    );
    // reload: new files in place, still serving; a broken file keeps the previous configuration
    assert!(server.reload().is_ok());
    std::fs::write(d.join("server.pem"), "not a certificate").unwrap();
    assert!(server.reload().is_err());
    assert_eq!(
        scu::echo(&peer(addr, "127.0.0.1"), &opts(client(true, None)))
            .await
            .unwrap(),
        0
    );
}
