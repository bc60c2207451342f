//! (in progress)
use super::{SegmentError, Segmentation, Segmenter};
use crate::volume::Volume;

#[derive(Debug, Default)]
pub struct LungSegmenter;

impl Segmenter for LungSegmenter {
    fn name(&self) -> &'static str {
        "lung"
    }
    fn version(&self) -> &'static str {
        "0.1"
    }
    fn segment(&self, volume: &Volume) -> Result<Segmentation, SegmentError> {
        Ok(Segmentation {
            labels: ndarray::Array3::zeros(volume.hu.raw_dim()),
            segments: vec![],
            notes: vec![],
        })
    }
}
