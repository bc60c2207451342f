//! The model file: what it is (opset, tensors, operators and whether tract runs each), whether the
//! manifest fits it, and the runnable plan for the manifest's patch and batch, built once per process
//! and kept warm (`cache`).

use ndarray::{Array5, Ix5};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::OnnxError;
use crate::manifest::Manifest;

/// A tensor of the model's graph as the file declares it: `None` for a dynamic dimension.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<Option<i64>>,
}

/// One operator type used by the graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OperatorUse {
    pub op: String,
    pub domain: String,
    pub count: usize,
    /// Whether tract has an implementation of it.
    pub supported: bool,
}

/// What the file holds, read without running anything.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub ir_version: i64,
    /// The default-domain operator set.
    pub opset: i64,
    pub producer: String,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub operators: Vec<OperatorUse>,
}

impl ModelInfo {
    pub fn unsupported(&self) -> Vec<&str> {
        self.operators
            .iter()
            .filter(|o| !o.supported)
            .map(|o| o.op.as_str())
            .collect()
    }
}

fn model_err(file: &Path, message: impl Into<String>) -> OnnxError {
    OnnxError::Model {
        file: file.display().to_string(),
        message: message.into(),
    }
}

fn mismatch(file: &Path, message: impl Into<String>) -> OnnxError {
    OnnxError::Mismatch {
        file: file.display().to_string(),
        message: message.into(),
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<(String, u64), OnnxError> {
    let mut f = std::fs::File::open(path).map_err(|e| OnnxError::Io {
        what: format!("opening model {}", path.display()),
        source: e,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).map_err(|e| OnnxError::Io {
            what: format!("reading model {}", path.display()),
            source: e,
        })?;
        if r == 0 {
            break;
        }
        n += r as u64;
        h.update(&buf[..r]);
    }
    Ok((format!("{:x}", h.finalize()), n))
}

fn tensor_info(v: &pb::ValueInfoProto) -> TensorInfo {
    let shape = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                            Some(v)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    TensorInfo {
        name: v.name.clone(),
        shape,
    }
}

/// Read the file's graph: tensors, opset, operators (and which tract lacks).
pub fn inspect(path: &Path) -> Result<(ModelInfo, pb::ModelProto), OnnxError> {
    let (sha256, bytes) = sha256_file(path)?;
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_path(path)
        .map_err(|e| model_err(path, format!("not an ONNX model: {e:#}")))?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| model_err(path, "the file holds no graph"))?;
    let initialised: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut ops: BTreeMap<(String, String), usize> = BTreeMap::new();
    for n in &graph.node {
        *ops.entry((n.op_type.clone(), n.domain.clone()))
            .or_default() += 1;
    }
    let operators = ops
        .into_iter()
        .map(|((op, domain), count)| OperatorUse {
            supported: onnx.op_register.0.contains_key(&op),
            op,
            domain,
            count,
        })
        .collect();
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    let info = ModelInfo {
        file: path.display().to_string(),
        sha256,
        bytes,
        ir_version: proto.ir_version,
        opset,
        producer: format!("{} {}", proto.producer_name, proto.producer_version)
            .trim()
            .to_string(),
        inputs: graph
            .input
            .iter()
            .filter(|i| !initialised.contains(i.name.as_str()))
            .map(tensor_info)
            .collect(),
        outputs: graph.output.iter().map(tensor_info).collect(),
        operators,
    };
    Ok((info, proto))
}

/// A model ready to run patches of the manifest's shape.
pub struct LoadedModel {
    pub info: ModelInfo,
    plan: Arc<TypedRunnableModel>,
    /// `[batch, channels, D, H, W]` the plan takes.
    pub input_shape: [usize; 5],
    /// Output channels (classes).
    pub classes: usize,
}

impl LoadedModel {
    /// Run one batch `[batch, channels, D, H, W]` → `[batch, classes, D, H, W]`.
    pub fn run(&self, x: Array5<f32>) -> Result<Array5<f32>, OnnxError> {
        let out = self
            .plan
            .run(tvec!(Tensor::from(x).into()))
            .map_err(|e| OnnxError::Inference(format!("{e:#}")))?;
        let first = out
            .into_iter()
            .next()
            .ok_or_else(|| OnnxError::Inference("the model gave no output".into()))?;
        let view = first
            .to_plain_array_view::<f32>()
            .map_err(|e| OnnxError::Inference(format!("output is not float32: {e:#}")))?;
        view.into_dimensionality::<Ix5>()
            .map(|v| v.to_owned())
            .map_err(|e| OnnxError::Inference(format!("output is not 5-dimensional: {e}")))
    }
}

/// Check `manifest` against its model file and build the plan.
pub fn load(manifest: &Manifest) -> Result<LoadedModel, OnnxError> {
    let (info, proto) = inspect(&manifest.model_path())?;
    fit(manifest, info, &proto)
}

/// Check `manifest` against the model [`inspect`] read (`info`, `proto`) and build the plan.
pub fn fit(
    manifest: &Manifest,
    info: ModelInfo,
    proto: &pb::ModelProto,
) -> Result<LoadedModel, OnnxError> {
    let path = manifest.model_path();
    let unsupported = info.unsupported();
    if !unsupported.is_empty() {
        return Err(model_err(
            &path,
            format!(
                "operators tract does not support: {}",
                unsupported.join(", ")
            ),
        ));
    }
    let pick =
        |list: &[TensorInfo], want: &Option<String>, what: &str| -> Result<TensorInfo, OnnxError> {
            match want {
                Some(name) => list
                    .iter()
                    .find(|t| &t.name == name)
                    .cloned()
                    .ok_or_else(|| {
                        mismatch(
                            &path,
                            format!(
                                "no {what} named {name:?} (the model has {})",
                                list.iter()
                                    .map(|t| t.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    }),
                None => list
                    .first()
                    .cloned()
                    .ok_or_else(|| mismatch(&path, format!("the model has no {what}"))),
            }
        };
    let input = pick(&info.inputs, &manifest.model.input_name, "input")?;
    let output = pick(&info.outputs, &manifest.model.output_name, "output")?;
    if info.inputs.len() != 1 {
        return Err(mismatch(
            &path,
            format!(
                "the model takes {} inputs; segnode feeds one tensor [batch, channels, D, H, W]",
                info.inputs.len()
            ),
        ));
    }
    if !input.shape.is_empty() && input.shape.len() != 5 {
        return Err(mismatch(
            &path,
            format!(
                "input {:?} has {} dimensions; segnode feeds [batch, channels, D, H, W]",
                input.name,
                input.shape.len()
            ),
        ));
    }
    let channels = manifest.input.channels.len();
    let p = manifest.input.patch;
    let want = [manifest.input.batch, channels, p[0], p[1], p[2]];
    let names = ["batch", "channels", "D", "H", "W"];
    for (n, (declared, w)) in input.shape.iter().zip(want).enumerate() {
        if let Some(d) = declared {
            if *d as usize != w {
                let hint = match n {
                    0 => "input.batch".to_string(),
                    1 => format!("input.channels lists {channels}"),
                    _ => "input.patch".to_string(),
                };
                return Err(mismatch(
                    &path,
                    format!(
                        "input {:?} {} is {d}, the manifest gives {w} ({hint})",
                        input.name, names[n]
                    ),
                ));
            }
        }
    }
    let onnx = tract_onnx::onnx();
    let dir = path.parent().and_then(|d| d.to_str());
    let parsed = onnx
        .parse(proto, dir)
        .map_err(|e| model_err(&path, format!("{e:#}")))?;
    let mut model = parsed.model;
    if let Some(out_name) = &manifest.model.output_name {
        model
            .select_outputs_by_name([out_name.as_str()])
            .map_err(|e| mismatch(&path, format!("output {out_name:?}: {e:#}")))?;
    }
    let typed = model
        .with_input_fact(0, f32::fact(want).into())
        .and_then(|m| m.into_optimized())
        .map_err(|e| {
            mismatch(
                &path,
                format!("the model does not run on [batch, channels, D, H, W] = {want:?}: {e:#}"),
            )
        })?;
    let out_fact = typed
        .output_fact(0)
        .map_err(|e| model_err(&path, format!("{e:#}")))?;
    let out_shape: Vec<usize> = out_fact
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| {
            mismatch(
                &path,
                format!("output {:?} has no fixed shape", output.name),
            )
        })?;
    if out_shape.len() != 5 || out_shape[0] != want[0] || out_shape[2..] != want[2..] {
        return Err(mismatch(
            &path,
            format!(
                "output {:?} is {out_shape:?} for input {want:?}; segnode needs [batch, classes, D, H, W] \
                 on the patch's own grid",
                output.name
            ),
        ));
    }
    let classes = out_shape[1];
    if manifest.max_channel() >= classes {
        return Err(mismatch(
            &path,
            format!(
                "output.labels names channel {} but the model gives {classes} channel(s)",
                manifest.max_channel()
            ),
        ));
    }
    let plan = typed
        .into_runnable()
        .map_err(|e| model_err(&path, format!("{e:#}")))?;
    Ok(LoadedModel {
        info,
        plan,
        input_shape: want,
        classes,
    })
}

/// Identity of a manifest and its model on disk: a change to either loads the model again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    manifest: PathBuf,
    stamps: [(u64, Option<SystemTime>); 2],
}

fn stamp(p: &Path) -> (u64, Option<SystemTime>) {
    std::fs::metadata(p).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

/// The manifest at `path` and its model, loaded once per process and kept while neither file changes.
pub fn cached(path: &Path) -> Result<(Arc<Manifest>, Arc<LoadedModel>), OnnxError> {
    type Cache = Mutex<HashMap<PathBuf, (Key, Arc<Manifest>, Arc<LoadedModel>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let manifest = Manifest::load(path)?;
    let key = Key {
        manifest: path.to_path_buf(),
        stamps: [stamp(path), stamp(&manifest.model_path())],
    };
    let cache = CACHE.get_or_init(Default::default);
    if let Some((k, m, l)) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        if *k == key {
            return Ok((m.clone(), l.clone()));
        }
    }
    // loading can take seconds: not under the lock (two first jobs may both load; the last one stays)
    let loaded = Arc::new(load(&manifest)?);
    let manifest = Arc::new(manifest);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), (key, manifest.clone(), loaded.clone()));
    Ok((manifest, loaded))
}
