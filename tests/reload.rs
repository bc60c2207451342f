//! Issue 15, part 4: reload without restart. SIGHUP with a new rule routes the next series by it; a broken
//! file leaves the running rules in force with an error naming the key; `segnode reload` (through the
//! console, with the admin token) does the same as SIGHUP; an association in progress is not interrupted.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::node::{
    acknowledged, phantom_with, pynetdicom_send, storescu, test_config, wait_child, NodeProc,
};
use support::*;

fn chest(dir: &Path, seed: &str) -> (Vec<PathBuf>, String) {
    phantom_with(dir, &dir.with_extension("truth"), 12, 64, &["--seed", seed]);
    let files = files_under(dir);
    let obj = dicom_object::open_file(&files[0]).expect("file");
    let e = obj
        .element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
        .expect("SeriesInstanceUID");
    let uid = e
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .trim()
        .to_string();
    (files, uid)
}

fn rule(name: &str) -> String {
    format!("[[rules]]\nname = \"{name}\"\npipelines = [\"noop\"]\n[rules.match]\nmodality = [\"CT\"]\n")
}

fn write_config(node: &NodeProc, extra: &str) {
    let base = std::fs::read_to_string(repo_root().join("config/segnode.toml")).unwrap();
    std::fs::write(&node.config, test_config(&base, extra)).unwrap();
}

fn hup(node: &NodeProc) {
    let pid = node.pid().expect("running");
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn routed_by(node: &NodeProc, uid: &str, what: &str) -> Vec<String> {
    wait_for(
        &format!("{uid} routed ({what})"),
        Duration::from_secs(30),
        || {
            let h = node.history(uid);
            h.iter()
                .any(|e| e.contains("rule ") || e.contains("no rule matched"))
                .then_some(h)
        },
    )
}

#[test]
fn sighup_and_segnode_reload_take_new_rules_and_refuse_a_broken_file() {
    let data = tempfile::tempdir().unwrap();
    let series: Vec<(Vec<PathBuf>, String)> = (0..5)
        .map(|n| chest(&data.path().join(format!("s{n}")), &format!("6{n}")))
        .collect();
    let node = NodeProc::start_with(
        &[],
        "[[rules]]\nname = \"never\"\npipelines = [\"noop\"]\n[rules.match]\nseries_description = \"^never$\"\n",
    );
    // before: nothing matches
    assert!(storescu(node.port, &series[0].0, &[]).status.success());
    let h = routed_by(&node, &series[0].1, "before");
    assert!(h.iter().any(|e| e.contains("no rule matched")), "{h:#?}");

    // a slow sender is mid-association while the configuration changes
    let slow_log = data.path().join("slow.jsonl");
    let mut slow = pynetdicom_send(node.port, &series[4].0, 0.4, &slow_log);
    std::thread::sleep(Duration::from_millis(800));

    write_config(&node, &rule("all-ct"));
    hup(&node);
    wait_for("the reload logged", Duration::from_secs(20), || {
        node.log().contains("configuration reloaded").then_some(())
    });
    assert!(storescu(node.port, &series[1].0, &[]).status.success());
    let h = routed_by(&node, &series[1].1, "after SIGHUP");
    assert!(h.iter().any(|e| e.contains("rule all-ct")), "{h:#?}");

    // a broken file: refused, naming the key; the running rules stay
    write_config(
        &node,
        &format!(
            "{}[[destinations]]\nname = \"x\"\nae_title = \"X\"\nhost = \"127.0.0.1\"\nport = 104\nbogus_key = 1\n",
            rule("broken")
        ),
    );
    hup(&node);
    wait_for("the refusal logged", Duration::from_secs(20), || {
        let log = node.log();
        (log.contains("configuration not taken over") && log.contains("bogus_key")).then_some(())
    });
    assert!(storescu(node.port, &series[2].0, &[]).status.success());
    // (the CLI reads the file too: a good one again, without telling the node, to look at the history)
    write_config(&node, &rule("all-ct"));
    let h = routed_by(&node, &series[2].1, "after the broken file");
    assert!(h.iter().any(|e| e.contains("rule all-ct")), "{h:#?}");

    // segnode reload: through the console with the admin token
    write_config(&node, &rule("again"));
    let out = node.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"));
    assert!(storescu(node.port, &series[3].0, &[]).status.success());
    let h = routed_by(&node, &series[3].1, "after segnode reload");
    assert!(h.iter().any(|e| e.contains("rule again")), "{h:#?}");

    // the association in progress went through untouched
    assert!(
        wait_child(&mut slow, Duration::from_secs(60)),
        "the slow sender failed"
    );
    assert_eq!(acknowledged(&slow_log).len(), series[4].0.len());
}
