//! The one list of pipeline names: the built-in segmenters of `segnode-imaging`, `noop`, the site's
//! `external:<name>` models from `[pipelines.external]` and its `onnx:<name>` models from
//! `[pipelines.onnx]`. Configuration checks, routing rules and workers
//! all ask this registry, so a name is known (or refused, with the same message) everywhere alike.

use std::collections::HashMap;
use std::path::Path;

use segnode_imaging::segment::{self, Segmenter};

use super::external::{ExternalSegmenter, ExternalSettings};
use super::onnx::OnnxSettings;

/// The pipeline that claims and completes its job without reading the series (benchmarks of the queue,
/// tests of the routing).
pub const NOOP: &str = "noop";
/// Prefix of a site model's pipeline name: `external:<name>`.
pub const EXTERNAL_PREFIX: &str = "external:";
/// Prefix of an in-process ONNX model's pipeline name: `onnx:<name>`.
pub const ONNX_PREFIX: &str = "onnx:";

/// A pipeline name this configuration can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pipeline<'a> {
    /// One of `segnode_imaging::segment::BUILTIN`.
    Builtin(&'static str),
    /// [`NOOP`].
    Noop,
    /// `external:<name>` with its settings.
    External(&'a str),
    /// `onnx:<name>` with its settings.
    Onnx(&'a str),
}

/// A pipeline name nobody can run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pipeline `{name}` (known: {known})")]
pub struct UnknownPipeline {
    pub name: String,
    /// The names this configuration knows, comma-separated.
    pub known: String,
}

/// The pipelines of one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Registry<'a> {
    external: &'a HashMap<String, ExternalSettings>,
    onnx: &'a HashMap<String, OnnxSettings>,
}

impl<'a> Registry<'a> {
    pub fn new(
        external: &'a HashMap<String, ExternalSettings>,
        onnx: &'a HashMap<String, OnnxSettings>,
    ) -> Registry<'a> {
        Registry { external, onnx }
    }

    /// Every name this configuration can run: built-ins, `noop`, then `external:<name>` sorted.
    pub fn known(&self) -> Vec<String> {
        let mut out: Vec<String> = segment::BUILTIN.iter().map(|s| s.to_string()).collect();
        out.push(NOOP.to_string());
        let mut ext: Vec<&String> = self.external.keys().collect();
        ext.sort();
        out.extend(ext.into_iter().map(|e| format!("{EXTERNAL_PREFIX}{e}")));
        let mut onnx: Vec<&String> = self.onnx.keys().collect();
        onnx.sort();
        out.extend(onnx.into_iter().map(|e| format!("{ONNX_PREFIX}{e}")));
        out
    }

    /// What `name` is, or the one error text for a name that is not known.
    pub fn parse<'n>(&self, name: &'n str) -> Result<Pipeline<'n>, UnknownPipeline> {
        if name == NOOP {
            return Ok(Pipeline::Noop);
        }
        if let Some(ext) = name.strip_prefix(EXTERNAL_PREFIX) {
            if self.external.contains_key(ext) {
                return Ok(Pipeline::External(ext));
            }
        } else if let Some(m) = name.strip_prefix(ONNX_PREFIX) {
            if self.onnx.contains_key(m) {
                return Ok(Pipeline::Onnx(m));
            }
        } else if let Some(b) = segment::BUILTIN.iter().find(|b| **b == name) {
            return Ok(Pipeline::Builtin(b));
        }
        let mut known = self.known().join(", ");
        if self.external.is_empty() {
            known.push_str(", or external:<name> from [pipelines.external]");
        }
        if self.onnx.is_empty() {
            known.push_str(", or onnx:<name> from [pipelines.onnx]");
        }
        Err(UnknownPipeline {
            name: name.to_string(),
            known,
        })
    }

    /// The segmenter of `name`; `None` for [`NOOP`], which has none. External models exchange files
    /// under `work_root`.
    pub fn segmenter(
        &self,
        name: &str,
        work_root: &Path,
    ) -> Result<Option<Box<dyn Segmenter>>, UnknownPipeline> {
        Ok(match self.parse(name)? {
            Pipeline::Noop => None,
            Pipeline::Builtin(b) => segment::pipeline(b).ok(),
            Pipeline::External(ext) => Some(Box::new(ExternalSegmenter::new(
                ext,
                &self.external[ext],
                work_root,
            ))),
            Pipeline::Onnx(m) => Some(Box::new(self.onnx[m].segmenter(m))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext() -> HashMap<String, ExternalSettings> {
        let mut m = HashMap::new();
        m.insert(
            "brain".to_string(),
            ExternalSettings {
                command: vec!["true".into()],
                timeout_s: 5.0,
            },
        );
        m
    }

    #[test]
    fn names_parse_to_their_kind() {
        let e = ext();
        let o = HashMap::new();
        let r = Registry::new(&e, &o);
        assert_eq!(r.parse("lung"), Ok(Pipeline::Builtin("lung")));
        assert_eq!(r.parse("cochlear"), Ok(Pipeline::Builtin("cochlear")));
        assert_eq!(r.parse("noop"), Ok(Pipeline::Noop));
        assert_eq!(r.parse("external:brain"), Ok(Pipeline::External("brain")));
        assert_eq!(r.known(), ["lung", "cochlear", "noop", "external:brain"]);
    }

    #[test]
    fn unknown_names_get_one_message_listing_the_known() {
        let e = ext();
        let o = HashMap::new();
        let r = Registry::new(&e, &o);
        for bad in ["liver", "external:missing", "external:", "Lung"] {
            let err = r.parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "unknown pipeline `{bad}` (known: lung, cochlear, noop, external:brain, or \
                     onnx:<name> from [pipelines.onnx])"
                )
            );
        }
        let none = HashMap::new();
        assert_eq!(
            Registry::new(&none, &HashMap::new()).parse("x").unwrap_err().known,
            "lung, cochlear, noop, or external:<name> from [pipelines.external], or onnx:<name> from \
             [pipelines.onnx]"
        );
        let mut onnx = HashMap::new();
        onnx.insert(
            "brain".to_string(),
            OnnxSettings {
                manifest: "/models/brain.toml".into(),
                timeout_s: 60.0,
                max_memory_mb: 1024,
            },
        );
        let r = Registry::new(&none, &onnx);
        assert_eq!(r.parse("onnx:brain"), Ok(Pipeline::Onnx("brain")));
        assert!(r.parse("onnx:liver").is_err());
        assert_eq!(r.known(), ["lung", "cochlear", "noop", "onnx:brain"]);
        assert_eq!(
            r.segmenter("onnx:brain", &std::env::temp_dir())
                .unwrap()
                .unwrap()
                .name(),
            "onnx:brain"
        );
    }

    #[test]
    fn every_builtin_has_a_segmenter_and_noop_none() {
        let e = ext();
        let o = HashMap::new();
        let r = Registry::new(&e, &o);
        let dir = std::env::temp_dir();
        for b in segment::BUILTIN {
            let s = r.segmenter(b, &dir).unwrap().expect("built-in segmenter");
            assert_eq!(s.name(), *b);
        }
        assert!(r.segmenter("noop", &dir).unwrap().is_none());
        assert_eq!(
            r.segmenter("external:brain", &dir).unwrap().unwrap().name(),
            "external:brain"
        );
    }
}
