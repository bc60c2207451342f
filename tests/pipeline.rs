//! The loop closed, with real processes on 127.0.0.1: DCMTK storescu sends a series to segnode, segnode
//! routes it, runs the pipeline and delivers the DICOM SEG to Orthanc (Debian package) — checked through
//! Orthanc's REST API and by decoding the SEG it stored.

mod support;

use dicom_dictionary_std::tags;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::node::*;
use support::orthanc::OrthancProc;
use support::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const LUNG_RULE: &str = "[[rules]]\nname = \"chest-ct\"\npipelines = [\"lung\"]\ndestinations = [\"pacs\"]\n[rules.match]\nmodality = [\"CT\"]\nmin_slices = 15\n";

/// A decoded SEG: segment label → set of (source SOP Instance UID, row, column) voxels.
struct DecodedSeg {
    study_uid: String,
    referenced_series: String,
    voxels: HashMap<String, Vec<(String, usize, usize)>>,
}

fn decode_seg(path: &Path) -> DecodedSeg {
    let obj = dicom_object::open_file(path).expect("open SEG");
    let text = |o: &dicom_object::InMemDicomObject, t| {
        o.element(t)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .trim()
            .to_string()
    };
    let rows = obj.element(tags::ROWS).unwrap().to_int::<usize>().unwrap();
    let cols = obj
        .element(tags::COLUMNS)
        .unwrap()
        .to_int::<usize>()
        .unwrap();
    let labels: HashMap<u16, String> = obj
        .element(tags::SEGMENT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|it| {
            (
                it.element(tags::SEGMENT_NUMBER)
                    .unwrap()
                    .to_int::<u16>()
                    .unwrap(),
                text(it, tags::SEGMENT_LABEL),
            )
        })
        .collect();
    let referenced_series = text(
        &obj.element(tags::REFERENCED_SERIES_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0],
        tags::SERIES_INSTANCE_UID,
    );
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    let mut voxels: HashMap<String, Vec<(String, usize, usize)>> = HashMap::new();
    for (f, fg) in obj
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .enumerate()
    {
        let seg_no = fg
            .element(tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0]
            .element(tags::REFERENCED_SEGMENT_NUMBER)
            .unwrap()
            .to_int::<u16>()
            .unwrap();
        let deriv = &fg
            .element(tags::DERIVATION_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let src = text(
            &deriv
                .element(tags::SOURCE_IMAGE_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()[0],
            tags::REFERENCED_SOP_INSTANCE_UID,
        );
        let label = labels[&seg_no].clone();
        for p in 0..rows * cols {
            let bit = f * rows * cols + p;
            if pixels[bit / 8] >> (bit % 8) & 1 == 1 {
                voxels
                    .entry(label.clone())
                    .or_default()
                    .push((src.clone(), p / cols, p % cols));
            }
        }
    }
    DecodedSeg {
        study_uid: text(&obj, tags::STUDY_INSTANCE_UID),
        referenced_series,
        voxels,
    }
}

#[test]
fn chest_ct_comes_back_as_seg_in_orthanc() {
    let data = tempfile::tempdir().unwrap();
    let (series_dir, truth_path) = (data.path().join("chest"), data.path().join("truth.raw"));
    phantom(&series_dir, &truth_path, 300, 512);
    let files = files_under(&series_dir);
    assert_eq!(files.len(), 300);
    let orthanc = OrthancProc::start();
    let node = NodeProc::start_with(
        &[],
        &format!("{}{LUNG_RULE}", destination_toml(orthanc.dicom_port)),
    );
    let out = storescu(node.port, &files, &[]);
    let released = now_ms();
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seg_series = wait_for("the SEG in Orthanc", Duration::from_secs(180), || {
        orthanc.series_of_modality("SEG").into_iter().next()
    });
    let arrived = now_ms();
    let s = node.series();
    let uid = s[0]["series_uid"].as_str().unwrap().to_string();
    let complete_after = s[0]["completed_ms"].as_i64().unwrap() - released;
    let job = node.jobs()[0].clone();
    let result: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    println!(
        "END-TO-END LATENCY (release → SEG stored in Orthanc), 300 × 512²: {} ms [completion {} ms; job load {} + segment {} + write {} ms]",
        arrived - released, complete_after, result["load_ms"], result["segment_ms"], result["write_ms"]
    );
    // the slices were read while the series arrived (workers.read_ahead_mb): the job loaded most of
    // them from memory (the last few may still be in the reader's queue at completion)
    let ahead = result["slices_read_ahead"].as_u64().unwrap_or(0);
    println!("slices read ahead: {ahead} of 300");
    assert!(
        ahead >= 150,
        "only {ahead} of 300 slices read ahead: {result:#}"
    );

    // the SEG is in the same study, references the source series, and holds the expected masks
    let dl = tempfile::tempdir().unwrap();
    let seg_files = orthanc.download_series(&seg_series, dl.path());
    assert_eq!(seg_files.len(), 1);
    let seg = decode_seg(&seg_files[0]);
    let study = node.series_show(&uid)["series"]["study_uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(seg.study_uid, study);
    assert_eq!(seg.referenced_series, uid);
    let vol = segnode_imaging::volume::load_series(&series_dir, &Default::default()).unwrap();
    let k_of: HashMap<String, usize> = vol
        .slices
        .iter()
        .enumerate()
        .map(|(k, s)| (s.sop_instance_uid.clone(), k))
        .collect();
    let [nk, nj, ni] = vol.shape();
    let truth = std::fs::read(&truth_path).unwrap();
    assert_eq!(truth.len(), nk * nj * ni);
    for (label, class) in [("Right lung", 1u8), ("Left lung", 2u8)] {
        let got = &seg.voxels[label];
        let mut inter = 0usize;
        for (sop, j, i) in got {
            inter += (truth[(k_of[sop] * nj + j) * ni + i] == class) as usize;
        }
        let truth_n = truth.iter().filter(|&&t| t == class).count();
        let dice = 2.0 * inter as f64 / (got.len() + truth_n) as f64;
        println!("{label}: Dice {dice:.4} against the phantom truth");
        assert!(dice >= 0.95, "{label}: Dice {dice}");
    }
    let h = node.history(&uid);
    assert!(
        h.iter().any(|e| e.starts_with("routed rule chest-ct")),
        "{h:#?}"
    );
    assert!(
        h.iter()
            .any(|e| e.starts_with("delivery delivered") && e.contains("status 0000")),
        "{h:#?}"
    );
}

/// A small chest series (fast) for the tests that exercise the machinery rather than the anatomy.
fn small_chest(dir: &Path) -> Vec<PathBuf> {
    phantom(dir, &dir.with_extension("truth"), 40, 128);
    files_under(dir)
}

#[test]
fn result_waits_for_orthanc_and_is_delivered_once() {
    let data = tempfile::tempdir().unwrap();
    let files = small_chest(&data.path().join("chest"));
    let mut orthanc = OrthancProc::start();
    orthanc.stop(); // the PACS is down when the result is ready
    let env = [
        ("SEGNODE_DISPATCH__RETRY_BASE_S", "0.3"),
        ("SEGNODE_DISPATCH__RETRY_MAX_S", "1.0"),
    ];
    let mut node = NodeProc::start_with(
        &env,
        &format!("{}{LUNG_RULE}", destination_toml(orthanc.dicom_port)),
    );
    assert!(storescu(node.port, &files, &[]).status.success());
    let uid = node.wait_complete(1, Duration::from_secs(60))[0]["series_uid"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("failed delivery attempts", Duration::from_secs(120), || {
        node.outbox()
            .first()
            .filter(|d| d["attempts"].as_i64().unwrap_or(0) >= 2)
            .cloned()
    });
    orthanc.spawn();
    let item = wait_for(
        "delivery after Orthanc is back",
        Duration::from_secs(60),
        || node.outbox().into_iter().find(|d| d["state"] == "SENT"),
    );
    assert_eq!(item["last_status"], "0000");
    assert_eq!(orthanc.series_of_modality("SEG").len(), 1);
    // a restart does not send it again
    node.signal("-TERM");
    node.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let items = node.outbox();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["attempts"], item["attempts"],
        "sent again after the restart"
    );
    let delivered: Vec<String> = node
        .history(&uid)
        .into_iter()
        .filter(|e| e.starts_with("delivery delivered"))
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
}

fn external(name: &str, mode: &str, timeout_s: f64, extra: &str) -> String {
    format!(
        "[pipelines.external.{name}]\ncommand = [\"{}\", \"{}\", \"{{input}}\", \"{{output}}\", \"--mode\", \"{mode}\"{extra}]\ntimeout_s = {timeout_s}\n",
        python().display(),
        py_script("test_model.py").display()
    )
}

#[test]
fn killed_worker_job_is_taken_again_and_completes_once() {
    let data = tempfile::tempdir().unwrap();
    let files = small_chest(&data.path().join("chest"));
    let orthanc = OrthancProc::start();
    let toml = format!(
        "{}{}[[rules]]\nname = \"slow\"\npipelines = [\"external:slow\"]\ndestinations = [\"pacs\"]\n",
        destination_toml(orthanc.dicom_port),
        external("slow", "slow", 120.0, ", \"--sleep\", \"6\"")
    );
    let env = [
        ("SEGNODE_WORKERS__ENABLED", "false"),
        ("SEGNODE_WORKERS__LEASE_S", "2"),
        ("SEGNODE_WORKERS__POLL_MS", "200"),
    ];
    let node = NodeProc::start_with(&env, &toml);
    let mut worker_a = node.sibling("worker");
    worker_a.spawn();
    assert!(storescu(node.port, &files, &[]).status.success());
    wait_for(
        "the job running on worker A",
        Duration::from_secs(60),
        || node.jobs().into_iter().find(|j| j["state"] == "RUNNING"),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(worker_a.signal("-9"), None);
    let mut worker_b = node.sibling("worker");
    worker_b.spawn();
    let job = wait_for("the job done by worker B", Duration::from_secs(120), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    assert_eq!(job["attempts"], 2, "{job:#?}");
    let item = wait_for("delivery", Duration::from_secs(60), || {
        node.outbox().into_iter().find(|d| d["state"] == "SENT")
    });
    assert_eq!(item["job_id"], job["id"]);
    assert_eq!(node.outbox().len(), 1, "one result delivered once");
    assert_eq!(orthanc.series_of_modality("SEG").len(), 1);
    let uid = job["series_uid"].as_str().unwrap();
    let done: Vec<String> = node
        .history(uid)
        .into_iter()
        .filter(|e| e.contains(" done in "))
        .collect();
    assert_eq!(done.len(), 1, "{done:#?}");
}

#[test]
fn unmatched_series_and_abdomen_without_lung() {
    let data = tempfile::tempdir().unwrap();
    let orthanc = OrthancProc::start();
    let node = NodeProc::start_with(
        &[],
        &format!("{}{LUNG_RULE}", destination_toml(orthanc.dicom_port)),
    );
    // 10 slices: below the rule's min_slices → no rule matches
    let (small, small_uid) = gen_series(&data.path().join("small"), 10, 64, 71, &[]);
    assert!(storescu(node.port, &small, &[]).status.success());
    // the real pelvis CT matches the lung rule and has no lung
    let pelvis: Vec<String> = files_under(&shared_data("ct-jpeg2000"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let port = node.port.to_string();
    let mut args = vec!["send", port.as_str()];
    args.extend(pelvis.iter().map(|s| s.as_str()));
    let (lines, _) = py_peer(&args);
    assert!(lines.iter().all(|l| l["status"] == 0));
    node.wait_complete(2, Duration::from_secs(60));
    let job = wait_for("the pelvis job", Duration::from_secs(120), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    let result: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["status"], "no lung found", "{result:#?}");
    assert_eq!(node.jobs().len(), 1, "the unmatched series got a job");
    assert!(node
        .history(&small_uid)
        .iter()
        .any(|e| e.contains("no rule matched")));
    std::thread::sleep(Duration::from_secs(2));
    assert!(node.outbox().is_empty(), "something was queued for sending");
    assert!(orthanc.series_of_modality("SEG").is_empty());
}

#[test]
fn external_models_ok_hang_and_garbage() {
    let data = tempfile::tempdir().unwrap();
    let files = small_chest(&data.path().join("chest"));
    let orthanc = OrthancProc::start();
    // marks this test's hanging model, to look for survivors of its timeout (other tests run models too)
    let tag = format!("stuck-{}-{}", std::process::id(), now_ms());
    let toml = format!(
        "{}{}{}{}[[rules]]\nname = \"models\"\npipelines = [\"external:good\", \"external:stuck\", \"external:broken\"]\ndestinations = [\"pacs\"]\n",
        destination_toml(orthanc.dicom_port),
        external("good", "ok", 120.0, ""),
        external("stuck", "hang", 3.0, &format!(", \"--tag\", \"{tag}\"")),
        external("broken", "garbage", 60.0, "")
    );
    let node = NodeProc::start_with(&[("SEGNODE_WORKERS__MAX_ATTEMPTS", "1")], &toml);
    assert!(storescu(node.port, &files, &[]).status.success());
    let all = wait_for("three finished jobs", Duration::from_secs(180), || {
        let j = node.jobs();
        (j.len() == 3
            && j.iter()
                .all(|x| x["state"] == "DONE" || x["state"] == "DEAD"))
        .then_some(j)
    });
    let by: HashMap<String, Value> = all
        .into_iter()
        .map(|j| (j["pipeline"].as_str().unwrap().to_string(), j))
        .collect();
    assert_eq!(by["external:good"]["state"], "DONE");
    let stuck = &by["external:stuck"];
    assert_eq!(stuck["state"], "DEAD");
    assert!(
        stuck["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 3 s"),
        "{stuck:#?}"
    );
    let broken = &by["external:broken"];
    assert_eq!(broken["state"], "DEAD");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("labels.raw has 100 bytes"),
        "{broken:#?}"
    );
    let seg = wait_for(
        "the model's SEG in Orthanc",
        Duration::from_secs(60),
        || orthanc.series_of_modality("SEG").into_iter().next(),
    );
    let dl = tempfile::tempdir().unwrap();
    let decoded = decode_seg(&orthanc.download_series(&seg, dl.path())[0]);
    assert!(
        decoded.voxels.get("Bone").is_some_and(|v| !v.is_empty()),
        "the model's bone segment is missing"
    );
    // no model process is left behind
    let ps = Command::new("pgrep").args(["-f", &tag]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "a model process survived its timeout"
    );
}

#[test]
fn admin_echo_send_and_rules_test() {
    let data = tempfile::tempdir().unwrap();
    let orthanc = OrthancProc::start();
    let node = NodeProc::prepare(
        &[],
        &format!("{}{LUNG_RULE}", destination_toml(orthanc.dicom_port)),
    );
    let peer = format!("ORTHANC@127.0.0.1:{}", orthanc.dicom_port);
    let echo = node.cli(&["echo", &peer]);
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );
    assert!(String::from_utf8_lossy(&echo.stdout).contains("status 0000"));
    assert!(
        !node
            .cli(&["echo", &format!("ORTHANC@127.0.0.1:{}", free_port())])
            .status
            .success(),
        "echo to a closed port succeeded"
    );

    // send a generated series and the real JPEG 2000 one as they are
    let (files, uid) = gen_series(&data.path().join("ct"), 20, 64, 81, &[]);
    let out = node.cli(&["send", data.path().join("ct").to_str().unwrap(), &peer]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // compressed files go as they are: JPEG Lossless SV1 made with DCMTK's dcmcjpeg
    let (plain, _) = gen_series(&data.path().join("plain"), 3, 64, 83, &[]);
    let jpeg_dir = data.path().join("jpeg");
    std::fs::create_dir_all(&jpeg_dir).unwrap();
    for (n, f) in plain.iter().enumerate() {
        let st = Command::new("dcmcjpeg")
            .arg(f)
            .arg(jpeg_dir.join(format!("{n}.dcm")))
            .status()
            .unwrap();
        assert!(st.success(), "dcmcjpeg");
    }
    let out = node.cli(&["send", jpeg_dir.to_str().unwrap(), &peer]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let series = orthanc.get("/series");
    assert_eq!(series.as_array().unwrap().len(), 2);
    let tag = |id: &Value| {
        orthanc.get(&format!("/series/{}", id.as_str().unwrap()))["MainDicomTags"]
            ["SeriesInstanceUID"]
            .clone()
    };
    let ours = series
        .as_array()
        .unwrap()
        .iter()
        .find(|id| tag(id) == uid.as_str())
        .expect("the sent series in Orthanc");
    assert_eq!(
        orthanc
            .get(&format!("/series/{}/instances", ours.as_str().unwrap()))
            .as_array()
            .unwrap()
            .len(),
        files.len()
    );
    let jpeg = series
        .as_array()
        .unwrap()
        .iter()
        .find(|id| tag(id) != uid.as_str())
        .unwrap();
    let inst = orthanc.get(&format!("/series/{}/instances", jpeg.as_str().unwrap()));
    let first = inst[0]["ID"].as_str().unwrap();
    let ts = Command::new("curl")
        .args([
            "-sf",
            &format!(
                "http://127.0.0.1:{}/instances/{first}/metadata/TransferSyntax",
                orthanc.http_port
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ts.stdout),
        "1.2.840.10008.1.2.4.70",
        "compressed file was not sent as is"
    );

    // a peer that takes Implicit VR LE only: the files are re-encoded, pixels unchanged
    let scp_dir = data.path().join("scp");
    std::fs::create_dir_all(&scp_dir).unwrap();
    let port = free_port();
    let mut scp = Command::new("storescp")
        .args(["+xi", "-od"])
        .arg(&scp_dir)
        .arg(port.to_string())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = node.cli(&[
        "send",
        files[0].to_str().unwrap(),
        &format!("ANY-SCP@127.0.0.1:{port}"),
    ]);
    let _ = scp.kill();
    let _ = scp.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = files_under(&scp_dir);
    assert_eq!(received.len(), 1);
    assert!(
        meta_transfer_syntax(&received[0]).contains("1.2.840.10008.1.2]"),
        "{}",
        meta_transfer_syntax(&received[0])
    );
    let px = |p: &Path| {
        dicom_object::open_file(p)
            .unwrap()
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec()
    };
    assert!(
        px(&received[0]) == px(&files[0]),
        "pixel data changed in re-encoding"
    );

    // rules test: the 20-slice series hits the lung rule, a 10-slice one does not
    let out = node.cli(&["rules", "test", data.path().join("ct").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("rule chest-ct → pipelines lung → destinations pacs"),
        "{text}"
    );
    let (_, _) = gen_series(&data.path().join("few"), 10, 64, 82, &[]);
    let text = String::from_utf8_lossy(
        &node
            .cli(&["rules", "test", data.path().join("few").to_str().unwrap()])
            .stdout,
    )
    .to_string();
    assert!(text.contains("no rule matches"), "{text}");
}

#[test]
fn coronal_cbct_is_routed_to_cochlear_by_the_example_rule() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("cbct");
    phantom_cli(&[
        std::ffi::OsStr::new("--kind"),
        "cbct".as_ref(),
        "--cbct-variant".as_ref(),
        "coronal-right".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
    ]);
    // the example file in config/ routes it
    let example = repo_root().join("config/examples/routing.toml");
    let out = run_with_timeout(
        Command::new(segnode_bin())
            .arg("--config")
            .arg(&example)
            .args(["rules", "test"])
            .arg(&dir),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("rule cbct-cochlear → pipelines cochlear"),
        "{text}"
    );
    assert!(!text.contains("chest-ct-lungs"), "{text}");
    // and through the node: the electrode SEG reaches the PACS, contacts in the job result
    let orthanc = OrthancProc::start();
    let rule = std::fs::read_to_string(&example).unwrap();
    let rule = &rule[rule.find("[[rules]]\nname = \"cbct-cochlear\"").unwrap()..];
    let node = NodeProc::start_with(
        &[],
        &format!("{}{rule}", destination_toml(orthanc.dicom_port)),
    );
    assert!(storescu(node.port, &files_under(&dir), &[])
        .status
        .success());
    let seg = wait_for(
        "the electrode SEG in Orthanc",
        Duration::from_secs(180),
        || orthanc.series_of_modality("SEG").into_iter().next(),
    );
    let job = node.jobs().into_iter().next().unwrap();
    assert_eq!(job["pipeline"], "cochlear");
    let result: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    let arrays = result["details"]["arrays"]
        .as_array()
        .expect("contact details in the job result");
    assert_eq!(arrays.len(), 1);
    assert_eq!(arrays[0]["contact_count"], 22, "{:#}", arrays[0]);
    assert_eq!(
        arrays[0]["contacts_mm"].as_array().map(|c| c.len()),
        Some(22)
    );
    let dl = tempfile::tempdir().unwrap();
    let decoded = decode_seg(&orthanc.download_series(&seg, dl.path())[0]);
    assert_eq!(decoded.voxels.len(), 1, "one segment (one array)");
}
