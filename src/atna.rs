//! The audit trail as DICOM audit messages (PS3.15 A.5, the IHE ATNA format) sent to a site's syslog
//! collector: one RFC 5424 message over UDP (RFC 5426) per audit event, MSGID `IHE+RFC-3881`, facility
//! authpriv (10), severity notice (5) — or warning (4) for a failure.
//!
//! Each event of [`crate::audit`] maps to an EventID (DCM codes of CID 400) with its action and
//! outcome; the AEs and addresses become active participants, the SOP instances sent become
//! participant objects:
//!
//! | audit event | EventID | EventTypeCode | action | outcome |
//! |---|---|---|---|---|
//! | `config_loaded` | 110100 Application Activity | 110120 Application Start | E | 0 |
//! | `association_accepted` / `_rejected` | 110114 User Authentication | 110122 Login | E | 0 / 4 |
//! | `association_ended` | 110104 DICOM Instances Transferred (instances stored), else 110114 | — / 110123 Logout | C / E | 0, 4 when some were refused |
//! | `handshake_failed` | 110113 Security Alert | 110126 Node Authentication | E | 4 |
//! | `results_sent` | 110104 DICOM Instances Transferred | — | R | 0, 4 when one failed |
//! | `admin`, `tls_reloaded` | 110113 Security Alert | 110132 Use of a restricted function / 110129 Security Configuration | E | 0 / 4 |
//!
//! Sending never blocks or stops the node: UDP, one datagram, errors ignored (the file trail is the
//! record of truth).

use serde_json::Value;

/// A coded value as the audit schema writes it.
struct Code(&'static str, &'static str);

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn code_xml(tag: &str, c: &Code) -> String {
    format!(
        "<{tag} csd-code=\"{}\" codeSystemName=\"DCM\" originalText=\"{}\"/>",
        c.0, c.1
    )
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The DICOM audit message (XML) of an audit event; `None` for an event that has no mapping.
pub fn message(
    event: &str,
    fields: &Value,
    node: &str,
    ae_title: &str,
    at: &str,
) -> Option<String> {
    let num = |k: &str| fields.get(k).and_then(Value::as_i64).unwrap_or(0);
    let (id, ty, action, failed) = match event {
        "config_loaded" => (
            Code("110100", "Application Activity"),
            Some(Code("110120", "Application Start")),
            "E",
            false,
        ),
        "association_accepted" => (
            Code("110114", "User Authentication"),
            Some(Code("110122", "Login")),
            "E",
            false,
        ),
        "association_rejected" => (
            Code("110114", "User Authentication"),
            Some(Code("110122", "Login")),
            "E",
            true,
        ),
        "association_ended" if num("instances_stored") > 0 => (
            Code("110104", "DICOM Instances Transferred"),
            None,
            "C",
            num("instances_refused") > 0,
        ),
        "association_ended" => (
            Code("110114", "User Authentication"),
            Some(Code("110123", "Logout")),
            "E",
            num("instances_refused") > 0,
        ),
        "handshake_failed" => (
            Code("110113", "Security Alert"),
            Some(Code("110126", "Node Authentication")),
            "E",
            true,
        ),
        "results_sent" => {
            let instances = fields.get("instances").and_then(Value::as_array);
            let bad = fields.get("error").is_some_and(|e| !e.is_null())
                || instances.is_some_and(|l| {
                    l.iter().any(|i| {
                        i.get("status")
                            .and_then(Value::as_str)
                            .is_none_or(|s| !(s == "0000" || s.starts_with('B')))
                    })
                });
            (
                Code("110104", "DICOM Instances Transferred"),
                None,
                "R",
                bad,
            )
        }
        "admin" => (
            Code("110113", "Security Alert"),
            Some(Code("110132", "Use of a restricted function")),
            "E",
            false,
        ),
        "tls_reloaded" => (
            Code("110113", "Security Alert"),
            Some(Code("110129", "Security Configuration")),
            "E",
            fields.get("ok") == Some(&Value::Bool(false)),
        ),
        _ => return None,
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
    x.push_str(&format!(
        "<EventIdentification EventActionCode=\"{action}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
        esc(at),
        if failed { 4 } else { 0 }
    ));
    x.push_str(&code_xml("EventID", &id));
    if let Some(t) = &ty {
        x.push_str(&code_xml("EventTypeCode", t));
    }
    x.push_str("</EventIdentification>");
    // the peer (the requestor of an association, the destination we send to) and ourselves
    let (peer_ae, peer_addr, we_request) = match event {
        "results_sent" => (text(fields, "ae_title"), text(fields, "address"), true),
        "admin" => (text(fields, "user"), String::new(), false),
        _ => (text(fields, "calling_ae"), text(fields, "peer"), false),
    };
    let host = |a: &str| {
        a.rsplit_once(':')
            .map_or(a.to_string(), |(h, _)| h.to_string())
    };
    if !peer_ae.is_empty() || !peer_addr.is_empty() {
        x.push_str(&format!(
            "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"{}\"{}>{}</ActiveParticipant>",
            esc(if peer_ae.is_empty() {
                &peer_addr
            } else {
                &peer_ae
            }),
            !we_request,
            if peer_addr.is_empty() {
                String::new()
            } else {
                format!(
                    " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"",
                    esc(&host(&peer_addr))
                )
            },
            if we_request {
                code_xml("RoleIDCode", &Code("110152", "Destination Role ID"))
            } else {
                code_xml("RoleIDCode", &Code("110153", "Source Role ID"))
            }
        ));
    }
    x.push_str(&format!(
        "<ActiveParticipant UserID=\"{}\" AlternativeUserID=\"{}\" UserIsRequestor=\"{we_request}\">{}</ActiveParticipant>",
        esc(ae_title),
        std::process::id(),
        if we_request {
            code_xml("RoleIDCode", &Code("110153", "Source Role ID"))
        } else {
            code_xml("RoleIDCode", &Code("110152", "Destination Role ID"))
        }
    ));
    x.push_str(&format!(
        "<AuditSourceIdentification AuditSourceID=\"{}\"/>",
        esc(node)
    ));
    if let Some(list) = fields.get("instances").and_then(Value::as_array) {
        for i in list {
            let uid = text(i, "sop_instance_uid");
            if !uid.is_empty() {
                x.push_str(&format!(
                    "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\"><ParticipantObjectIDTypeCode csd-code=\"110181\" codeSystemName=\"DCM\" originalText=\"SOP Instance UID\"/></ParticipantObjectIdentification>",
                    esc(&uid)
                ));
            }
        }
    }
    // the studies an association filed into (association_ended)
    if let Some(list) = fields.get("series").and_then(Value::as_array) {
        let mut studies: Vec<String> = list.iter().map(|s| text(s, "study_uid")).collect();
        studies.sort();
        studies.dedup();
        for study in studies.iter().filter(|s| !s.is_empty()) {
            x.push_str(&format!(
                "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\"><ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" originalText=\"Study Instance UID\"/></ParticipantObjectIdentification>",
                esc(study)
            ));
        }
    }
    x.push_str("</AuditMessage>");
    Some(x)
}

/// The RFC 5424 syslog frame of a message (BOM before the UTF-8 XML, as RFC 5424 asks).
pub fn syslog_frame(xml: &str, failed_hint: bool, at: &str, host: &str) -> String {
    let pri = 10 * 8 + if failed_hint { 4 } else { 5 };
    format!(
        "<{pri}>1 {at} {} segnode {} IHE+RFC-3881 - \u{feff}{xml}",
        if host.is_empty() { "-" } else { host },
        std::process::id()
    )
}

/// Where the messages go: a UDP socket towards `host:port`.
pub struct SyslogSink {
    socket: std::net::UdpSocket,
    hostname: String,
}

impl SyslogSink {
    /// `target` is `udp://host:port` (or `host:port`).
    pub fn connect(target: &str) -> std::io::Result<SyslogSink> {
        let addr = target.strip_prefix("udp://").unwrap_or(target);
        let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
        socket.connect(addr)?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(SyslogSink { socket, hostname })
    }

    pub fn send(&self, event: &str, fields: &Value, node: &str, ae_title: &str, at: &str) {
        if let Some(xml) = message(event, fields, node, ae_title, at) {
            let failed = xml.contains("EventOutcomeIndicator=\"4\"");
            let _ = self
                .socket
                .send(syslog_frame(&xml, failed, at, &self.hostname).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_map_to_audit_messages() {
        let at = "2026-12-01T05:00:00.000Z";
        let m = message(
            "association_rejected",
            &json!({ "peer": "127.0.0.1:5000", "calling_ae": "EVIL<>", "called_ae": "SEGNODE" }),
            "node-1",
            "SEGNODE",
            at,
        )
        .unwrap();
        assert!(m.contains("csd-code=\"110114\"") && m.contains("EventOutcomeIndicator=\"4\""));
        assert!(
            m.contains("UserID=\"EVIL&lt;&gt;\"")
                && m.contains("NetworkAccessPointID=\"127.0.0.1\"")
        );
        let sent = message(
            "results_sent",
            &json!({ "destination": "pacs", "ae_title": "ORTHANC", "address": "10.0.0.2:4242",
                     "instances": [{ "sop_instance_uid": "1.2.3", "status": "0000" }] }),
            "node-1",
            "SEGNODE",
            at,
        )
        .unwrap();
        assert!(sent.contains("csd-code=\"110104\"") && sent.contains("EventActionCode=\"R\""));
        assert!(
            sent.contains("ParticipantObjectID=\"1.2.3\"")
                && sent.contains("EventOutcomeIndicator=\"0\"")
        );
        assert!(message("something_else", &json!({}), "n", "A", at).is_none());
        let frame = syslog_frame(&sent, false, at, "host");
        assert!(frame.starts_with("<85>1 2026-12-01T05:00:00.000Z host segnode "));
        assert!(frame.contains(" IHE+RFC-3881 - \u{feff}<?xml"));
    }
}
