//! Multi-frame objects (Enhanced CT / MR, X-Ray 3D Craniofacial, …): the geometry and rescale of each
//! frame, read from the functional groups, so that each frame can join a stack like a single-frame slice.
//!
//! The Multi-frame Functional Groups module keeps per-frame attributes in macros (PlanePositionSequence,
//! PlaneOrientationSequence, PixelMeasuresSequence, PixelValueTransformationSequence …), each either in
//! the frame's item of PerFrameFunctionalGroupsSequence (5200,9230) or once for all frames in
//! SharedFunctionalGroupsSequence (5200,9229). A macro is looked up per frame first, then shared, then
//! (for objects that keep them outside the groups, as some X-Ray 3D exports do with RescaleSlope /
//! Intercept) at the top level of the data set. Pure logic over a parsed header, no I/O.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// Geometry and rescale of one frame of a multi-frame object (values as found; checked by the stack).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameGeometry {
    /// Frame number, 1-based (ReferencedFrameNumber of a reference to this frame).
    pub number: u32,
    pub ipp: Option<Vec<f64>>,
    pub iop: Option<Vec<f64>>,
    pub pixel_spacing: Option<Vec<f64>>,
    pub slice_thickness: Option<f64>,
    pub slope: Option<f64>,
    pub intercept: Option<f64>,
}

/// Whether the data set is an enhanced (functional-group) multi-frame object.
pub fn has_functional_groups(obj: &InMemDicomObject) -> bool {
    obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .is_some()
        || obj.get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).is_some()
}

/// The geometry of each of the `frames` frames of `obj`; `Err` with a reason when the functional groups
/// do not describe that many frames.
pub fn frame_geometries(obj: &InMemDicomObject, frames: u32) -> Result<Vec<FrameGeometry>, String> {
    let per_frame: &[InMemDicomObject] = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or(&[]);
    let shared: Option<&InMemDicomObject> = obj
        .get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first());
    if per_frame.is_empty() && shared.is_none() {
        return Err("multi-frame object without functional groups".into());
    }
    if !per_frame.is_empty() && per_frame.len() != frames as usize {
        return Err(format!(
            "PerFrameFunctionalGroupsSequence has {} item(s) for {} frame(s)",
            per_frame.len(),
            frames
        ));
    }
    Ok((0..frames)
        .map(|f| {
            let own = per_frame.get(f as usize);
            let find = |seq: Tag, attr: Tag| -> Option<Vec<f64>> {
                [own, shared]
                    .into_iter()
                    .flatten()
                    .find_map(|group| macro_floats(group, seq, attr))
            };
            let first = |v: Option<Vec<f64>>| v.and_then(|v| v.first().copied());
            let pvt = tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE;
            FrameGeometry {
                number: f + 1,
                ipp: find(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
                    .or_else(|| floats(obj, tags::IMAGE_POSITION_PATIENT).filter(|_| frames == 1)),
                iop: find(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                )
                .or_else(|| floats(obj, tags::IMAGE_ORIENTATION_PATIENT)),
                pixel_spacing: find(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)
                    .or_else(|| floats(obj, tags::PIXEL_SPACING)),
                slice_thickness: first(find(tags::PIXEL_MEASURES_SEQUENCE, tags::SLICE_THICKNESS))
                    .or_else(|| first(floats(obj, tags::SLICE_THICKNESS))),
                slope: first(find(pvt, tags::RESCALE_SLOPE))
                    .or_else(|| first(floats(obj, tags::RESCALE_SLOPE))),
                intercept: first(find(pvt, tags::RESCALE_INTERCEPT))
                    .or_else(|| first(floats(obj, tags::RESCALE_INTERCEPT))),
            }
        })
        .collect())
}

/// The shared value of a functional-group attribute (shared group, else the first frame's), for headers
/// that describe a whole multi-frame object with one value (orientation, pixel spacing, thickness).
pub fn shared_or_first_frame(obj: &InMemDicomObject, seq: Tag, attr: Tag) -> Option<Vec<f64>> {
    [
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    ]
    .into_iter()
    .filter_map(|g| obj.get(g).and_then(|e| e.items()).and_then(|i| i.first()))
    .find_map(|group| macro_floats(group, seq, attr))
}

/// `attr` of the first item of the macro sequence `seq` inside one functional-group item.
fn macro_floats(group: &InMemDicomObject, seq: Tag, attr: Tag) -> Option<Vec<f64>> {
    let item = group.get(seq)?.items()?.first()?;
    floats(item, attr)
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag)?
        .to_multi_float64()
        .ok()
        .filter(|v| !v.is_empty() && v.iter().all(|x| x.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn ds(o: &mut InMemDicomObject, tag: Tag, v: &[f64]) {
        let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        o.put(DataElement::new(
            tag,
            VR::DS,
            PrimitiveValue::Strs(s.into_iter().collect()),
        ));
    }

    fn seq(o: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
        o.put(DataElement::new(
            tag,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(items),
        ));
    }

    fn macro_item(seq_tag: Tag, attr: Tag, v: &[f64]) -> (Tag, InMemDicomObject) {
        let mut i = InMemDicomObject::new_empty();
        ds(&mut i, attr, v);
        (seq_tag, i)
    }

    fn group(macros: Vec<(Tag, InMemDicomObject)>) -> InMemDicomObject {
        let mut g = InMemDicomObject::new_empty();
        for (t, i) in macros {
            seq(&mut g, t, vec![i]);
        }
        g
    }

    fn position(z: f64) -> (Tag, InMemDicomObject) {
        macro_item(
            tags::PLANE_POSITION_SEQUENCE,
            tags::IMAGE_POSITION_PATIENT,
            &[-10.0, -20.0, z],
        )
    }

    #[test]
    fn per_frame_positions_with_shared_orientation_spacing_and_rescale() {
        let mut o = InMemDicomObject::new_empty();
        seq(
            &mut o,
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![group(vec![
                macro_item(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                    &[1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
                ),
                macro_item(
                    tags::PIXEL_MEASURES_SEQUENCE,
                    tags::PIXEL_SPACING,
                    &[0.25, 0.25],
                ),
                macro_item(
                    tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                    tags::RESCALE_INTERCEPT,
                    &[-1024.0],
                ),
            ])],
        );
        seq(
            &mut o,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![group(vec![position(5.0)]), group(vec![position(4.0)])],
        );
        let f = frame_geometries(&o, 2).unwrap();
        assert_eq!(f[0].number, 1);
        assert_eq!(f[1].number, 2);
        assert_eq!(f[1].ipp, Some(vec![-10.0, -20.0, 4.0]));
        assert_eq!(f[1].iop, Some(vec![1.0, 0.0, 0.0, 0.0, 0.0, -1.0]));
        assert_eq!(f[0].pixel_spacing, Some(vec![0.25, 0.25]));
        assert_eq!(f[0].intercept, Some(-1024.0));
        assert_eq!(f[0].slope, None);
        assert_eq!(
            shared_or_first_frame(&o, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING),
            Some(vec![0.25, 0.25])
        );
    }

    #[test]
    fn per_frame_macro_wins_over_shared_and_top_level_is_the_fallback() {
        let mut o = InMemDicomObject::new_empty();
        // X-Ray 3D style: rescale at the top level, orientation per frame
        ds(&mut o, tags::RESCALE_SLOPE, &[2.0]);
        ds(&mut o, tags::RESCALE_INTERCEPT, &[-1000.0]);
        seq(
            &mut o,
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![group(vec![macro_item(
                tags::PIXEL_MEASURES_SEQUENCE,
                tags::PIXEL_SPACING,
                &[0.3, 0.3],
            )])],
        );
        let frame = |z: f64, ps: Option<f64>| {
            let mut m = vec![
                position(z),
                macro_item(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                    &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                ),
            ];
            if let Some(ps) = ps {
                m.push(macro_item(
                    tags::PIXEL_MEASURES_SEQUENCE,
                    tags::PIXEL_SPACING,
                    &[ps, ps],
                ));
            }
            group(m)
        };
        seq(
            &mut o,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![frame(0.0, Some(0.5)), frame(1.0, None)],
        );
        let f = frame_geometries(&o, 2).unwrap();
        assert_eq!(f[0].pixel_spacing, Some(vec![0.5, 0.5]));
        assert_eq!(f[1].pixel_spacing, Some(vec![0.3, 0.3]));
        assert_eq!(f[1].iop, Some(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
        assert_eq!((f[1].slope, f[1].intercept), (Some(2.0), Some(-1000.0)));
    }

    #[test]
    fn wrong_item_count_and_missing_groups_are_refused() {
        let mut o = InMemDicomObject::new_empty();
        assert!(frame_geometries(&o, 3)
            .unwrap_err()
            .contains("without functional groups"));
        seq(
            &mut o,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![group(vec![position(0.0)]), group(vec![position(1.0)])],
        );
        let e = frame_geometries(&o, 3).unwrap_err();
        assert!(e.contains("2 item(s) for 3 frame(s)"), "{e}");
    }
}
