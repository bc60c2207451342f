//! Choosing the slices that form one regular stack: pure logic over parsed headers, no I/O.
//!
//! Localizers, slices without geometry, other series, minority orientations / sizes and duplicate
//! positions are dropped with a reason; a stack that is tilted, has gaps, irregular spacing, or is
//! genuinely mixed (no clear majority) is refused.

use super::geometry::{cross, dot, norm, orientation_from_iop, same_orientation, Geometry, Vec3};
use super::{Dropped, VolumeError};
use std::path::PathBuf;

/// The header fields of one file that decide whether and where it joins the stack.
#[derive(Debug, Clone)]
pub struct SliceHeader {
    pub path: PathBuf,
    pub series_instance_uid: String,
    pub image_type: Vec<String>,
    pub iop: Option<Vec<f64>>,
    pub ipp: Option<Vec<f64>>,
    pub pixel_spacing: Option<Vec<f64>>,
    pub rows: u32,
    pub columns: u32,
    /// NumberOfFrames of the file; 1 for a frame of an expanded multi-frame object.
    pub frames: u32,
    /// The frame number (1-based) when this header is one frame of a multi-frame object.
    pub frame: Option<u32>,
}

/// Slices that form a stack, sorted along the normal, and its geometry.
#[derive(Debug)]
pub struct Stack {
    /// Indices into the input headers, sorted by position along the normal.
    pub order: Vec<usize>,
    pub geometry: Geometry,
    pub rows: usize,
    pub columns: usize,
    pub dropped: Vec<Dropped>,
}

/// A majority group must hold at least this share of the slices for the others to be dropped rather than
/// the whole stack refused.
const MAJORITY: f64 = 0.75;

pub fn build_stack(headers: &[SliceHeader], min_slices: usize) -> Result<Stack, VolumeError> {
    let mut dropped = Vec::new();
    let mut drop = |h: &SliceHeader, reason: String| {
        dropped.push(Dropped {
            path: h.path.clone(),
            reason: match h.frame {
                Some(f) => format!("frame {f}: {reason}"),
                None => reason,
            },
        })
    };

    // 1. usable at all: geometry present, not a localizer, single frame
    let mut cand: Vec<usize> = Vec::new();
    for (n, h) in headers.iter().enumerate() {
        if h.image_type
            .iter()
            .any(|t| t.eq_ignore_ascii_case("LOCALIZER"))
        {
            drop(h, "localizer (ImageType LOCALIZER)".into());
        } else if h.frames > 1 {
            drop(
                h,
                format!(
                    "multi-frame image ({} frames) without functional groups (no per-frame positions)",
                    h.frames
                ),
            );
        } else if h.iop.as_deref().and_then(orientation_from_iop).is_none() {
            drop(h, "no valid ImageOrientationPatient".into());
        } else if h
            .ipp
            .as_ref()
            .is_none_or(|p| p.len() != 3 || p.iter().any(|v| !v.is_finite()))
        {
            drop(h, "no valid ImagePositionPatient".into());
        } else if h
            .pixel_spacing
            .as_ref()
            .is_none_or(|p| p.len() != 2 || p.iter().any(|v| !(*v > 0.0)))
        {
            drop(h, "no valid PixelSpacing".into());
        } else if h.rows == 0 || h.columns == 0 {
            drop(h, "no Rows / Columns".into());
        } else {
            cand.push(n);
        }
    }

    // 2. one series: the one with most slices
    let series = majority(&cand, |a, b| {
        headers[a].series_instance_uid == headers[b].series_instance_uid
    });
    if let Some(best) = series.first() {
        let keep: Vec<usize> = best.clone();
        for g in &series[1..] {
            for &n in g {
                drop(
                    &headers[n],
                    format!(
                        "belongs to another series ({})",
                        headers[n].series_instance_uid
                    ),
                );
            }
        }
        cand = keep;
    }
    if cand.is_empty() {
        return Err(VolumeError::NoSlices {
            dir: headers
                .first()
                .and_then(|h| h.path.parent())
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            dropped: dropped.len(),
            example: dropped
                .first()
                .map(|d| d.reason.clone())
                .unwrap_or_else(|| "no DICOM files".into()),
        });
    }

    let orient = |n: usize| {
        headers[n]
            .iop
            .as_deref()
            .and_then(orientation_from_iop)
            .unwrap_or_default()
    };
    // 3. one orientation
    let groups = majority(&cand, |a, b| same_orientation(orient(a), orient(b), 1e-3));
    let total = cand.len();
    if groups.len() > 1 && (groups[0].len() as f64) < MAJORITY * total as f64 {
        return Err(VolumeError::MixedOrientation {
            groups: groups.len(),
            largest: groups[0].len(),
            total,
        });
    }
    for g in &groups[1..] {
        for &n in g {
            drop(&headers[n], "orientation differs from the stack".into());
        }
    }
    cand = groups[0].clone();

    // 4. one size and pixel spacing
    let same_size = |a: usize, b: usize| {
        let (ha, hb) = (&headers[a], &headers[b]);
        let (pa, pb) = (
            ha.pixel_spacing.as_deref().unwrap_or(&[]),
            hb.pixel_spacing.as_deref().unwrap_or(&[]),
        );
        ha.rows == hb.rows
            && ha.columns == hb.columns
            && pa.len() == 2
            && pb.len() == 2
            && (pa[0] - pb[0]).abs() < 1e-3
            && (pa[1] - pb[1]).abs() < 1e-3
    };
    let groups = majority(&cand, same_size);
    let total = cand.len();
    if groups.len() > 1 && (groups[0].len() as f64) < MAJORITY * total as f64 {
        return Err(VolumeError::MixedSizes {
            groups: groups.len(),
            largest: groups[0].len(),
            total,
        });
    }
    for g in &groups[1..] {
        for &n in g {
            let h = &headers[n];
            drop(
                h,
                format!(
                    "size or pixel spacing differs from the stack ({}x{})",
                    h.columns, h.rows
                ),
            );
        }
    }
    cand = groups[0].clone();

    // 5. sort along the normal, drop duplicate positions
    let (row_dir, col_dir) = orient(cand[0]);
    let normal = cross(row_dir, col_dir);
    let pos = |n: usize| -> Vec3 {
        let p = headers[n].ipp.as_deref().unwrap_or(&[0.0, 0.0, 0.0]);
        [p[0], p[1], p[2]]
    };
    let mut sorted: Vec<(f64, usize)> = cand.iter().map(|&n| (dot(pos(n), normal), n)).collect();
    sorted.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| headers[a.1].path.cmp(&headers[b.1].path))
            .then_with(|| headers[a.1].frame.cmp(&headers[b.1].frame))
    });
    let mut order: Vec<(f64, usize)> = Vec::with_capacity(sorted.len());
    for (d, n) in sorted {
        match order.last() {
            Some(&(pd, _)) if (d - pd).abs() < 1e-3 => drop(
                &headers[n],
                format!("duplicate slice position {d:.2} mm along the normal"),
            ),
            _ => order.push((d, n)),
        }
    }
    if order.len() < min_slices.max(2) {
        return Err(VolumeError::TooFewSlices {
            found: order.len(),
            min: min_slices.max(2),
        });
    }

    // 6. regularity: no tilt, no gaps, regular spacing
    let p0 = pos(order[0].1);
    let mut worst_tilt: f64 = 0.0;
    for &(d, n) in &order[1..] {
        let p = pos(n);
        let delta = [p[0] - p0[0], p[1] - p0[1], p[2] - p0[2]];
        let along = d - order[0].0;
        let off = norm([
            delta[0] - along * normal[0],
            delta[1] - along * normal[1],
            delta[2] - along * normal[2],
        ]);
        worst_tilt = worst_tilt.max(off.atan2(along).to_degrees().abs());
    }
    if worst_tilt > 0.5 {
        return Err(VolumeError::Tilted {
            angle_deg: worst_tilt,
        });
    }
    let mut gaps: Vec<f64> = order.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let spacing_list = gaps.clone();
    gaps.sort_by(f64::total_cmp);
    let spacing = gaps[gaps.len() / 2];
    for (w, g) in order.windows(2).zip(&spacing_list) {
        if *g > 1.5 * spacing {
            return Err(VolumeError::Gap {
                at_mm: w[0].0,
                gap_mm: *g,
                spacing_mm: spacing,
            });
        }
    }
    let (min_g, max_g) = (gaps[0], gaps[gaps.len() - 1]);
    if min_g < 0.9 * spacing || max_g > 1.1 * spacing {
        return Err(VolumeError::IrregularSpacing {
            min_mm: min_g,
            max_mm: max_g,
        });
    }
    // mean spacing keeps the affine exact at both ends of the stack
    let spacing = (order[order.len() - 1].0 - order[0].0) / (order.len() - 1) as f64;

    let first = &headers[order[0].1];
    let ps = first.pixel_spacing.as_deref().unwrap_or(&[1.0, 1.0]);
    let geometry = Geometry {
        origin: pos(order[0].1),
        row_dir,
        col_dir,
        normal,
        pixel_spacing: [ps[0], ps[1]],
        slice_spacing: spacing,
    };
    Ok(Stack {
        order: order.into_iter().map(|(_, n)| n).collect(),
        geometry,
        rows: first.rows as usize,
        columns: first.columns as usize,
        dropped,
    })
}

/// Groups of equal elements (by `same`, compared with each group's first member), largest first.
fn majority(items: &[usize], same: impl Fn(usize, usize) -> bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &n in items {
        match groups.iter_mut().find(|g| same(g[0], n)) {
            Some(g) => g.push(n),
            None => groups.push(vec![n]),
        }
    }
    groups.sort_by(|a, b| b.len().cmp(&a.len()));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(n: usize, z: f64) -> SliceHeader {
        SliceHeader {
            path: PathBuf::from(format!("f{n:03}.dcm")),
            series_instance_uid: "1.2.3".into(),
            image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "AXIAL".into()],
            iop: Some(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            ipp: Some(vec![-100.0, -100.0, z]),
            pixel_spacing: Some(vec![0.8, 0.8]),
            rows: 64,
            columns: 64,
            frames: 1,
            frame: None,
        }
    }

    fn stack_of(zs: &[f64]) -> Vec<SliceHeader> {
        zs.iter().enumerate().map(|(n, &z)| hdr(n, z)).collect()
    }

    #[test]
    fn sorts_by_position_not_by_file_order() {
        let h = stack_of(&[10.0, 0.0, 5.0, 2.5, 7.5]);
        let s = build_stack(&h, 3).unwrap();
        assert_eq!(s.order, vec![1, 3, 2, 4, 0]);
        assert!((s.geometry.slice_spacing - 2.5).abs() < 1e-9);
        assert_eq!(s.geometry.origin[2], 0.0);
    }

    #[test]
    fn drops_localizer_and_odd_size_and_says_why() {
        let mut h = stack_of(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        h[2].image_type = vec!["ORIGINAL".into(), "PRIMARY".into(), "LOCALIZER".into()];
        h[2].iop = Some(vec![1.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
        h[2].ipp = Some(vec![0.0, 0.0, 0.0]);
        let mut extra = hdr(9, 6.0);
        extra.rows = 32;
        h.push(extra);
        // the localizer leaves a gap at 2.0 -> put a slice there
        h.push(hdr(10, 2.0));
        let s = build_stack(&h, 3).unwrap();
        assert_eq!(s.order.len(), 6);
        let reasons: Vec<&str> = s.dropped.iter().map(|d| d.reason.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.contains("localizer")),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r.contains("size")), "{reasons:?}");
    }

    #[test]
    fn refuses_gap_tilt_too_few_and_mixed_sizes() {
        let h = stack_of(&[0.0, 1.0, 2.0, 5.0, 6.0]);
        assert!(matches!(build_stack(&h, 3), Err(VolumeError::Gap { .. })));

        let mut h = stack_of(&[0.0, 1.0, 2.0, 3.0]);
        for (n, s) in h.iter_mut().enumerate() {
            s.ipp = Some(vec![-100.0, -100.0 + 0.2 * n as f64, n as f64]); // ~11° tilt
        }
        assert!(matches!(
            build_stack(&h, 3),
            Err(VolumeError::Tilted { .. })
        ));

        let h = stack_of(&[0.0, 1.0]);
        assert!(matches!(
            build_stack(&h, 3),
            Err(VolumeError::TooFewSlices { found: 2, min: 3 })
        ));

        let mut h = stack_of(&[0.0, 1.0, 2.0, 3.0]);
        h[2].columns = 32;
        h[3].columns = 32;
        assert!(matches!(
            build_stack(&h, 2),
            Err(VolumeError::MixedSizes { .. })
        ));
    }

    #[test]
    fn flipped_orientation_and_feet_first_order_sort_along_the_normal() {
        let mut h = stack_of(&[0.0, -2.0, -4.0, -6.0]);
        for s in &mut h {
            s.iop = Some(vec![-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]);
        }
        let s = build_stack(&h, 3).unwrap();
        // normal is +z: slice 0 is the most inferior
        assert_eq!(s.order, vec![3, 2, 1, 0]);
        assert_eq!(s.geometry.normal, [0.0, 0.0, 1.0]);
    }

    #[test]
    fn duplicate_positions_are_dropped() {
        let mut h = stack_of(&[0.0, 1.0, 2.0, 3.0]);
        h.push(hdr(7, 2.0));
        let s = build_stack(&h, 3).unwrap();
        assert_eq!(s.order.len(), 4);
        assert!(s.dropped[0].reason.contains("duplicate"));
    }

    /// The frames of one multi-frame object: same file, told apart by frame number.
    fn frames_of(zs: &[f64]) -> Vec<SliceHeader> {
        zs.iter()
            .enumerate()
            .map(|(n, &z)| SliceHeader {
                path: PathBuf::from("enhanced.dcm"),
                frame: Some(n as u32 + 1),
                ..hdr(0, z)
            })
            .collect()
    }

    #[test]
    fn frames_sort_along_the_normal_with_spacing_from_positions() {
        // frames stored head first (descending z), as scanners often do
        let h = frames_of(&[4.0, 3.0, 2.0, 1.0, 0.0]);
        let s = build_stack(&h, 3).unwrap();
        assert_eq!(s.order, vec![4, 3, 2, 1, 0]);
        let frames: Vec<Option<u32>> = s.order.iter().map(|&n| h[n].frame).collect();
        assert_eq!(frames, [Some(5), Some(4), Some(3), Some(2), Some(1)]);
        assert!((s.geometry.slice_spacing - 1.0).abs() < 1e-9);
        assert_eq!(s.geometry.origin[2], 0.0);
    }

    #[test]
    fn duplicate_and_missing_frames_are_named_by_frame_number() {
        let mut h = frames_of(&[0.0, 1.0, 2.0, 3.0]);
        h.push(SliceHeader {
            frame: Some(5),
            ..h[2].clone()
        });
        let s = build_stack(&h, 3).unwrap();
        assert_eq!(s.order.len(), 4);
        assert!(
            s.dropped[0].reason.starts_with("frame 5: duplicate"),
            "{:?}",
            s.dropped
        );

        let h = frames_of(&[0.0, 1.0, 2.0, 4.0, 5.0]);
        assert!(matches!(build_stack(&h, 3), Err(VolumeError::Gap { .. })));
    }

    #[test]
    fn multiframe_without_functional_groups_is_dropped_with_a_reason() {
        let mut h = stack_of(&[0.0, 1.0, 2.0]);
        h.push(SliceHeader {
            frames: 40,
            ..hdr(9, 3.0)
        });
        let s = build_stack(&h, 3).unwrap();
        assert_eq!(s.order.len(), 3);
        assert!(s.dropped[0].reason.contains("without functional groups"));
    }
}
