//! Does a set of slices form one contiguous stack? The evidence the completion tracker needs before it
//! trusts an association release: same orientation and size, positions stepping evenly along the slice
//! normal, no gap, no two slices at one position, no in-plane shift between slices.

/// Geometry of one slice (instance), the input of the stack check.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub sop_uid: String,
    pub ipp: Option<[f64; 3]>,
    pub iop: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub number_of_frames: Option<i64>,
}

/// The stack the slices form, when they do.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub slices: usize,
    /// Median step along the normal, mm.
    pub spacing: f64,
}

/// Why the slices are not (yet) one stack.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StackProblem {
    #[error("no slice geometry (non-image or multi-frame objects)")]
    NoGeometry,
    #[error("{0} of {1} instances lack position, orientation or size")]
    MissingGeometry(usize, usize),
    #[error("slices have different orientations")]
    MixedOrientation,
    #[error("slices have different sizes or pixel spacings")]
    MixedSize,
    #[error("two slices at the same position ({0:.3} mm along the normal)")]
    DuplicatePosition(f64),
    #[error("gap of {gap:.3} mm where the step is {step:.3} mm (missing slices?)")]
    Gap { gap: f64, step: f64 },
    #[error("irregular step {found:.3} mm where the median is {step:.3} mm")]
    Irregular { found: f64, step: f64 },
    #[error("slices are shifted in-plane ({0:.2} mm): gantry tilt or not one stack")]
    Sheared(f64),
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Check the slices; `tolerance` is the allowed deviation of each step from the median step, as a
/// fraction.
pub fn check_stack(slices: &[Slice], tolerance: f64) -> Result<Stack, StackProblem> {
    let with_geometry: Vec<_> = slices
        .iter()
        .filter_map(|s| Some((s.ipp?, s.iop?, s.pixel_spacing?, s.rows?, s.columns?)))
        .collect();
    if with_geometry.is_empty() {
        return Err(StackProblem::NoGeometry);
    }
    if with_geometry.len() < slices.len() {
        return Err(StackProblem::MissingGeometry(
            slices.len() - with_geometry.len(),
            slices.len(),
        ));
    }
    let (_, iop0, ps0, rows0, cols0) = with_geometry[0];
    let row = [iop0[0], iop0[1], iop0[2]];
    let col = [iop0[3], iop0[4], iop0[5]];
    let normal = cross(row, col);
    for (_, iop, ps, rows, cols) in &with_geometry {
        if iop
            .iter()
            .zip(iop0.iter())
            .any(|(a, b)| (a - b).abs() > 1e-3)
        {
            return Err(StackProblem::MixedOrientation);
        }
        if *rows != rows0
            || *cols != cols0
            || (ps[0] - ps0[0]).abs() > 1e-3
            || (ps[1] - ps0[1]).abs() > 1e-3
        {
            return Err(StackProblem::MixedSize);
        }
    }
    let mut pos: Vec<(f64, [f64; 3])> = with_geometry
        .iter()
        .map(|(ipp, ..)| (dot(*ipp, normal), *ipp))
        .collect();
    pos.sort_by(|a, b| a.0.total_cmp(&b.0));
    if pos.len() == 1 {
        return Ok(Stack {
            slices: 1,
            spacing: 0.0,
        });
    }
    let steps: Vec<f64> = pos.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let step = sorted[sorted.len() / 2];
    for (i, s) in steps.iter().enumerate() {
        if *s < 1e-3 {
            return Err(StackProblem::DuplicatePosition(pos[i].0));
        }
    }
    if step < 1e-3 {
        return Err(StackProblem::DuplicatePosition(pos[0].0));
    }
    let slack = tolerance * step + 0.01;
    for s in &steps {
        if *s > 1.5 * step {
            return Err(StackProblem::Gap { gap: *s, step });
        }
        if (s - step).abs() > slack {
            return Err(StackProblem::Irregular { found: *s, step });
        }
    }
    // every position must sit on the line through the first along the normal
    let first = pos[0].1;
    let max_shift = pos
        .iter()
        .map(|(d, p)| {
            let along = d - pos[0].0;
            let delta = [
                p[0] - first[0] - along * normal[0],
                p[1] - first[1] - along * normal[1],
                p[2] - first[2] - along * normal[2],
            ];
            dot(delta, delta).sqrt()
        })
        .fold(0.0f64, f64::max);
    if max_shift > (0.5 * ps0[0].min(ps0[1])).max(0.05) {
        return Err(StackProblem::Sheared(max_shift));
    }
    Ok(Stack {
        slices: pos.len(),
        spacing: step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(z: f64) -> Slice {
        Slice {
            sop_uid: format!("1.{}", (z * 10.0) as i64),
            ipp: Some([-100.0, -100.0, z]),
            iop: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            pixel_spacing: Some([0.7, 0.7]),
            rows: Some(512),
            columns: Some(512),
            number_of_frames: None,
        }
    }

    #[test]
    fn regular_stack_in_any_order() {
        let s: Vec<_> = [3.0, 0.0, 1.5, 4.5, 6.0]
            .iter()
            .map(|z| slice(-*z))
            .collect();
        assert_eq!(
            check_stack(&s, 0.1),
            Ok(Stack {
                slices: 5,
                spacing: 1.5
            })
        );
    }

    #[test]
    fn gap_duplicate_and_mixed_are_found() {
        let gap: Vec<_> = [0.0, 1.0, 2.0, 4.0].iter().map(|z| slice(*z)).collect();
        assert!(matches!(
            check_stack(&gap, 0.1),
            Err(StackProblem::Gap { .. })
        ));
        let dup: Vec<_> = [0.0, 1.0, 1.0, 2.0].iter().map(|z| slice(*z)).collect();
        assert!(matches!(
            check_stack(&dup, 0.1),
            Err(StackProblem::DuplicatePosition(_))
        ));
        let mut mixed: Vec<_> = [0.0, 1.0, 2.0].iter().map(|z| slice(*z)).collect();
        mixed[1].iop = Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
        assert_eq!(
            check_stack(&mixed, 0.1),
            Err(StackProblem::MixedOrientation)
        );
        let mut sizes: Vec<_> = [0.0, 1.0, 2.0].iter().map(|z| slice(*z)).collect();
        sizes[2].rows = Some(256);
        assert_eq!(check_stack(&sizes, 0.1), Err(StackProblem::MixedSize));
        let mut no_geo = vec![slice(0.0), slice(1.0)];
        no_geo[0].ipp = None;
        assert!(matches!(
            check_stack(&no_geo, 0.1),
            Err(StackProblem::MissingGeometry(1, 2))
        ));
    }

    #[test]
    fn tilted_stack_is_sheared() {
        let s: Vec<_> = (0..5)
            .map(|i| {
                let mut r = slice(i as f64);
                r.ipp = Some([-100.0, -100.0 + 0.5 * i as f64, i as f64]);
                r
            })
            .collect();
        assert!(matches!(
            check_stack(&s, 0.1),
            Err(StackProblem::Sheared(_))
        ));
    }

    #[test]
    fn coronal_stack() {
        let s: Vec<_> = (0..4)
            .map(|i| {
                let mut r = slice(0.0);
                r.iop = Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
                r.ipp = Some([-10.0, 0.2 * i as f64, 50.0]);
                r
            })
            .collect();
        let st = check_stack(&s, 0.1).unwrap();
        assert_eq!(st.slices, 4);
        assert!((st.spacing - 0.2).abs() < 1e-9);
    }

    #[test]
    fn non_images_have_no_geometry() {
        let s = vec![Slice {
            sop_uid: "1".into(),
            ipp: None,
            iop: None,
            pixel_spacing: None,
            rows: None,
            columns: None,
            number_of_frames: None,
        }];
        assert_eq!(check_stack(&s, 0.1), Err(StackProblem::NoGeometry));
    }
}
