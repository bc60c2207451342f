//! `segnode models check FILE.toml`: what an ONNX model file holds (opset, tensors, operators and
//! whether tract runs each) and whether the manifest fits it, as a site checks a model before it
//! names it in `[pipelines.onnx]`. Exit status 1 when anything does not fit.

use segnode_onnx::{fit, inspect, Manifest};
use serde_json::json;
use std::path::Path;

/// The check's report (printed as text or JSON by the caller) and whether everything fits.
pub fn check(manifest_path: &Path) -> (serde_json::Value, bool) {
    let manifest = match Manifest::load(manifest_path) {
        Ok(m) => m,
        Err(e) => {
            return (
                json!({ "manifest": manifest_path.display().to_string(), "ok": false, "error": e.to_string() }),
                false,
            )
        }
    };
    let mut report = json!({
        "manifest": manifest_path.display().to_string(),
        "model": { "name": manifest.model.name, "version": manifest.model.version },
    });
    // the file is read (and hashed) once: what it holds is reported even when it does not fit
    let (info, proto) = match inspect(&manifest.model_path()) {
        Ok(read) => read,
        Err(e) => {
            report["ok"] = json!(false);
            report["error"] = json!(e.to_string());
            return (report, false);
        }
    };
    report["file"] = json!(info);
    report["unsupported_operators"] = json!(info.unsupported());
    match fit(&manifest, info, &proto) {
        Ok(m) => {
            report["ok"] = json!(true);
            report["runs_as"] = json!({ "input": m.input_shape, "classes": m.classes });
            (report, true)
        }
        Err(e) => {
            report["ok"] = json!(false);
            report["error"] = json!(e.to_string());
            (report, false)
        }
    }
}

/// The report as lines for a person.
pub fn text(report: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "manifest  {}",
        report["manifest"].as_str().unwrap_or("")
    ));
    if let Some(m) = report.get("model") {
        line(format!(
            "model     {} {}",
            m["name"].as_str().unwrap_or(""),
            m["version"].as_str().unwrap_or("")
        ));
    }
    if let Some(f) = report.get("file") {
        line(format!(
            "file      {} ({} bytes)",
            f["file"].as_str().unwrap_or(""),
            f["bytes"]
        ));
        line(format!("sha256    {}", f["sha256"].as_str().unwrap_or("")));
        line(format!(
            "opset     {} (IR {}), producer {}",
            f["opset"],
            f["ir_version"],
            f["producer"].as_str().unwrap_or("")
        ));
        let dims = |t: &serde_json::Value| -> String {
            let shape: Vec<String> = t["shape"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| {
                            if d.is_null() {
                                "?".into()
                            } else {
                                d.to_string()
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{} [{}]",
                t["name"].as_str().unwrap_or(""),
                shape.join(", ")
            )
        };
        for t in f["inputs"].as_array().into_iter().flatten() {
            line(format!("input     {}", dims(t)));
        }
        for t in f["outputs"].as_array().into_iter().flatten() {
            line(format!("output    {}", dims(t)));
        }
        for o in f["operators"].as_array().into_iter().flatten() {
            line(format!(
                "operator  {:<24} ×{:<4} {}",
                o["op"].as_str().unwrap_or(""),
                o["count"],
                if o["supported"] == true {
                    "supported"
                } else {
                    "NOT SUPPORTED by tract"
                }
            ));
        }
    }
    if let Some(r) = report.get("runs_as") {
        line(format!(
            "runs as   input {} → {} classes",
            r["input"], r["classes"]
        ));
    }
    match report.get("error") {
        Some(e) => line(format!("PROBLEM   {}", e.as_str().unwrap_or(""))),
        None => line("ok        the manifest fits its model".into()),
    }
    out
}
