//! Writing a phantom as ONE multi-frame object instead of a folder of slices: Enhanced CT Image Storage
//! or X-Ray 3D Craniofacial Image Storage (what many CBCT devices export), Explicit VR Little Endian.
//!
//! The frames carry their position in PerFrameFunctionalGroupsSequence > PlanePositionSequence; what
//! all frames share (orientation, pixel measures, rescale, frame type, anatomy, acquisition details) is
//! in SharedFunctionalGroupsSequence. Frames are written in the order of the single-frame export's
//! InstanceNumber (not necessarily along the slice normal), so a reader has to sort them. The mandatory
//! modules of each IOD are filled with plausible values so that `dciodvfy` reports no error.

use crate::slices::{PhantomWriteError, SeriesTags, SlicePixels};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::FileMetaTableBuilder;
use segnode_imaging::result::dataset::{
    code_item, ds, ds_multi, item, put_seq, put_str, put_u16, Obj,
};
use segnode_imaging::segment::codes::CodedConcept;
use std::path::Path;

/// Which multi-frame IOD to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MultiFrame {
    /// X-Ray 3D Craniofacial Image Storage (1.2.840.10008.5.1.4.1.1.13.1.2), the CBCT export.
    #[value(name = "xray3d")]
    XRay3d,
    /// Enhanced CT Image Storage (1.2.840.10008.5.1.4.1.1.2.1).
    EnhancedCt,
}

impl MultiFrame {
    pub fn sop_class_uid(self) -> &'static str {
        match self {
            MultiFrame::XRay3d => uids::X_RAY3_D_CRANIOFACIAL_IMAGE_STORAGE,
            MultiFrame::EnhancedCt => uids::ENHANCED_CT_IMAGE_STORAGE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MultiFrame::XRay3d => "xray3d",
            MultiFrame::EnhancedCt => "enhanced-ct",
        }
    }
}

/// One frame: its position and stored pixels.
pub(super) struct Frame {
    pub position: [f64; 3],
    pub pixels: SlicePixels,
}

/// UIDs of the object beyond the series' ones (deterministic per phantom seed).
pub(super) struct ObjectUids {
    pub sop_instance: String,
    pub dimension_organization: String,
    pub irradiation_event: String,
}

/// The anatomy of the phantom, for Frame Anatomy (SNOMED CT code) and its laterality.
pub(super) struct Anatomy {
    pub region: CodedConcept,
    pub laterality: &'static str,
}

/// Write `frames` (in frame order) as one multi-frame object at `path`.
pub(super) fn write_multiframe(
    path: &Path,
    kind: MultiFrame,
    t: &SeriesTags,
    anatomy: &Anatomy,
    u: &ObjectUids,
    frames: Vec<Frame>,
) -> Result<(), PhantomWriteError> {
    let derr = |reason: String| PhantomWriteError::Dicom {
        path: path.to_path_buf(),
        reason,
    };
    let first = frames
        .first()
        .ok_or_else(|| derr("no frame to write".into()))?;
    let (bits_stored, signed, intercept, padding) = (
        first.pixels.bits_stored,
        first.pixels.signed,
        first.pixels.intercept,
        first.pixels.padding,
    );
    let datetime = format!("{}{}", t.date, t.time);
    let frame_type = match kind {
        MultiFrame::EnhancedCt | MultiFrame::XRay3d => "ORIGINAL\\PRIMARY\\VOLUME\\NONE",
    };
    let mut o = Obj::new_empty();
    let s = |o: &mut Obj, tag: Tag, vr: VR, v: &str| put_str(o, tag, vr, v);

    // SOP Common, Patient, General Study
    s(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    s(&mut o, tags::SOP_CLASS_UID, VR::UI, kind.sop_class_uid());
    s(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &u.sop_instance);
    s(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, t.date);
    s(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, t.time);
    s(&mut o, tags::PATIENT_NAME, VR::PN, &t.patient_name);
    s(&mut o, tags::PATIENT_ID, VR::LO, &t.patient_id);
    s(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, t.birth_date);
    s(&mut o, tags::PATIENT_SEX, VR::CS, "O");
    s(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, t.study);
    s(&mut o, tags::STUDY_DATE, VR::DA, t.date);
    s(&mut o, tags::STUDY_TIME, VR::TM, t.time);
    s(&mut o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    s(&mut o, tags::STUDY_ID, VR::SH, "1");
    s(&mut o, tags::ACCESSION_NUMBER, VR::SH, t.accession);
    // General / Enhanced Series
    s(&mut o, tags::MODALITY, VR::CS, "CT");
    s(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, t.series);
    s(&mut o, tags::SERIES_NUMBER, VR::IS, t.series_number);
    s(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &t.series_description,
    );
    s(&mut o, tags::BODY_PART_EXAMINED, VR::CS, t.body_part);
    s(&mut o, tags::PATIENT_POSITION, VR::CS, t.patient_position);
    // Frame of Reference
    s(
        &mut o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        t.frame_of_reference,
    );
    s(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    // General / Enhanced General Equipment
    s(&mut o, tags::MANUFACTURER, VR::LO, "segnode phantom");
    s(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "phantom");
    s(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "PH-1");
    s(
        &mut o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    // Image (Enhanced CT Image / X-Ray 3D Image)
    s(&mut o, tags::IMAGE_TYPE, VR::CS, frame_type);
    s(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    s(&mut o, tags::CONTENT_DATE, VR::DA, t.date);
    s(&mut o, tags::CONTENT_TIME, VR::TM, t.time);
    if kind == MultiFrame::EnhancedCt {
        s(&mut o, tags::ACQUISITION_NUMBER, VR::IS, "1");
        s(&mut o, tags::ACQUISITION_DATE_TIME, VR::DT, &datetime);
        fd(&mut o, tags::ACQUISITION_DURATION, &[10.0]);
    }
    // Common CT/MR Image Description, image level
    s(&mut o, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME");
    s(&mut o, tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME");
    s(
        &mut o,
        tags::VOLUME_BASED_CALCULATION_TECHNIQUE,
        VR::CS,
        "NONE",
    );
    s(&mut o, tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH");
    s(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    s(&mut o, tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO");
    s(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    s(&mut o, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
    // Image Pixel
    put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    s(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    s(
        &mut o,
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &frames.len().to_string(),
    );
    put_u16(&mut o, tags::ROWS, t.rows as u16);
    put_u16(&mut o, tags::COLUMNS, t.columns as u16);
    put_u16(&mut o, tags::BITS_ALLOCATED, 16);
    put_u16(&mut o, tags::BITS_STORED, bits_stored);
    put_u16(&mut o, tags::HIGH_BIT, bits_stored - 1);
    put_u16(&mut o, tags::PIXEL_REPRESENTATION, u16::from(signed));
    if let Some(fill) = padding {
        o.put(DataElement::new(
            tags::PIXEL_PADDING_VALUE,
            VR::SS,
            PrimitiveValue::from(fill),
        ));
    }
    if kind == MultiFrame::XRay3d {
        xray3d_modules(&mut o, t, &datetime);
    }
    // Acquisition Context (empty is allowed)
    put_seq(&mut o, tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]);
    // Multi-frame Dimension: frames indexed by their position
    put_seq(
        &mut o,
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(|i| {
            s(
                i,
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                &u.dimension_organization,
            )
        })],
    );
    s(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    put_seq(
        &mut o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![item(|i| {
            s(
                i,
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                &u.dimension_organization,
            );
            i.put(DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::from(tags::IMAGE_POSITION_PATIENT),
            ));
            i.put(DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::from(tags::PLANE_POSITION_SEQUENCE),
            ));
            s(
                i,
                tags::DIMENSION_DESCRIPTION_LABEL,
                VR::LO,
                "Image Position Patient",
            );
        })],
    );

    // Shared functional groups
    let shared = item(|g| {
        put_seq(
            g,
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(|p| {
                s(p, tags::PIXEL_SPACING, VR::DS, &ds_multi(&t.pixel_spacing));
                s(p, tags::SLICE_THICKNESS, VR::DS, &ds(t.slice_thickness));
            })],
        );
        put_seq(
            g,
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(|p| {
                s(
                    p,
                    tags::IMAGE_ORIENTATION_PATIENT,
                    VR::DS,
                    &ds_multi(&t.iop),
                )
            })],
        );
        put_seq(
            g,
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            vec![item(|p| {
                s(p, tags::RESCALE_INTERCEPT, VR::DS, intercept);
                s(p, tags::RESCALE_SLOPE, VR::DS, "1");
                s(p, tags::RESCALE_TYPE, VR::LO, "HU");
            })],
        );
        put_seq(
            g,
            tags::FRAME_VOILUT_SEQUENCE,
            vec![item(|p| {
                s(p, tags::WINDOW_CENTER, VR::DS, "40");
                s(p, tags::WINDOW_WIDTH, VR::DS, "400");
            })],
        );
        put_seq(
            g,
            tags::FRAME_ANATOMY_SEQUENCE,
            vec![item(|p| {
                put_seq(
                    p,
                    tags::ANATOMIC_REGION_SEQUENCE,
                    vec![code_item(&anatomy.region)],
                );
                s(p, tags::FRAME_LATERALITY, VR::CS, anatomy.laterality);
            })],
        );
        match kind {
            MultiFrame::EnhancedCt => {
                put_seq(
                    g,
                    tags::IRRADIATION_EVENT_IDENTIFICATION_SEQUENCE,
                    vec![item(|p| {
                        s(p, tags::IRRADIATION_EVENT_UID, VR::UI, &u.irradiation_event)
                    })],
                );
                enhanced_ct_shared(g, t, frame_type)
            }
            MultiFrame::XRay3d => xray3d_shared(g, frame_type),
        }
    });
    put_seq(
        &mut o,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    );

    // Per-frame functional groups, and the pixels in frame order
    let mut per_frame = Vec::with_capacity(frames.len());
    // dimension index of a frame: its rank along the slice normal
    let normal = segnode_imaging::volume::geometry::cross(
        [t.iop[0], t.iop[1], t.iop[2]],
        [t.iop[3], t.iop[4], t.iop[5]],
    );
    let along = |p: [f64; 3]| segnode_imaging::volume::geometry::dot(p, normal);
    let mut ranks: Vec<usize> = (0..frames.len()).collect();
    ranks.sort_by(|&a, &b| along(frames[a].position).total_cmp(&along(frames[b].position)));
    let mut rank_of = vec![0usize; frames.len()];
    for (r, &f) in ranks.iter().enumerate() {
        rank_of[f] = r;
    }
    let mut bytes = Vec::with_capacity(frames.len() * first.pixels.bytes.len());
    for (f, fr) in frames.iter().enumerate() {
        per_frame.push(item(|g| {
            put_seq(
                g,
                tags::FRAME_CONTENT_SEQUENCE,
                vec![item(|c| {
                    c.put(DataElement::new(
                        tags::FRAME_ACQUISITION_NUMBER,
                        VR::US,
                        PrimitiveValue::from(1u16),
                    ));
                    s(c, tags::FRAME_REFERENCE_DATE_TIME, VR::DT, &datetime);
                    s(c, tags::FRAME_ACQUISITION_DATE_TIME, VR::DT, &datetime);
                    c.put(DataElement::new(
                        tags::FRAME_ACQUISITION_DURATION,
                        VR::FD,
                        PrimitiveValue::from(10.0f64),
                    ));
                    c.put(DataElement::new(
                        tags::DIMENSION_INDEX_VALUES,
                        VR::UL,
                        PrimitiveValue::from(rank_of[f] as u32 + 1),
                    ));
                })],
            );
            put_seq(
                g,
                tags::PLANE_POSITION_SEQUENCE,
                vec![item(|p| {
                    s(
                        p,
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        &ds_multi(&fr.position),
                    )
                })],
            );
        }));
        bytes.extend_from_slice(&fr.pixels.bytes);
    }
    put_seq(
        &mut o,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame,
    );
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(bytes),
    ));

    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(kind.sop_class_uid())
        .media_storage_sop_instance_uid(u.sop_instance.as_str())
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(segnode_imaging::IMPLEMENTATION_CLASS_UID)
        .build()
        .map_err(|e| derr(e.to_string()))?;
    o.with_exact_meta(meta)
        .write_to_file(path)
        .map_err(|e| derr(e.to_string()))
}

fn fd(o: &mut Obj, tag: Tag, v: &[f64]) {
    o.put(DataElement::new(
        tag,
        VR::FD,
        PrimitiveValue::F64(v.iter().copied().collect()),
    ));
}

/// Shared functional groups of the Enhanced CT Image IOD beyond the common ones: frame type, and the
/// acquisition / reconstruction macros an ORIGINAL image must carry (a helical scan, made-up values).
fn enhanced_ct_shared(g: &mut Obj, t: &SeriesTags, frame_type: &str) {
    let s = |o: &mut Obj, tag: Tag, vr: VR, v: &str| put_str(o, tag, vr, v);
    let one = |g: &mut Obj, tag: Tag, f: &dyn Fn(&mut Obj)| {
        put_seq(g, tag, vec![item(|p| f(p))]);
    };
    let fov = t.pixel_spacing[1] * t.columns as f64;
    one(g, tags::CT_IMAGE_FRAME_TYPE_SEQUENCE, &|p| {
        s(p, tags::FRAME_TYPE, VR::CS, frame_type);
        s(p, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME");
        s(p, tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME");
        s(p, tags::VOLUME_BASED_CALCULATION_TECHNIQUE, VR::CS, "NONE");
    });
    one(g, tags::CT_ACQUISITION_TYPE_SEQUENCE, &|p| {
        s(p, tags::ACQUISITION_TYPE, VR::CS, "SPIRAL");
        s(p, tags::CONSTANT_VOLUME_FLAG, VR::CS, "NO");
        s(p, tags::FLUOROSCOPY_FLAG, VR::CS, "NO");
    });
    one(g, tags::CT_ACQUISITION_DETAILS_SEQUENCE, &|p| {
        s(p, tags::DATA_COLLECTION_DIAMETER, VR::DS, "500");
        s(p, tags::ROTATION_DIRECTION, VR::CS, "CW");
        fd(p, tags::REVOLUTION_TIME, &[0.5]);
        fd(p, tags::SINGLE_COLLIMATION_WIDTH, &[0.625]);
        fd(p, tags::TOTAL_COLLIMATION_WIDTH, &[40.0]);
        s(p, tags::TABLE_HEIGHT, VR::DS, "150");
        s(p, tags::GANTRY_DETECTOR_TILT, VR::DS, "0");
    });
    one(g, tags::CT_TABLE_DYNAMICS_SEQUENCE, &|p| {
        fd(p, tags::TABLE_SPEED, &[80.0]);
        fd(p, tags::TABLE_FEED_PER_ROTATION, &[40.0]);
        fd(p, tags::SPIRAL_PITCH_FACTOR, &[1.0]);
    });
    one(g, tags::CT_POSITION_SEQUENCE, &|p| {
        fd(p, tags::TABLE_POSITION, &[0.0]);
        fd(
            p,
            tags::RECONSTRUCTION_TARGET_CENTER_PATIENT,
            &[0.0, 0.0, 0.0],
        );
        fd(p, tags::DATA_COLLECTION_CENTER_PATIENT, &[0.0, 0.0, 0.0]);
    });
    one(g, tags::CT_GEOMETRY_SEQUENCE, &|p| {
        s(p, tags::DISTANCE_SOURCE_TO_DETECTOR, VR::DS, "1000");
        fd(p, tags::DISTANCE_SOURCE_TO_DATA_COLLECTION_CENTER, &[550.0]);
    });
    one(g, tags::CT_RECONSTRUCTION_SEQUENCE, &|p| {
        s(
            p,
            tags::RECONSTRUCTION_ALGORITHM,
            VR::CS,
            "FILTER_BACK_PROJ",
        );
        s(p, tags::CONVOLUTION_KERNEL, VR::SH, "STANDARD");
        s(p, tags::CONVOLUTION_KERNEL_GROUP, VR::CS, "SOFT_TISSUE");
        s(p, tags::RECONSTRUCTION_DIAMETER, VR::DS, &ds(fov));
        fd(p, tags::RECONSTRUCTION_PIXEL_SPACING, &t.pixel_spacing);
        fd(p, tags::RECONSTRUCTION_ANGLE, &[360.0]);
        s(p, tags::IMAGE_FILTER, VR::SH, "NONE");
    });
    one(g, tags::CT_EXPOSURE_SEQUENCE, &|p| {
        fd(p, tags::EXPOSURE_TIME_INMS, &[500.0]);
        fd(p, tags::X_RAY_TUBE_CURRENT_INM_A, &[200.0]);
        fd(p, tags::EXPOSURE_INM_AS, &[100.0]);
        s(p, tags::EXPOSURE_MODULATION_TYPE, VR::CS, "NONE");
    });
    one(g, tags::CTX_RAY_DETAILS_SEQUENCE, &|p| {
        s(p, tags::KVP, VR::DS, t.kvp);
        s(p, tags::FOCAL_SPOTS, VR::DS, "0.7");
        s(p, tags::FILTER_TYPE, VR::SH, "BODY");
        s(p, tags::FILTER_MATERIAL, VR::CS, "ALUMINUM");
    });
}

/// Shared functional groups of the X-Ray 3D Craniofacial Image IOD beyond the common ones.
fn xray3d_shared(g: &mut Obj, frame_type: &str) {
    put_seq(
        g,
        tags::X_RAY3_D_FRAME_TYPE_SEQUENCE,
        vec![item(|p| {
            put_str(p, tags::FRAME_TYPE, VR::CS, frame_type);
            put_str(p, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME");
            put_str(p, tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME");
            put_str(p, tags::VOLUME_BASED_CALCULATION_TECHNIQUE, VR::CS, "NONE");
            put_u16(p, tags::RECONSTRUCTION_INDEX, 1);
        })],
    );
}

/// The X-Ray 3D Craniofacial Image Contributing Sources, Acquisition and Reconstruction modules of an
/// ORIGINAL volume (one made-up rotational acquisition reconstructed by filtered back projection).
fn xray3d_modules(o: &mut Obj, t: &SeriesTags, datetime: &str) {
    let s = |o: &mut Obj, tag: Tag, vr: VR, v: &str| put_str(o, tag, vr, v);
    // the projections the volume was reconstructed from (not part of the phantom)
    put_seq(
        o,
        tags::CONTRIBUTING_SOURCES_SEQUENCE,
        vec![item(|p| {
            s(p, tags::MANUFACTURER, VR::LO, "segnode phantom");
            s(p, tags::MANUFACTURER_MODEL_NAME, VR::LO, "phantom");
            s(p, tags::ACQUISITION_DATE_TIME, VR::DT, datetime);
            put_u16(p, tags::ROWS, 768);
            put_u16(p, tags::COLUMNS, 768);
            put_u16(p, tags::BITS_STORED, 14);
            s(p, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        })],
    );
    put_seq(
        o,
        tags::X_RAY3_D_ACQUISITION_SEQUENCE,
        vec![item(|p| {
            s(p, tags::DETECTOR_TYPE, VR::CS, "SCINTILLATOR");
            s(p, tags::KVP, VR::DS, t.kvp);
        })],
    );
    put_seq(
        o,
        tags::X_RAY3_D_RECONSTRUCTION_SEQUENCE,
        vec![item(|p| {
            s(
                p,
                tags::RECONSTRUCTION_DESCRIPTION,
                VR::LO,
                "phantom volume",
            );
            s(p, tags::APPLICATION_NAME, VR::LO, "segnode phantom");
            s(
                p,
                tags::APPLICATION_VERSION,
                VR::LO,
                env!("CARGO_PKG_VERSION"),
            );
            s(p, tags::APPLICATION_MANUFACTURER, VR::LO, "segnode");
            s(p, tags::ALGORITHM_TYPE, VR::CS, "FILTER_BACK_PROJ");
            put_u16(p, tags::ACQUISITION_INDEX, 1);
        })],
    );
}
