//! Security hardening against real peers on 127.0.0.1 (issue 14): no lock-out by idle connections or
//! unknown callers, DICOM TLS in both directions with DCMTK (`echoscu` / `storescu` / `storescp` with
//! `+tls`, certificates made by the test with the `openssl` CLI), and the audit trail.

mod support;

use serde_json::Value;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::node::*;
use support::*;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An A-ASSOCIATE-RQ for Verification from `calling` to SEGNODE.
fn associate_rq(calling: &str) -> Vec<u8> {
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
    let rq = dicom_ul::Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.into(),
        called_ae_title: "SEGNODE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut out = Vec::new();
    dicom_ul::write_pdu(&mut out, &rq).expect("encode A-ASSOCIATE-RQ");
    out
}

/// Time one `echoscu` (plain) from ECHOSCU.
fn timed_echo(port: u16) -> (bool, Duration, String) {
    let t = Instant::now();
    let out = echoscu(port, "ECHOSCU", "SEGNODE");
    (out.status.success(), t.elapsed(), text(&out))
}

/// Lines of the node's audit trail.
fn audit_lines(node: &NodeProc) -> Vec<Value> {
    let path = node.dir.path().join("data/audit.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line `{l}`: {e}")))
        .collect()
}

fn events<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == kind).collect()
}

#[test]
fn idle_connections_do_not_lock_out_senders() {
    let node = NodeProc::start(&[]);
    let port = node.port;
    // 200 connections that never send an A-ASSOCIATE-RQ (more than max_associations = 32)
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for _ in 0..3 {
        let (ok, took, out) = timed_echo(port);
        assert!(ok, "C-ECHO refused with 200 idle connections open:\n{out}");
        eprintln!(
            "C-ECHO with 200 idle connections open: {} ms",
            took.as_millis()
        );
        assert!(took < Duration::from_secs(1), "C-ECHO took {took:?}");
    }
    // the attacker reconnects: a flood keeps 200 fresh idle connections open while we echo
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: VecDeque<TcpStream> = VecDeque::new();
            let mut opened = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                    held.push_back(s);
                    opened += 1;
                }
                if held.len() > 200 {
                    held.pop_front();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let (ok, took, out) = timed_echo(port);
        assert!(ok, "C-ECHO refused during a reconnecting flood:\n{out}");
        eprintln!(
            "C-ECHO during a reconnecting flood: {} ms",
            took.as_millis()
        );
        assert!(took < Duration::from_secs(1), "C-ECHO took {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().expect("flood thread");
    eprintln!("flood opened {opened} connections");
    // the node closed the evicted ones: most of the first 200 read end-of-stream
    let mut closed = 0;
    for s in idle.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 16];
        if matches!(s.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 150,
        "only {closed} of 200 idle connections were closed"
    );
    drop(idle);
    assert!(node.log().contains("segnode listening"));
}

#[test]
fn unknown_callers_in_a_burst_cost_nothing_lasting() {
    let node = NodeProc::start(&[]);
    let port = node.port;
    let rq = Arc::new(associate_rq("INTRUDER"));
    // 12 concurrent callers, 25 attempts each: at most 12 handshakes pending from this address at once,
    // below `dicom.max_pending_per_peer` (16), past which the oldest pending connection is evicted
    // without an answer (the eviction has its own test above)
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let rq = rq.clone();
            std::thread::spawn(move || {
                let mut rejected = 0;
                for _ in 0..25 {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let _ = s.write_all(&rq);
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).is_ok() && b[0] == 0x03 {
                        rejected += 1;
                    }
                }
                rejected
            })
        })
        .collect();
    let rejected: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(rejected, 300, "each unknown caller gets A-ASSOCIATE-RJ");
    let (ok, took, out) = timed_echo(port);
    assert!(ok, "{out}");
    assert!(took < Duration::from_secs(1), "C-ECHO took {took:?}");
    let lines = audit_lines(&node);
    let refused = events(&lines, "association_rejected");
    assert_eq!(refused.len(), 300);
    assert_eq!(refused[0]["calling_ae"], "INTRUDER");
    assert!(refused[0]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

/// Test PKI made with the openssl CLI: a CA, and certificates it issued for segnode and for the DCMTK
/// tools (both usable as server and client, SAN 127.0.0.1 / localhost), and a certificate from another
/// CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = run_with_timeout(
                Command::new("openssl").args(args).current_dir(d),
                Duration::from_secs(60),
            );
            assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
        };
        std::fs::write(
            d.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        for ca in ["ca", "rogue-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "30",
                "-subj",
                &format!("/CN=segnode test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        for (leaf, ca) in [("segnode", "ca"), ("dcmtk", "ca"), ("rogue", "rogue-ca")] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
                "-subj",
                &format!("/CN={leaf}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{leaf}.pem"),
                "-days",
                "30",
                "-extfile",
                "leaf.ext",
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// DCMTK's TLS arguments as `who` (`dcmtk`, `rogue`), trusting our CA.
    fn dcmtk_args(&self, who: &str) -> Vec<String> {
        vec![
            "+tls".into(),
            self.path(&format!("{who}.key")),
            self.path(&format!("{who}.pem")),
            "+cf".into(),
            self.path("ca.pem"),
        ]
    }
}

/// A node with a plain and a mutual-TLS listener; callers ECHOSCU / STORESCU (plain or TLS) and
/// SECURE (TLS only).
fn tls_node(pki: &Pki) -> (NodeProc, u16) {
    let tls_port = free_port();
    let mut node = NodeProc::prepare(&[], "");
    let toml = format!(
        "[dicom]\nhandshake_timeout_s = 3\n\
         [[dicom.callers]]\nae_title = \"ECHOSCU\"\nhost = \"127.0.0.1\"\n\
         [[dicom.callers]]\nae_title = \"STORESCU\"\nhost = \"127.0.0.1\"\n\
         [[dicom.callers]]\nae_title = \"SECURE\"\nrequire_tls = true\n\
         [dicom.tls]\nport = {tls_port}\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        pki.path("segnode.pem"),
        pki.path("segnode.key"),
        pki.path("ca.pem"),
    );
    std::fs::write(&node.config, toml).unwrap();
    node.spawn();
    (node, tls_port)
}

fn dcmtk(tool: &str, tls: &[String], calling: &str, port: u16, files: &[PathBuf]) -> Output {
    run_with_timeout(
        Command::new(tool)
            .args(tls)
            .args([
                "-aet",
                calling,
                "-aec",
                "SEGNODE",
                "127.0.0.1",
                &port.to_string(),
            ])
            .args(files),
        Duration::from_secs(300),
    )
}

fn mean_ms(mut f: impl FnMut() -> bool, n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        assert!(f());
    }
    t.elapsed().as_secs_f64() * 1e3 / n as f64
}

#[test]
fn tls_inbound_mutual_echo_store_and_refusals() {
    let pki = Pki::new();
    let (node, tls_port) = tls_node(&pki);
    let good = pki.dcmtk_args("dcmtk");

    let ok = dcmtk("echoscu", &good, "ECHOSCU", tls_port, &[]);
    assert!(ok.status.success(), "echo over mutual TLS: {}", text(&ok));

    // a 120-slice series over mutual TLS, stored whole
    let series = node.dir.path().join("series");
    let (files, uid) = gen_series(&series, 120, 64, 14, &[]);
    let t = Instant::now();
    let sent = dcmtk("storescu", &good, "STORESCU", tls_port, &files);
    assert!(sent.status.success(), "storescu +tls: {}", text(&sent));
    eprintln!(
        "120 slices over mutual TLS in {} ms",
        t.elapsed().as_millis()
    );
    let complete = node.wait_complete(1, Duration::from_secs(60));
    assert_eq!(complete[0]["series_uid"], uid.as_str());
    assert_eq!(node.stored_files().len(), 120);

    // plain TCP on the TLS port, TLS without a client certificate, a certificate of another CA: refused
    let plain_on_tls = echoscu(tls_port, "ECHOSCU", "SEGNODE");
    assert!(!plain_on_tls.status.success());
    let anonymous: Vec<String> = vec!["+tla".into(), "+cf".into(), pki.path("ca.pem")];
    let anon = dcmtk("echoscu", &anonymous, "ECHOSCU", tls_port, &[]);
    assert!(
        !anon.status.success(),
        "TLS without a client certificate accepted"
    );
    let rogue = dcmtk(
        "echoscu",
        &pki.dcmtk_args("rogue"),
        "ECHOSCU",
        tls_port,
        &[],
    );
    assert!(
        !rogue.status.success(),
        "a certificate of another CA accepted"
    );

    // the plain listener still serves; a require_tls caller only over TLS
    assert!(echoscu(node.port, "ECHOSCU", "SEGNODE").status.success());
    let secure_plain = echoscu(node.port, "SECURE", "SEGNODE");
    assert!(
        !secure_plain.status.success(),
        "require_tls caller admitted over plain TCP"
    );
    let secure_tls = dcmtk("echoscu", &good, "SECURE", tls_port, &[]);
    assert!(secure_tls.status.success(), "{}", text(&secure_tls));

    // what a TLS handshake adds to an association (echoscu start-up included in both)
    let plain_ms = mean_ms(
        || echoscu(node.port, "ECHOSCU", "SEGNODE").status.success(),
        5,
    );
    let tls_ms = mean_ms(
        || {
            dcmtk("echoscu", &good, "ECHOSCU", tls_port, &[])
                .status
                .success()
        },
        5,
    );
    eprintln!("echoscu association: plain {plain_ms:.1} ms, mutual TLS {tls_ms:.1} ms");

    // the certificates were made for 30 days: a warning at start
    assert!(
        node.log()
            .contains("TLS certificate expires within 30 days"),
        "{}",
        node.log()
    );
    // SIGHUP reloads the certificate (here: another one from the same CA); TLS goes on
    for ext in ["pem", "key"] {
        std::fs::copy(
            pki.path(&format!("dcmtk.{ext}")),
            pki.path(&format!("segnode.{ext}")),
        )
        .unwrap();
    }
    let pid = node.pid().expect("running").to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("the reload", Duration::from_secs(10), || {
        node.log()
            .contains("TLS certificates reloaded")
            .then_some(())
    });
    let after = dcmtk("echoscu", &good, "ECHOSCU", tls_port, &[]);
    assert!(
        after.status.success(),
        "echo after reload: {}",
        text(&after)
    );

    // the audit trail
    let lines = audit_lines(&node);
    assert_eq!(events(&lines, "tls_reloaded")[0]["ok"], true);
    assert_eq!(events(&lines, "config_loaded").len(), 1);
    assert_eq!(events(&lines, "config_loaded")[0]["tls_port"], tls_port);
    let accepted = events(&lines, "association_accepted");
    let over_tls: Vec<_> = accepted.iter().filter(|l| !l["tls"].is_null()).collect();
    assert!(over_tls.len() >= 3, "{accepted:?}");
    assert_eq!(
        over_tls[0]["tls"]["certificate_sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    assert!(events(&lines, "association_rejected")
        .iter()
        .any(|l| l["calling_ae"] == "SECURE" && l["tls"].is_null()));
    assert!(events(&lines, "handshake_failed").len() >= 2);
    let ended: i64 = events(&lines, "association_ended")
        .iter()
        .map(|l| l["instances_stored"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(ended, 120);
}

/// DCMTK storescp over TLS (requiring our client certificate), receiving into `out`.
fn storescp_tls(pki: &Pki, port: u16, out: &Path) -> std::process::Child {
    std::fs::create_dir_all(out).unwrap();
    let child = Command::new("storescp")
        .args(["+tls", &pki.path("dcmtk.key"), &pki.path("dcmtk.pem")])
        .args(["+cf", &pki.path("ca.pem")])
        .args(["-aet", "ORTHANC", "-od", &out.display().to_string()])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start storescp");
    wait_for("storescp listening", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    child
}

#[test]
fn tls_outbound_echo_and_send_to_storescp() {
    let pki = Pki::new();
    let port = free_port();
    let received = pki.dir.path().join("received");
    let mut scp = storescp_tls(&pki, port, &received);
    let node = NodeProc::prepare(&[], "");
    let dest = |name: &str, extra: &str| {
        format!(
            "[[destinations]]\nname = \"{name}\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             tls = true\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            pki.path("ca.pem"),
            pki.path("segnode.pem"),
            pki.path("segnode.key"),
        )
    };
    let toml = format!(
        "{}{}{}[[destinations]]\nname = \"plain\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {port}\n",
        dest("pacs", ""),
        dest("wrong-name", "server_name = \"pacs.example.org\"\n"),
        format!(
            "[[destinations]]\nname = \"no-client-cert\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\n\
             port = {port}\ntls = true\nca = \"{}\"\n",
            pki.path("ca.pem")
        ),
    );
    std::fs::write(&node.config, toml).unwrap();

    let echo = node.cli(&["echo", "--destination", "pacs"]);
    assert!(
        echo.status.success(),
        "echo --destination pacs: {}",
        text(&echo)
    );
    assert!(text(&echo).contains("(TLS)"), "{}", text(&echo));
    // the server's certificate does not name pacs.example.org; plain TCP to a TLS port; no client cert
    for bad in ["wrong-name", "plain", "no-client-cert"] {
        let out = node.cli(&["echo", "--destination", bad]);
        assert!(!out.status.success(), "echo --destination {bad} succeeded");
    }
    let missing = node.cli(&["echo", "--destination", "nowhere"]);
    assert!(text(&missing).contains("no destination `nowhere`"));

    let series = node.dir.path().join("series");
    let (files, _) = gen_series(&series, 5, 32, 3, &[]);
    let sent = node.cli(&[
        "send",
        "--destination",
        "pacs",
        &series.display().to_string(),
    ]);
    assert!(
        sent.status.success(),
        "send --destination pacs: {}",
        text(&sent)
    );
    assert_eq!(files_under(&received).len(), files.len());
    let _ = scp.kill();
    let _ = scp.wait();
}

#[test]
fn tls_configuration_errors_name_their_key() {
    let node = NodeProc::prepare(&[], "");
    std::fs::write(
        &node.config,
        "[dicom.tls]\nport = 2762\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    )
    .unwrap();
    let out = node.cli(&["status"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("dicom.tls"), "{}", text(&out));
    std::fs::write(
        &node.config,
        "[[destinations]]\nname = \"pacs\"\nae_title = \"P\"\nhost = \"127.0.0.1\"\nport = 104\ntls = true\n",
    )
    .unwrap();
    let out = node.cli(&["status"]);
    assert!(text(&out).contains("destinations.tls"), "{}", text(&out));
}

#[test]
fn results_delivered_over_tls_to_storescp_and_audited() {
    let pki = Pki::new();
    let port = free_port();
    let received = pki.dir.path().join("received");
    let mut scp = storescp_tls(&pki, port, &received);
    let toml = format!(
        "[[destinations]]\nname = \"pacs\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         tls = true\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [[rules]]\nname = \"chest-ct\"\npipelines = [\"lung\"]\ndestinations = [\"pacs\"]\n\
         [rules.match]\nmodality = [\"CT\"]\nmin_slices = 15\n",
        pki.path("ca.pem"),
        pki.path("segnode.pem"),
        pki.path("segnode.key"),
    );
    let node = NodeProc::start_with(&[], &toml);
    let series = node.dir.path().join("chest");
    phantom(&series, &node.dir.path().join("truth.raw"), 40, 128);
    let files = files_under(&series);
    let out = storescu(node.port, &files, &[]);
    assert!(out.status.success(), "storescu: {}", text(&out));
    let seg = wait_for("the SEG at storescp +tls", Duration::from_secs(180), || {
        files_under(&received).into_iter().next()
    });
    let _ = scp.kill();
    let _ = scp.wait();
    assert!(meta_transfer_syntax(&seg).contains("1.2.840.10008.1.2"));
    let lines = audit_lines(&node);
    let sent = events(&lines, "results_sent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["destination"], "pacs");
    assert_eq!(sent[0]["tls"], true);
    assert_eq!(sent[0]["instances"][0]["status"], "0000");
    let ended = events(&lines, "association_ended");
    assert_eq!(ended[0]["instances_stored"], 40);
}

#[test]
fn tls_outbound_to_orthanc() {
    // Debian's Orthanc (1.10) offers DICOM TLS (DicomTlsEnabled, since 1.9): segnode's SCU with a client
    // certificate from the test CA, Orthanc verifying it against that CA
    let pki = Pki::new();
    let orthanc = support::orthanc::OrthancProc::start_with(|cfg, _| {
        cfg["DicomTlsEnabled"] = true.into();
        cfg["DicomTlsCertificate"] = pki.path("dcmtk.pem").into();
        cfg["DicomTlsPrivateKey"] = pki.path("dcmtk.key").into();
        cfg["DicomTlsTrustedCertificates"] = pki.path("ca.pem").into();
        cfg["DicomTlsRemoteCertificateRequired"] = true.into();
    });
    let node = NodeProc::prepare(&[], "");
    let dest = format!(
        "[[destinations]]\nname = \"pacs\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {}\n\
         tls = true\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [[destinations]]\nname = \"plain\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {}\n",
        orthanc.dicom_port,
        pki.path("ca.pem"),
        pki.path("segnode.pem"),
        pki.path("segnode.key"),
        orthanc.dicom_port,
    );
    let base = std::fs::read_to_string(repo_root().join("config/segnode.toml")).unwrap();
    std::fs::write(&node.config, test_config(&base, &dest)).unwrap();
    let echo = node.cli(&["echo", "--destination", "pacs"]);
    assert!(
        echo.status.success(),
        "echo over TLS to Orthanc: {}\n{}",
        text(&echo),
        orthanc.log()
    );
    let plain = node.cli(&["echo", "--destination", "plain"]);
    assert!(
        !plain.status.success(),
        "Orthanc's TLS port answered plain TCP"
    );
    let data = tempfile::tempdir().unwrap();
    let series = data.path().join("ct");
    phantom(&series, &series.with_extension("truth"), 12, 64);
    let sent = node.cli(&["send", "--destination", "pacs", series.to_str().unwrap()]);
    assert!(sent.status.success(), "send over TLS: {}", text(&sent));
    let stats = orthanc.get("/statistics");
    assert_eq!(stats["CountInstances"], 12, "{stats}");
}
