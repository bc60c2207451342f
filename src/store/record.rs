//! What is recorded about a stored instance and who is told of it: shared by the direct filing path
//! (`ingest`) and the journal's materialiser (`materialise`).

use std::path::Path;
use std::sync::Arc;

use super::header::InstanceHeader;
use segnode_db::instances::NewInstance;

/// Everything recorded about a stored instance: its header and how it arrived.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub header: InstanceHeader,
    pub transfer_syntax: String,
    pub association_id: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
    /// Relative to the storage directory.
    pub path: String,
    pub size_bytes: i64,
    pub content_hash: String,
}

impl<'a> From<&'a InstanceRecord> for NewInstance<'a> {
    fn from(r: &'a InstanceRecord) -> NewInstance<'a> {
        let h = &r.header;
        NewInstance {
            sop_class_uid: &h.sop_class_uid,
            sop_instance_uid: &h.sop_instance_uid,
            study_uid: &h.study_uid,
            series_uid: &h.series_uid,
            patient_id: h.patient_id.as_deref(),
            patient_name: h.patient_name.as_deref(),
            study_date: h.study_date.as_deref(),
            modality: h.modality.as_deref(),
            body_part: h.body_part.as_deref(),
            series_description: h.series_description.as_deref(),
            protocol_name: h.protocol_name.as_deref(),
            series_number: h.series_number,
            instance_number: h.instance_number,
            acquisition_number: h.acquisition_number,
            images_in_acquisition: h.images_in_acquisition,
            number_of_frames: h.number_of_frames,
            frame_of_reference_uid: h.frame_of_reference_uid.as_deref(),
            rows: h.rows,
            columns: h.columns,
            ipp: h.ipp,
            iop: h.iop,
            pixel_spacing: h.pixel_spacing,
            slice_thickness: h.slice_thickness,
            transfer_syntax: &r.transfer_syntax,
            association_id: &r.association_id,
            calling_ae: &r.calling_ae,
            called_ae: &r.called_ae,
            peer: &r.peer,
            path: &r.path,
            size_bytes: r.size_bytes,
            content_hash: &r.content_hash,
        }
    }
}

/// Who sent the instance.
#[derive(Debug, Clone)]
pub struct Origin {
    pub association_id: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
}

/// Told of each instance once it is durably filed and indexed (after the success is decided, before
/// it is sent): e.g. the read-ahead of arriving series (`crate::readahead`). Must not block.
pub trait FiledHook: Send + Sync {
    /// `path`: the stored file; `content`: its bytes when the filer still holds them in memory (the
    /// journal's materialiser, called on its one thread right after placing the file, so the file at
    /// `path` holds exactly these bytes at the call).
    fn filed(
        &self,
        header: &InstanceHeader,
        origin: &Origin,
        path: &Path,
        content: Option<&Arc<Vec<u8>>>,
    );
}
