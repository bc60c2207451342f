//! What the console's viewer shows: a stored series loaded as a [`Volume`] with the label volume of the
//! latest result's SEG (read back from the copy the worker kept in the outbox folder, so the overlay is
//! what was sent), the DICOM attributes that matter, and PNG planes rendered from them.
//!
//! Loading a 300-slice series takes seconds, so loaded series (a few) and rendered PNGs (many, small) are
//! kept in memory, keyed by series, revision and result. Concurrent requests for a series that is being
//! loaded wait for that one load. Everything here is synchronous: callers run it on a blocking thread.

pub mod render;
pub mod seg;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use dicom_dictionary_std::tags;
use segnode_imaging::volume::{load_series, LoadOptions, Volume};

use render::{Plane, RenderError, Window};
use seg::{LabelVolume, SegmentInfo};

/// Why a view could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ViewError {
    #[error("loading the series: {0}")]
    Load(String),
    #[error("{0}")]
    Request(String),
}

impl From<RenderError> for ViewError {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Png(m) => ViewError::Load(m),
            other => ViewError::Request(other.to_string()),
        }
    }
}

/// Which stored series and result a view is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewKey {
    pub series_uid: String,
    pub revision: i64,
    /// The SEG's SOP Instance UID (empty: no result to overlay).
    pub seg_uid: String,
}

/// A loaded series with its overlay.
pub struct ViewData {
    pub volume: Volume,
    pub labels: Option<LabelVolume>,
    /// Why there is no overlay, when there is none although a result was named.
    pub overlay_problem: Option<String>,
    /// (name, value) of the source's DICOM attributes that matter to a reader.
    pub attributes: Vec<(String, String)>,
}

impl ViewData {
    /// Load the series stored in `dir` and the SEG at `seg` (if any).
    pub fn load(dir: &Path, seg: Option<&Path>) -> Result<ViewData, ViewError> {
        let volume = load_series(dir, &LoadOptions::default())
            .map_err(|e| ViewError::Load(e.to_string()))?;
        let (labels, overlay_problem) = match seg {
            None => (None, None),
            Some(p) if !p.is_file() => (
                None,
                Some(format!(
                    "the result file {} is no longer kept (dispatch.keep_sent_h)",
                    p.display()
                )),
            ),
            Some(p) => match seg::read_seg(p, &volume) {
                Ok(l) => (Some(l), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let attributes = attributes(&volume);
        Ok(ViewData {
            volume,
            labels,
            overlay_problem,
            attributes,
        })
    }

    /// The segments of the overlay (none without one).
    pub fn segments(&self) -> &[SegmentInfo] {
        self.labels.as_ref().map_or(&[], |l| &l.segments)
    }

    /// A plane as PNG; `index` defaults to the middle; `segments` None = all.
    pub fn png(
        &self,
        plane: Plane,
        index: Option<usize>,
        window: Window,
        overlay: bool,
        segments: Option<&[u8]>,
    ) -> Result<Vec<u8>, ViewError> {
        let count = plane.count(self.volume.shape());
        let index = index.unwrap_or(count / 2);
        let all: Vec<u8> = self.segments().iter().map(|s| s.number).collect();
        let chosen: &[u8] = if overlay {
            segments.unwrap_or(&all)
        } else {
            &[]
        };
        let labels = self.labels.as_ref().map(|l| &l.labels);
        Ok(render::render(&self.volume, labels, plane, index, window, chosen)?.png()?)
    }
}

/// The attributes panel: patient / study / series, equipment, size, spacing, orientation, field of view,
/// rescale. Read from the first slice of the stack.
fn attributes(v: &Volume) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, val: String| {
        if !val.is_empty() {
            out.push((k.to_string(), val))
        }
    };
    let s = &v.series;
    put("Patient", format!("{} ({})", s.patient_name, s.patient_id));
    put(
        "Study",
        format!("{} {} {}", s.study_date, s.study_id, s.accession_number)
            .trim()
            .to_string(),
    );
    put(
        "Series",
        format!("{} {}", s.series_number, s.series_description)
            .trim()
            .to_string(),
    );
    put("Modality", s.modality.clone());
    put("Body part", s.body_part_examined.clone());
    let header = v.slices.first().and_then(|sl| {
        dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(&sl.path)
            .ok()
    });
    let text = |t| {
        header
            .as_ref()
            .and_then(|h| h.element(t).ok())
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches('\0').trim().replace('\\', " \\ "))
            .unwrap_or_default()
    };
    put(
        "Manufacturer",
        format!(
            "{} {}",
            text(tags::MANUFACTURER),
            text(tags::MANUFACTURER_MODEL_NAME)
        )
        .trim()
        .to_string(),
    );
    let [nk, nj, ni] = v.shape();
    put("Rows × columns × slices", format!("{nj} × {ni} × {nk}"));
    let g = &v.geometry;
    put(
        "Pixel spacing",
        format!("{:.3} × {:.3} mm", g.pixel_spacing[0], g.pixel_spacing[1]),
    );
    put(
        "Slice thickness",
        s.slice_thickness
            .map(|t| format!("{t:.2} mm"))
            .unwrap_or_default(),
    );
    put("Slice spacing", format!("{:.3} mm", g.slice_spacing));
    put(
        "Orientation",
        format!(
            "{:.2} {:.2} {:.2} / {:.2} {:.2} {:.2}",
            g.row_dir[0], g.row_dir[1], g.row_dir[2], g.col_dir[0], g.col_dir[1], g.col_dir[2]
        ),
    );
    let [_, dj, di] = g.spacing_kji();
    put(
        "Field of view",
        format!(
            "{:.1} × {:.1} × {:.1} mm",
            ni as f64 * di,
            nj as f64 * dj,
            nk as f64 * g.slice_spacing
        ),
    );
    put(
        "Rescale slope / intercept",
        format!(
            "{} / {}",
            text(tags::RESCALE_SLOPE),
            text(tags::RESCALE_INTERCEPT)
        ),
    );
    out
}

type Slot = Arc<OnceLock<Result<Arc<ViewData>, ViewError>>>;

/// Loaded series and rendered PNGs, bounded.
pub struct ViewCache {
    loaded: Mutex<VecDeque<(ViewKey, Slot)>>,
    pngs: Mutex<VecDeque<(String, Arc<Vec<u8>>)>>,
    max_loaded: usize,
    max_pngs: usize,
}

impl Default for ViewCache {
    fn default() -> Self {
        ViewCache::new(2, 256)
    }
}

impl ViewCache {
    pub fn new(max_loaded: usize, max_pngs: usize) -> ViewCache {
        ViewCache {
            loaded: Mutex::new(VecDeque::new()),
            pngs: Mutex::new(VecDeque::new()),
            max_loaded: max_loaded.max(1),
            max_pngs,
        }
    }

    /// The view of `key`, loading it from `dir` and `seg` once (blocking).
    pub fn view(
        &self,
        key: &ViewKey,
        dir: &Path,
        seg: Option<PathBuf>,
    ) -> Result<Arc<ViewData>, ViewError> {
        let slot = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            match loaded.iter().position(|(k, _)| k == key) {
                Some(pos) => {
                    let entry = loaded.remove(pos).expect("position is in range");
                    let slot = entry.1.clone();
                    loaded.push_back(entry);
                    slot
                }
                None => {
                    let slot: Slot = Arc::new(OnceLock::new());
                    loaded.push_back((key.clone(), slot.clone()));
                    while loaded.len() > self.max_loaded {
                        loaded.pop_front();
                    }
                    slot
                }
            }
        };
        let result = slot
            .get_or_init(|| ViewData::load(dir, seg.as_deref()).map(Arc::new))
            .clone();
        if result.is_err() {
            // a failed load is tried again next time
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            loaded.retain(|(k, s)| !(k == key && Arc::ptr_eq(s, &slot)));
        }
        result
    }

    /// A cached PNG by its request key.
    pub fn png(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        let pngs = self.pngs.lock().unwrap_or_else(|e| e.into_inner());
        pngs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// Keep a rendered PNG.
    pub fn keep_png(&self, key: String, png: Arc<Vec<u8>>) {
        let mut pngs = self.pngs.lock().unwrap_or_else(|e| e.into_inner());
        pngs.push_back((key, png));
        while pngs.len() > self.max_pngs {
            pngs.pop_front();
        }
    }
}
