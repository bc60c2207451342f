//! The receiver against real peers on 127.0.0.1: DCMTK (storescu, echoscu, dcmdump) and pynetdicom.
//! Every test starts its own segnode process on a free port with a temporary store and index.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::node::*;
use support::*;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// SOP UID → stored path, from `segnode series show`.
fn stored_instances(node: &NodeProc, series_uid: &str) -> HashMap<String, PathBuf> {
    let show = node.series_show(series_uid);
    show["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["sop_uid"].as_str().unwrap().to_string(),
                node.store_dir().join(i["path"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Assert that every sent file is stored with an identical data set.
fn assert_stored_identical(node: &NodeProc, series_uid: &str, sent: &[PathBuf]) {
    let stored = stored_instances(node, series_uid);
    assert_eq!(stored.len(), sent.len(), "indexed instance count");
    for f in sent {
        let sop = sop_uid_of(f);
        let p = stored
            .get(&sop)
            .unwrap_or_else(|| panic!("{sop} not indexed"));
        assert!(
            dataset_bytes(f) == dataset_bytes(p),
            "data set of {sop} differs from what was sent"
        );
    }
}

fn events(node: &NodeProc, series_uid: &str, kind: &str) -> usize {
    node.series_show(series_uid)["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == kind)
        .count()
}

#[test]
fn monitoring_endpoint_health_and_metrics() {
    let data = tempfile::tempdir().unwrap();
    let (files, _) = gen_series(data.path(), 12, 64, 51, &[]);
    let http = free_port();
    let node = NodeProc::start(&[
        ("SEGNODE_HTTP__PORT", &http.to_string()),
        ("SEGNODE_NODE__NAME", "rx-monitored"),
    ]);
    assert_eq!(http_get(http, "/health"), (200, "ok\n".to_string()));
    assert!(storescu(node.port, &files, &[]).status.success());
    assert!(!echoscu(node.port, "INTRUDER", "SEGNODE").status.success());
    node.wait_complete(1, Duration::from_secs(30));
    let (code, text) = http_get(http, "/metrics");
    assert_eq!(code, 200);
    for line in [
        "segnode_instances_stored_total{node=\"rx-monitored\"} 12",
        "segnode_instances_refused_total{node=\"rx-monitored\"} 0",
        "segnode_associations_total{node=\"rx-monitored\"} 1",
        "segnode_associations_rejected_total{node=\"rx-monitored\",reason=\"refused\"} 1",
        "segnode_index_up{node=\"rx-monitored\"} 1",
        "segnode_series{state=\"COMPLETE\"} 1",
        // one association, contiguous: complete at its release, without the settle wait
        "segnode_series_completed_total{basis=\"at_release\",node=\"rx-monitored\"} 1",
        "segnode_series_completed_total{basis=\"settled\",node=\"rx-monitored\"} 0",
        "segnode_completion_delay_seconds_count{basis=\"at_release\",node=\"rx-monitored\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    let bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("segnode_received_bytes_total{node=\"rx-monitored\"} "))
        .and_then(|v| v.parse().ok())
        .expect("bytes counter");
    let sent: u64 = files.iter().map(|f| dataset_bytes(f).len() as u64).sum();
    assert_eq!(bytes, sent, "data set bytes received");
    assert_eq!(http_get(http, "/nothing").0, 404);
}

#[test]
fn echo_and_access_control() {
    let node = NodeProc::start(&[]);
    let ok = echoscu(node.port, "ECHOSCU", "SEGNODE");
    assert!(ok.status.success(), "echoscu: {}", text(&ok));
    let (lines, out) = py_peer(&["echo", &node.port.to_string()]);
    assert_eq!(
        lines.first().map(|l| l["status"].clone()),
        Some(Value::from(0)),
        "{}",
        text(&out)
    );

    let intruder = echoscu(node.port, "INTRUDER", "SEGNODE");
    assert!(!intruder.status.success());
    assert!(
        text(&intruder).contains("Calling AE Title Not Recognized"),
        "{}",
        text(&intruder)
    );
    let wrong_called = echoscu(node.port, "ECHOSCU", "SOMEONE");
    assert!(!wrong_called.status.success());
    assert!(
        text(&wrong_called).contains("Called AE Title Not Recognized"),
        "{}",
        text(&wrong_called)
    );
    let (lines, _) = py_peer(&["echo", &node.port.to_string(), "--aet", "INTRUDER"]);
    assert_eq!(
        lines.first().map(|l| l["rejected"].clone()),
        Some(Value::from(true))
    );

    let lab = NodeProc::start(&[("SEGNODE_DICOM__ACCEPT_ANY", "true")]);
    let any = echoscu(lab.port, "INTRUDER", "SEGNODE");
    assert!(any.status.success(), "accept_any: {}", text(&any));
    assert!(node.log().contains("association rejected"));
}

#[test]
fn ct_series_300_slices_stored_identical_and_complete() {
    let data = tempfile::tempdir().unwrap();
    let (files, series_uid) = gen_series(data.path(), 300, 512, 11, &[]);
    assert_eq!(files.len(), 300);
    let node = NodeProc::start(&[]);
    let out = storescu(node.port, &files, &[]);
    let released_ms = now_ms();
    assert!(out.status.success(), "storescu: {}", text(&out));
    let series = node.wait_complete(1, Duration::from_secs(30));
    let s = &series[0];
    assert_eq!(s["series_uid"], series_uid.as_str());
    assert_eq!(s["instance_count"], 300);
    assert_eq!(s["modality"], "CT");
    let reason = s["completion_reason"].as_str().unwrap();
    assert!(
        reason.contains("association released") && reason.contains("contiguous stack of 300"),
        "{reason}"
    );
    let completed = s["completed_ms"].as_i64().unwrap();
    println!(
        "completion latency after release: {} ms",
        completed - released_ms
    );
    assert!(
        completed - released_ms <= 3000,
        "completed {} ms after the release",
        completed - released_ms
    );
    assert_stored_identical(&node, &series_uid, &files);
    let stored = node.stored_files();
    assert_eq!(stored.len(), 300);
    assert!(meta_transfer_syntax(&stored[0]).contains(EXPLICIT_LE));
    assert_eq!(events(&node, &series_uid, "complete"), 1);
    assert!(node.log().contains("association ended"));
}

#[test]
fn real_jpeg2000_series_stored_and_blank_uids_refused() {
    let node = NodeProc::start(&[]);
    let port = node.port.to_string();
    let good: Vec<PathBuf> = files_under(&shared_data("ct-jpeg2000"));
    let mut args = vec!["send", port.as_str()];
    let names: Vec<String> = good.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(|s| s.as_str()));
    let (lines, out) = py_peer(&args);
    assert_eq!(lines.len(), 20, "{}", text(&out));
    assert!(lines.iter().all(|l| l["status"] == 0), "{lines:#?}");
    let series = node.wait_complete(1, Duration::from_secs(30));
    let uid = series[0]["series_uid"].as_str().unwrap().to_string();
    assert_eq!(series[0]["instance_count"], 20);
    assert_stored_identical(&node, &uid, &good);
    assert!(meta_transfer_syntax(&node.stored_files()[0]).contains("1.2.840.10008.1.2.4.90"));

    // the same slices with blank Study / Series / SOP Instance UIDs: refused, nothing filed
    let raw: Vec<String> = files_under(&shared_data("ct-jpeg2000-raw"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["send", port.as_str()];
    args.extend(raw.iter().map(|s| s.as_str()));
    let (lines, out) = py_peer(&args);
    assert_eq!(lines.len(), 20, "{}", text(&out));
    for l in &lines {
        let st = l["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("no status: {l}"));
        assert_eq!(st, 0xC000, "{l}");
        assert!(l["comment"].as_str().unwrap().contains("UID"), "{l}");
    }
    assert_eq!(
        node.stored_files().len(),
        20,
        "a refused instance was filed"
    );
    assert!(
        files_under(&node.store_dir().join(".incoming")).is_empty(),
        "temporary files left behind"
    );
    assert_eq!(node.series().len(), 1);
    assert!(
        echoscu(node.port, "ECHOSCU", "SEGNODE").status.success(),
        "node stopped serving"
    );
}

/// A caller listed in `completion.settle_callers` gets the settle wait: its series split over two
/// consecutive associations completes once, with every instance.
#[test]
fn series_split_over_two_associations_completes_once() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = gen_series(data.path(), 120, 128, 21, &[]);
    let node = NodeProc::start(&[("SEGNODE_COMPLETION__SETTLE_CALLERS", "OTHER,STORESCU")]);
    let (a, b) = files.split_at(60);
    assert!(storescu(node.port, a, &[]).status.success());
    assert!(storescu(node.port, b, &[]).status.success());
    let series = node.wait_complete(1, Duration::from_secs(30));
    assert_eq!(series[0]["instance_count"], 120);
    assert_eq!(series[0]["revision"], 1);
    assert_eq!(events(&node, &uid, "complete"), 1);
    let reason = series[0]["completion_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("s settled"), "{reason}");
    assert_stored_identical(&node, &uid, &files);
}

/// A series sent in one association completes at its release, without the settle wait, and says so.
#[test]
fn one_association_series_completes_at_release() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = gen_series(data.path(), 40, 64, 22, &[]);
    let node = NodeProc::start(&[("SEGNODE_COMPLETION__SETTLE_S", "30")]);
    assert!(storescu(node.port, &files, &[]).status.success());
    // the settle wait is 30 s: a completion within 20 s can only be the one at release
    let series = node.wait_complete(1, Duration::from_secs(20));
    let reason = series[0]["completion_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("completed at release") && reason.contains("contiguous stack of 40 slices"),
        "{reason}"
    );
    assert_eq!(series[0]["instance_count"], 40);
    assert_eq!(events(&node, &uid, "complete"), 1);
}

/// Files sorted by their position along the z axis (ImagePositionPatient).
fn in_slice_order(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    let z = |p: &PathBuf| {
        dicom_object::open_file(p)
            .expect("open")
            .element(dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT)
            .expect("ImagePositionPatient")
            .to_multi_float64()
            .expect("decimal strings")[2]
    };
    // micrometres: an integer key for the cached sort
    files.sort_by_cached_key(|p| (z(p) * 1000.0).round() as i64);
    files
}

/// A caller not known to split series is learnt the first time it does: the first split series
/// completes at the first release and the rest opens revision 2 (with a `learnt` entry in its
/// history); its next split series gets the settle wait and completes once, with every instance.
#[test]
fn caller_that_splits_series_is_learnt() {
    let data = tempfile::tempdir().unwrap();
    let (first, uid1) = gen_series(&data.path().join("one"), 60, 64, 23, &[]);
    let (second, uid2) = gen_series(&data.path().join("two"), 60, 64, 24, &[]);
    // a sender that splits a series sends each part as a contiguous run of slices
    let (first, second) = (in_slice_order(first), in_slice_order(second));
    let node = NodeProc::start(&[]);
    let (a, b) = first.split_at(30);
    assert!(storescu(node.port, a, &[]).status.success());
    let series = node.wait_complete(1, Duration::from_secs(30));
    assert_eq!(series[0]["instance_count"], 30);
    assert!(storescu(node.port, b, &[]).status.success());
    let series = node.wait_complete(1, Duration::from_secs(30));
    assert_eq!(series[0]["revision"], 2);
    assert_eq!(series[0]["instance_count"], 60);
    assert_eq!(
        events(&node, &uid1, "learnt"),
        1,
        "{:#}",
        node.series_show(&uid1)
    );
    let learnt = node.cli_list(&["series", "splitters", "--json"]);
    assert_eq!(learnt.len(), 1, "{learnt:#?}");
    assert_eq!(learnt[0]["calling_ae"], "STORESCU");
    assert_eq!(learnt[0]["series_uid"], uid1.as_str());

    let (a, b) = second.split_at(30);
    assert!(storescu(node.port, a, &[]).status.success());
    assert!(storescu(node.port, b, &[]).status.success());
    let series = node.wait_complete(2, Duration::from_secs(30));
    let s2 = series
        .iter()
        .find(|s| s["series_uid"] == uid2.as_str())
        .expect("second series");
    assert_eq!(s2["revision"], 1);
    assert_eq!(s2["instance_count"], 60);
    assert_eq!(events(&node, &uid2, "complete"), 1);
    let reason = s2["completion_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("s settled"), "{reason}");
    assert_stored_identical(&node, &uid2, &second);
    // an administrator can make it complete at release again
    assert!(node
        .cli(&["series", "forget-splitter", "STORESCU"])
        .status
        .success());
    assert!(node.cli_list(&["series", "splitters", "--json"]).is_empty());
    assert!(!node
        .cli(&["series", "forget-splitter", "STORESCU"])
        .status
        .success());
}

#[test]
fn eight_concurrent_associations() {
    let data = tempfile::tempdir().unwrap();
    let sets: Vec<(Vec<PathBuf>, String)> = (0..8)
        .map(|i| gen_series(&data.path().join(format!("s{i}")), 40, 256, 100 + i, &[]))
        .collect();
    let node = NodeProc::start(&[]);
    let port = node.port;
    let handles: Vec<_> = sets
        .iter()
        .map(|(files, _)| {
            let files = files.clone();
            std::thread::spawn(move || storescu(port, &files, &[]))
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.status.success(), "storescu: {}", text(&out));
    }
    let series = node.wait_complete(8, Duration::from_secs(60));
    assert!(series.iter().all(|s| s["instance_count"] == 40));
    for (files, uid) in &sets {
        assert_stored_identical(&node, uid, files);
    }
}

fn wait_stored(node: &NodeProc, at_least: usize) {
    let start = Instant::now();
    while node.stored_files().len() < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "fewer than {at_least} stored:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_mid_send_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = gen_series(data.path(), 300, 512, 31, &[]);
    let mut node = NodeProc::start(&[]);
    let log = data.path().join("sender.jsonl");
    let mut sender = pynetdicom_send(node.port, &files, 0.0, &log);
    wait_stored(&node, 60);
    assert_eq!(node.signal("-9"), None, "killed by a signal");
    wait_child(&mut sender, Duration::from_secs(60));
    let acked = acknowledged(&log);
    assert!(
        acked.len() >= 59 && acked.len() < 300,
        "{} acknowledged",
        acked.len()
    );

    node.spawn();
    assert!(
        files_under(&node.store_dir().join(".incoming")).is_empty(),
        "partial files left visible"
    );
    let stored = stored_instances(&node, &uid);
    let by_sop: HashMap<String, &PathBuf> = files.iter().map(|f| (sop_uid_of(f), f)).collect();
    for f in &acked {
        let sop = sop_uid_of(f);
        let p = stored
            .get(&sop)
            .unwrap_or_else(|| panic!("acknowledged {sop} not indexed after restart"));
        assert!(
            dataset_bytes(f) == dataset_bytes(p),
            "acknowledged {sop} differs"
        );
    }
    // nothing in the store is partial: every stored file is whole and equal to what was sent
    let on_disk = node.stored_files();
    assert!(on_disk.len() >= acked.len());
    for p in &on_disk {
        let sop = sop_uid_of(p);
        assert!(
            dataset_bytes(by_sop[&sop]) == dataset_bytes(p),
            "{} is not whole",
            p.display()
        );
    }
    // the rest of the series can still be sent and the series completes
    let rest: Vec<PathBuf> = files
        .iter()
        .filter(|f| !stored.contains_key(&sop_uid_of(f)))
        .cloned()
        .collect();
    assert!(storescu(node.port, &rest, &[]).status.success());
    let series = node.wait_complete(1, Duration::from_secs(90));
    assert_eq!(series[0]["instance_count"], 300);
}

#[test]
fn sigterm_finishes_in_flight_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = gen_series(data.path(), 200, 512, 41, &[]);
    let mut node = NodeProc::start(&[]);
    let log = data.path().join("sender.jsonl");
    let mut sender = pynetdicom_send(node.port, &files, 0.0, &log);
    wait_stored(&node, 30);
    assert_eq!(
        node.signal("-TERM"),
        Some(0),
        "exit status after SIGTERM:\n{}",
        node.log()
    );
    wait_child(&mut sender, Duration::from_secs(60));
    assert!(node.log().contains("segnode stopped"));
    let acked = acknowledged(&log);
    node.spawn();
    let stored = stored_instances(&node, &uid);
    for f in &acked {
        assert!(
            stored.contains_key(&sop_uid_of(f)),
            "acknowledged instance missing after shutdown"
        );
    }
}

/// Read one line from a child's stdout within `limit`.
fn read_line_within(child: &mut std::process::Child, limit: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn association_limit_rejects_with_local_limit_exceeded() {
    let node = NodeProc::start(&[("SEGNODE_DICOM__MAX_ASSOCIATIONS", "1")]);
    let mut holder = Command::new(python())
        .arg(py_script("dicom_peer.py"))
        .args(["hold", &node.port.to_string(), "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = read_line_within(&mut holder, Duration::from_secs(30));
    assert_eq!(line.as_deref().map(str::trim), Some("ready"));
    let busy = echoscu(node.port, "ECHOSCU", "SEGNODE");
    assert!(!busy.status.success());
    assert!(
        text(&busy).contains("Local Limit Exceeded"),
        "{}",
        text(&busy)
    );
    wait_child(&mut holder, Duration::from_secs(30));
    let start = Instant::now();
    while !echoscu(node.port, "ECHOSCU", "SEGNODE").status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "slot not freed after release"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An A-ASSOCIATE-RQ for Verification from STORESCU to SEGNODE, encoded by dicom-ul.
fn associate_rq_bytes() -> Vec<u8> {
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
    let rq = dicom_ul::Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "STORESCU".into(),
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
    dicom_ul::write_pdu(&mut out, &rq).unwrap();
    out
}

/// The PDU types in a byte stream (type byte, reserved, 4-byte big-endian length, body).
fn pdu_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut pos = 0;
    while pos + 6 <= bytes.len() {
        types.push(bytes[pos]);
        let len = u32::from_be_bytes([
            bytes[pos + 2],
            bytes[pos + 3],
            bytes[pos + 4],
            bytes[pos + 5],
        ]) as usize;
        pos += 6 + len;
    }
    types
}

/// Send bytes, then read whatever comes back until the node closes (bounded).
fn poke(port: u16, chunks: &[&[u8]], close_write: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for c in chunks {
        let _ = s.write_all(c);
    }
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[test]
fn garbage_and_truncated_pdus_do_not_stop_the_node() {
    let mut node = NodeProc::start(&[
        ("SEGNODE_DICOM__ARTIM_TIMEOUT_S", "2"),
        ("SEGNODE_DICOM__IDLE_TIMEOUT_S", "3"),
        ("SEGNODE_DICOM__DIMSE_TIMEOUT_S", "2"),
    ]);
    let port = node.port;
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    poke(port, &[&garbage], true);
    // truncated A-ASSOCIATE-RQ: claims 500 bytes, sends 20, then closes / then stalls
    let mut trunc = vec![0x01, 0x00, 0x00, 0x00, 0x01, 0xF4];
    trunc.extend_from_slice(&[0u8; 20]);
    poke(port, &[&trunc], true);
    poke(port, &[&trunc], false);
    // a PDU claiming 4 GB
    poke(
        port,
        &[&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3]],
        true,
    );
    // a real association, then a truncated P-DATA, then silence: aborted at the DIMSE timeout
    let rq = associate_rq_bytes();
    let mut pdata = vec![
        0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x0F, 0xFC, 0x01, 0x03,
    ];
    pdata.extend_from_slice(&[7u8; 64]);
    let reply = poke(port, &[&rq, &pdata], false);
    assert_eq!(
        pdu_types(&reply),
        vec![0x02, 0x07],
        "expected A-ASSOCIATE-AC then A-ABORT"
    );
    // a complete P-DATA whose command set is garbage: aborted at once
    let mut bad_cmd = vec![
        0x04, 0x00, 0x00, 0x00, 0x00, 0x0E, 0x00, 0x00, 0x00, 0x0A, 0x01, 0x03,
    ];
    bad_cmd.extend_from_slice(&[0xAB; 8]);
    let reply = poke(port, &[&rq, &bad_cmd], false);
    assert_eq!(
        pdu_types(&reply),
        vec![0x02, 0x07],
        "garbage command not aborted"
    );
    // and the node still serves
    assert!(node.is_running(), "node died:\n{}", node.log());
    let ok = echoscu(port, "ECHOSCU", "SEGNODE");
    assert!(ok.status.success(), "{}", text(&ok));
}

#[test]
fn late_instance_opens_a_new_revision_and_duplicates_are_idempotent() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = gen_series(&data.path().join("a"), 20, 64, 51, &[]);
    let node = NodeProc::start(&[]);
    assert!(storescu(node.port, &files, &[]).status.success());
    let s = node.wait_complete(1, Duration::from_secs(30));
    let study = node.series_show(&uid)["series"]["study_uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s[0]["revision"], 1);
    // the same instances again: success, nothing changes
    assert!(storescu(node.port, &files, &[]).status.success());
    std::thread::sleep(Duration::from_millis(500));
    let s = node.series();
    assert_eq!(
        (s[0]["revision"].clone(), s[0]["instance_count"].clone()),
        (Value::from(1), Value::from(20))
    );
    assert_eq!(node.stored_files().len(), 20);
    // one more slice of the same series after completion: revision 2
    let (late, _) = gen_series(
        &data.path().join("b"),
        1,
        64,
        51,
        &["--start", "20", "--series-uid", &uid, "--study-uid", &study],
    );
    assert!(storescu(node.port, &late, &[]).status.success());
    // with the ingest journal the success comes before the index row (filed a batch later): wait for
    // the revision the late instance opens to complete, not for the series as it was
    let s = support::wait_for("revision 2 complete", Duration::from_secs(30), || {
        let s = node.series();
        (s.len() == 1 && s[0]["state"] == "COMPLETE" && s[0]["revision"] != 1).then_some(s)
    });
    assert_eq!(s[0]["revision"], 2);
    assert_eq!(s[0]["instance_count"], 21);
    assert_eq!(events(&node, &uid, "revision"), 1);
    assert_eq!(events(&node, &uid, "complete"), 2);
}

#[test]
fn full_disk_reserve_refuses_with_out_of_resources() {
    let data = tempfile::tempdir().unwrap();
    let (files, _) = gen_series(data.path(), 3, 64, 61, &[]);
    let node = NodeProc::start(&[("SEGNODE_STORAGE__MIN_FREE_MB", "999999999")]);
    let port = node.port.to_string();
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["send", port.as_str()];
    args.extend(names.iter().map(|s| s.as_str()));
    let (lines, out) = py_peer(&args);
    assert_eq!(lines.len(), 3, "{}", text(&out));
    assert!(lines.iter().all(|l| l["status"] == 0xA700), "{lines:#?}");
    assert!(node.stored_files().is_empty());
    assert!(node.series().is_empty());
}

#[test]
fn bad_configuration_names_the_key() {
    for (key, value, name) in [
        ("SEGNODE_DICOM__PORT", "not-a-port", "dicom.port"),
        ("SEGNODE_DICOM__MAX_PDU", "10", "dicom.max_pdu"),
        (
            "SEGNODE_DICOM__AE_TITLE",
            "A_TITLE_FAR_TOO_LONG",
            "dicom.ae_title",
        ),
        ("SEGNODE_DATABASE__URL", "mysql://x", "database.url"),
        ("SEGNODE_DICOM__BIND", "somewhere", "dicom.bind"),
    ] {
        let out = run_with_timeout(
            Command::new(segnode_bin())
                .args([
                    "--config",
                    &repo_root()
                        .join("config/segnode.toml")
                        .display()
                        .to_string(),
                    "serve",
                ])
                .env(key, value),
            Duration::from_secs(20),
        );
        assert!(!out.status.success(), "{key}={value} was accepted");
        assert!(
            text(&out).contains(name),
            "{key}={value}: error does not name {name}: {}",
            text(&out)
        );
    }
}
