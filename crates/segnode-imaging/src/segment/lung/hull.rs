//! In-plane convex fill of an enclosed mass (issue 19): the part of a hilar or mediastinal mass that
//! touches the heart or a vessel of the same attenuation has no lung or wall beyond it, so the rays of the
//! disease step cannot claim it; seen slice by slice, that part is a bay cut into the mass's outline by the
//! organ beside it. A mass is solid and roughly convex (the enclosed core is opened in-plane first), so each
//! piece of it in an axial, coronal or sagittal plane takes the solid voxels inside its convex hull — bounded by
//! [`HullParams::max_gain`], so a crescent of disease along the pleura never spans the mediastinum.

/// Limits of the convex fill; units in the names.
#[derive(Debug, Clone)]
pub struct HullParams {
    /// Pieces smaller than this (coarse voxels in one slice) are left as they are: their hull says nothing.
    pub min_piece_voxels: usize,
    /// A piece takes its hull only when the solid voxels added are at most this share of the piece:
    /// the bay of a round mass is small; a crescent's hull would span what it wraps around.
    pub max_gain: f64,
}

impl Default for HullParams {
    fn default() -> Self {
        HullParams {
            min_piece_voxels: 12,
            max_gain: 0.5,
        }
    }
}

/// Convex hull of integer points (x, y), counter-clockwise, no collinear points (Andrew's monotone chain).
pub fn convex_hull(points: &mut [(i64, i64)]) -> Vec<(i64, i64)> {
    points.sort_unstable();
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(points.len() + 1);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(i64, i64)>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// Whether `p` lies inside or on the counter-clockwise convex polygon `hull`.
pub fn inside_hull(hull: &[(i64, i64)], p: (i64, i64)) -> bool {
    match hull.len() {
        0 => false,
        1 => hull[0] == p,
        n => (0..n).all(|e| {
            let (a, b) = (hull[e], hull[(e + 1) % n]);
            (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= 0
        }),
    }
}

/// Fills, plane by plane across `axis` (0 = k: axial slices of an axial grid), the convex hull of every
/// 4-connected piece of `mask` with the voxels where `fillable` holds (`d` = [nk, nj, ni], row-major).
/// Returns the number of voxels added.
pub fn fill_convex(
    mask: &mut [bool],
    fillable: impl Fn(usize) -> bool,
    d: [usize; 3],
    axis: usize,
    p: &HullParams,
) -> usize {
    // the plane's two axes (u, v) and the flat index of (plane n, v, u)
    let (ua, va) = match axis {
        0 => (2, 1),
        1 => (2, 0),
        _ => (1, 0),
    };
    // the mask's bounding box: every piece and its hull lie inside it (plane coordinates relative to it)
    let Some(bb) = crate::segment::morph::bbox_where(d, |q| mask[q]) else {
        return 0;
    };
    let (nu, nv) = (bb[ua][1] - bb[ua][0], bb[va][1] - bb[va][0]);
    let flat = |n: usize, v: usize, u: usize| {
        let mut idx = [0usize; 3];
        idx[axis] = n;
        idx[va] = v + bb[va][0];
        idx[ua] = u + bb[ua][0];
        (idx[0] * d[1] + idx[1]) * d[2] + idx[2]
    };
    let mut added = 0;
    for n in bb[axis][0]..bb[axis][1] {
        let plane: Vec<bool> = (0..nv * nu)
            .map(|q| mask[flat(n, q / nu, q % nu)])
            .collect();
        let mut seen = vec![false; plane.len()];
        for start in 0..plane.len() {
            if seen[start] || !plane[start] {
                continue;
            }
            // one in-plane piece
            let (mut piece, mut stack) = (Vec::new(), vec![start]);
            seen[start] = true;
            while let Some(q) = stack.pop() {
                piece.push(q);
                let (v, u) = (q / nu, q % nu);
                for r in [
                    (u > 0).then(|| q - 1),
                    (u + 1 < nu).then(|| q + 1),
                    (v > 0).then(|| q - nu),
                    (v + 1 < nv).then(|| q + nu),
                ]
                .into_iter()
                .flatten()
                {
                    if !seen[r] && plane[r] {
                        seen[r] = true;
                        stack.push(r);
                    }
                }
            }
            if piece.len() < p.min_piece_voxels {
                continue;
            }
            let mut pts: Vec<(i64, i64)> = piece
                .iter()
                .map(|&q| ((q % nu) as i64, (q / nu) as i64))
                .collect();
            let (lo_u, hi_u, lo_v, hi_v) = pts.iter().fold(
                (i64::MAX, i64::MIN, i64::MAX, i64::MIN),
                |(a, b, c, e), &(x, y)| (a.min(x), b.max(x), c.min(y), e.max(y)),
            );
            let hull = convex_hull(&mut pts);
            let mut gain = Vec::new();
            for v in lo_v..=hi_v {
                for u in lo_u..=hi_u {
                    let q = v as usize * nu + u as usize;
                    let f = flat(n, v as usize, u as usize);
                    if !plane[q] && fillable(f) && inside_hull(&hull, (u, v)) {
                        gain.push(f);
                    }
                }
            }
            if gain.is_empty() || gain.len() as f64 > p.max_gain * piece.len() as f64 {
                continue;
            }
            added += gain.len();
            for f in gain {
                mask[f] = true;
            }
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_of_a_square_with_inner_points() {
        let mut pts = vec![(0, 0), (2, 0), (2, 2), (0, 2), (1, 1), (1, 0)];
        let h = convex_hull(&mut pts);
        assert_eq!(h.len(), 4);
        assert!(inside_hull(&h, (1, 1)));
        assert!(inside_hull(&h, (2, 1)));
        assert!(!inside_hull(&h, (3, 1)));
    }

    #[test]
    fn a_bay_is_filled_and_a_crescent_is_not() {
        // 1 slice, 12×12: a disc with a bay cut into its right side; the bay is fillable
        let d = [1, 12, 12];
        let disc = |j: usize, i: usize| {
            let (y, x) = (j as f64 - 5.5, i as f64 - 5.5);
            x * x + y * y <= 25.0
        };
        let bay = |j: usize, i: usize| i >= 8 && (4..=7).contains(&j);
        let mut m: Vec<bool> = (0..144)
            .map(|q| disc(q / 12, q % 12) && !bay(q / 12, q % 12))
            .collect();
        let before = m.iter().filter(|&&v| v).count();
        let n = fill_convex(&mut m, |_| true, d, 0, &HullParams::default());
        assert!(n > 0 && n <= before / 2, "{n}");
        assert!(m[5 * 12 + 9], "the bay is filled");
        assert!(!m[0], "nothing outside the hull");
        // a thin crescent: its hull is much larger than itself, left alone
        let mut c: Vec<bool> = (0..144)
            .map(|q| {
                let (y, x) = ((q / 12) as f64 - 5.5, (q % 12) as f64 - 5.5);
                let r = (x * x + y * y).sqrt();
                (4.5..=5.6).contains(&r) && x < 0.0
            })
            .collect();
        let n = fill_convex(&mut c, |_| true, d, 0, &HullParams::default());
        assert_eq!(n, 0);
    }
}
