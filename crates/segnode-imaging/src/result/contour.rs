//! Planar contours of a binary mask on one slice, for RT Structure Sets.
//!
//! Each boundary between a mask pixel and a non-mask pixel (or the image edge) is a unit "crack" on the
//! pixel grid; the cracks form closed loops (outer borders and holes alike). A contour's vertices are the
//! midpoints of consecutive cracks, so a staircase becomes one diagonal line and every pixel centre keeps
//! its side: filling the contours of a slice with the even-odd rule at pixel centres gives back exactly
//! the mask. Diagonal-only contacts keep the pixels apart (4-connected loops), so no loop touches
//! itself. Collinear vertices are merged; a loop that would still hold more points than a result can
//! carry is simplified (Douglas–Peucker) with the smallest tolerance that fits.
//!
//! Coordinates are `(column i, row j)` in pixel-index units: pixel `(i, j)` has its centre at `(i, j)`.

/// A closed polygon in pixel-index coordinates `(i, j)`.
pub type Polygon = Vec<[f64; 2]>;

/// Directed crack: from vertex `a` to vertex `b` (corner coordinates, pixel `(i, j)` spans
/// `[i, i+1] × [j, j+1]`), owned by mask pixel `px`.
#[derive(Debug, Clone, Copy)]
struct Crack {
    a: (i32, i32),
    b: (i32, i32),
    px: (i32, i32),
}

/// The closed contours of `mask` (row-major, `rows × cols`, true = inside), each with at most
/// `max_points` vertices (≥ 4).
pub fn contours(mask: &[bool], rows: usize, cols: usize, max_points: usize) -> Vec<Polygon> {
    let at = |i: i32, j: i32| -> bool {
        i >= 0
            && j >= 0
            && (i as usize) < cols
            && (j as usize) < rows
            && mask[j as usize * cols + i as usize]
    };
    // cracks, oriented consistently around each mask pixel
    let mut cracks: Vec<Crack> = Vec::new();
    for j in 0..rows as i32 {
        for i in 0..cols as i32 {
            if !at(i, j) {
                continue;
            }
            let px = (i, j);
            if !at(i, j - 1) {
                cracks.push(Crack {
                    a: (i + 1, j),
                    b: (i, j),
                    px,
                });
            }
            if !at(i - 1, j) {
                cracks.push(Crack {
                    a: (i, j),
                    b: (i, j + 1),
                    px,
                });
            }
            if !at(i, j + 1) {
                cracks.push(Crack {
                    a: (i, j + 1),
                    b: (i + 1, j + 1),
                    px,
                });
            }
            if !at(i + 1, j) {
                cracks.push(Crack {
                    a: (i + 1, j + 1),
                    b: (i + 1, j),
                    px,
                });
            }
        }
    }
    // outgoing cracks per start vertex (one, or two at a diagonal-only contact)
    let mut by_start: std::collections::HashMap<(i32, i32), Vec<usize>> =
        std::collections::HashMap::with_capacity(cracks.len());
    for (n, c) in cracks.iter().enumerate() {
        by_start.entry(c.a).or_default().push(n);
    }
    let mut used = vec![false; cracks.len()];
    let mut out = Vec::new();
    for first in 0..cracks.len() {
        if used[first] {
            continue;
        }
        let mut loop_pts: Polygon = Vec::new();
        let mut cur = first;
        loop {
            used[cur] = true;
            let c = cracks[cur];
            loop_pts.push([
                (c.a.0 + c.b.0) as f64 / 2.0 - 0.5,
                (c.a.1 + c.b.1) as f64 / 2.0 - 0.5,
            ]);
            let next = by_start.get(&c.b).and_then(|cands| {
                // at a diagonal contact, keep turning around the same pixel
                cands
                    .iter()
                    .copied()
                    .filter(|&n| !used[n])
                    .min_by_key(|&n| (cracks[n].px != c.px) as u8)
            });
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        let merged = merge_collinear(&loop_pts);
        if merged.len() >= 3 {
            out.push(fit(merged, max_points.max(4)));
        }
    }
    out
}

/// Drop vertices that lie on the line through their neighbours.
fn merge_collinear(p: &[[f64; 2]]) -> Polygon {
    let n = p.len();
    if n < 4 {
        return p.to_vec();
    }
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let (a, b, c) = (p[(k + n - 1) % n], p[k], p[(k + 1) % n]);
        let cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]);
        if cross.abs() > 1e-9 {
            out.push(b);
        }
    }
    out
}

/// Simplify until at most `max` points remain.
fn fit(p: Polygon, max: usize) -> Polygon {
    if p.len() <= max {
        return p;
    }
    let mut tol = 0.25;
    loop {
        let s = simplify_closed(&p, tol);
        if s.len() <= max || tol > 64.0 {
            return s;
        }
        tol *= 1.5;
    }
}

/// Douglas–Peucker on a closed polygon (split at vertex 0 and the vertex farthest from it).
fn simplify_closed(p: &[[f64; 2]], tol: f64) -> Polygon {
    let far = (1..p.len())
        .max_by(|&a, &b| d2(p[0], p[a]).total_cmp(&d2(p[0], p[b])))
        .unwrap_or(0);
    let mut first = dp(&p[..=far], tol);
    let mut second_chain: Vec<[f64; 2]> = p[far..].to_vec();
    second_chain.push(p[0]);
    let second = dp(&second_chain, tol);
    first.pop();
    first.extend_from_slice(&second[..second.len() - 1]);
    first
}

fn d2(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

fn dp(chain: &[[f64; 2]], tol: f64) -> Vec<[f64; 2]> {
    if chain.len() < 3 {
        return chain.to_vec();
    }
    let (a, b) = (chain[0], chain[chain.len() - 1]);
    let len = d2(a, b).sqrt();
    let dist = |p: [f64; 2]| {
        if len < 1e-12 {
            d2(a, p).sqrt()
        } else {
            ((b[0] - a[0]) * (a[1] - p[1]) - (a[0] - p[0]) * (b[1] - a[1])).abs() / len
        }
    };
    let (idx, dmax) = chain[1..chain.len() - 1]
        .iter()
        .enumerate()
        .map(|(n, &p)| (n + 1, dist(p)))
        .fold((0, -1.0), |m, x| if x.1 > m.1 { x } else { m });
    if dmax <= tol {
        return vec![a, b];
    }
    let mut left = dp(&chain[..=idx], tol);
    let right = dp(&chain[idx..], tol);
    left.pop();
    left.extend(right);
    left
}

/// Fill polygons with the even-odd rule at pixel centres (the inverse of [`contours`]).
pub fn fill_even_odd(polys: &[Polygon], rows: usize, cols: usize) -> Vec<bool> {
    let mut out = vec![false; rows * cols];
    for j in 0..rows {
        let y = j as f64;
        let mut xs: Vec<f64> = Vec::new();
        for p in polys {
            for k in 0..p.len() {
                let (a, b) = (p[k], p[(k + 1) % p.len()]);
                if (a[1] > y) != (b[1] > y) {
                    xs.push(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
                }
            }
        }
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks(2) {
            if let [x0, x1] = pair {
                let lo = x0.ceil().max(0.0) as usize;
                let hi = x1.floor().min(cols as f64 - 1.0);
                if hi < 0.0 {
                    continue;
                }
                for i in lo..=hi as usize {
                    if (i as f64) > *x0 && (i as f64) < *x1 {
                        out[j * cols + i] = true;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of(rows: usize, cols: usize, f: impl Fn(usize, usize) -> bool) -> Vec<bool> {
        (0..rows * cols).map(|n| f(n / cols, n % cols)).collect()
    }

    #[test]
    fn a_square_is_one_chamfered_loop() {
        let m = mask_of(5, 5, |j, i| (1..4).contains(&j) && (1..4).contains(&i));
        let c = contours(&m, 5, 5, 1000);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].len(), 8, "{:?}", c[0]);
        assert_eq!(fill_even_odd(&c, 5, 5), m);
    }

    #[test]
    fn holes_diagonal_contacts_and_edges_fill_back_exactly() {
        let (rows, cols) = (40, 37);
        let m = mask_of(rows, cols, |j, i| {
            let (x, y) = (i as f64 - 18.0, j as f64 - 20.0);
            let r = (x * x + y * y).sqrt();
            (r < 15.0 && r > 6.0) || (i + j) % 7 == 0 && j < 5 || (i == 0 && j > 30)
        });
        let c = contours(&m, rows, cols, 100_000);
        assert!(c.len() > 3);
        assert_eq!(fill_even_odd(&c, rows, cols), m);
    }

    #[test]
    fn random_masks_fill_back_exactly() {
        let mut s = 12345u64;
        for _ in 0..20 {
            let m: Vec<bool> = (0..30 * 30)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (s >> 33) % 3 == 0
                })
                .collect();
            let c = contours(&m, 30, 30, 100_000);
            assert_eq!(fill_even_odd(&c, 30, 30), m);
        }
    }

    #[test]
    fn long_loops_are_simplified_to_the_point_budget() {
        let m = mask_of(200, 200, |j, i| {
            let (x, y) = (i as f64 - 100.0, j as f64 - 100.0);
            (x * x + y * y).sqrt() < 90.0 + 5.0 * (8.0 * y.atan2(x)).sin()
        });
        let full = contours(&m, 200, 200, 100_000);
        let small = contours(&m, 200, 200, 60);
        assert!(full[0].len() > 60 && small[0].len() <= 60);
        let back = fill_even_odd(&small, 200, 200);
        let inter = back.iter().zip(&m).filter(|(a, b)| **a && **b).count();
        let dice = 2.0 * inter as f64
            / (back.iter().filter(|x| **x).count() + m.iter().filter(|x| **x).count()) as f64;
        assert!(dice > 0.98, "{dice}");
    }
}
