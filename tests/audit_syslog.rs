//! Issue 14, audit trail over syslog: a collector started by the test (a UDP socket) receives the DICOM
//! audit messages of a send → segment → deliver cycle and of a refused caller; each parses as XML
//! (Python's xml.etree, independent of the Rust writer) with the right EventIDs, actions and outcomes.

mod support;

use std::time::{Duration, Instant};
use support::node::{echoscu, phantom_with, storescu, NodeProc};
use support::storescp::StoreScp;
use support::*;

#[test]
fn a_syslog_collector_receives_dicom_audit_messages() {
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = collector.local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let src = data.path().join("chest");
    phantom_with(&src, &src.with_extension("truth"), 30, 96, &["--seed", "8"]);
    let pacs = StoreScp::start("PACS");
    let node = NodeProc::start_with(
        &[("SEGNODE_AUDIT__SYSLOG", &format!("udp://127.0.0.1:{port}"))],
        &format!(
            "[[destinations]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {}\n\
             [[rules]]\nname = \"chest\"\npipelines = [\"lung\"]\ndestinations = [\"pacs\"]\n",
            pacs.port
        ),
    );
    assert!(!echoscu(node.port, "NOBODY", "SEGNODE").status.success());
    assert!(storescu(node.port, &files_under(&src), &[])
        .status
        .success());
    wait_for("the SEG delivered", Duration::from_secs(120), || {
        node.outbox().into_iter().find(|d| d["state"] == "SENT")
    });
    // collect what arrived (bounded)
    let mut messages: Vec<String> = Vec::new();
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(n) = collector.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    assert!(messages.len() >= 4, "{messages:#?}");
    for m in &messages {
        assert!(
            m.contains(" IHE+RFC-3881 - "),
            "not an RFC 5424 audit frame: {m}"
        );
    }
    let dump = data.path().join("messages.json");
    std::fs::write(&dump, serde_json::to_string(&messages).unwrap()).unwrap();
    let check = "import json, sys, xml.etree.ElementTree as ET\n\
        out = []\n\
        for m in json.load(open(sys.argv[1])):\n\
        \x20   xml = m.split('\\ufeff', 1)[1]\n\
        \x20   root = ET.fromstring(xml.encode())\n\
        \x20   ev = root.find('EventIdentification')\n\
        \x20   study = any(p.find('ParticipantObjectIDTypeCode').get('csd-code') == '110180' for p in root.findall('ParticipantObjectIdentification'))\n\
        \x20   out.append([ev.find('EventID').get('csd-code'), ev.get('EventActionCode'), ev.get('EventOutcomeIndicator'), root.find('AuditSourceIdentification').get('AuditSourceID'), str(study)])\n\
        print(json.dumps(out))\n";
    let o = std::process::Command::new(python())
        .arg("-c")
        .arg(check)
        .arg(&dump)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let parsed: Vec<Vec<String>> = serde_json::from_slice(o.stdout.trim_ascii()).unwrap();
    let has = |id: &str, action: &str, outcome: &str| {
        parsed
            .iter()
            .any(|p| p[0] == id && p[1] == action && p[2] == outcome)
    };
    assert!(has("110100", "E", "0"), "application start: {parsed:?}");
    assert!(has("110114", "E", "4"), "the refused caller: {parsed:?}");
    assert!(
        has("110114", "E", "0"),
        "the accepted association: {parsed:?}"
    );
    assert!(has("110104", "C", "0"), "instances received: {parsed:?}");
    assert!(
        parsed
            .iter()
            .any(|p| p[0] == "110104" && p[1] == "C" && p[4] == "True"),
        "the received instances name their study: {parsed:?}"
    );
    assert!(has("110104", "R", "0"), "the result sent: {parsed:?}");
}
