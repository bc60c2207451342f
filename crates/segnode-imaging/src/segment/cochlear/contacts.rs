//! Contacts of an ordered chain: how many, where (patient mm), in which order (apical tip → base), and
//! how deep the array is inserted.
//!
//! Contacts that bloom into separate blobs are located by the blob centroid. Blobs that hold several
//! merged contacts (tight pitch, coarse voxels) are split by the array's pitch, measured on the separate
//! blobs (median nearest-neighbour distance) or, when every contact is merged, from the periodicity of
//! the voxel mass along the arc; the count is checked against the bulges of the blob's cross-section
//! profile, and each contact is the centroid of the voxels within half a pitch (windows with too little
//! metal are tails, not contacts). A long blob thinner than one contact, or one without bulges, is a lead
//! wire that clips on bright bone: it is labelled but holds no contact. On bright bone, tiny blobs
//! (specks) join only where the ordering expects the next contact.
//!
//! Order: from the outermost end, each next contact is the piece nearest to the position predicted from
//! the last step and turn (the next turn of a wide-pitch array near the apex is closer than the next
//! contact, but not where the curve is heading).
//!
//! The modiolar axis is the normal of the best plane through the contacts. In that plane the tangent of a
//! cochlear spiral turns by the same angle as the position around the modiolus, so the insertion angle is
//! the array's total turning (no centre to fit, which a shrinking spiral biases); the apical end is the
//! one that turns faster per mm. Both are reported only when the array turns by more than 60° and its
//! ends differ clearly in curvature (otherwise the array length in mm stands alone).

use super::blobs::{dist, mean};
use super::chain::Chain;
use crate::volume::geometry::{cross, dot, Vec3};

/// Contacts and depth of one array.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayContacts {
    /// Contact centres (LPS mm), apical tip first.
    pub contacts: Vec<Vec3>,
    /// Pitch used to split merged contacts (mm), when known.
    pub pitch_mm: Option<f64>,
    /// Sum of the distances between consecutive contacts (mm).
    pub length_mm: f64,
    /// Angle swept around the modiolar axis from the basal to the apical contact (degrees).
    pub insertion_angle_deg: Option<f64>,
    /// Whether the tip / base order comes from the spiral (else it is a fallback: see notes).
    pub order_from_spiral: bool,
    pub notes: Vec<String>,
    /// Per blob of the chain: whether it is part of the array (specks off the array's rhythm are not).
    pub used_blobs: Vec<bool>,
}

/// Locate the contacts of a chain; `voxel_mm` is the geometric mean voxel size.
pub fn locate(chain: &Chain, voxel_mm: f64, min_blob_mm3: f64) -> ArrayContacts {
    let mut notes = Vec::new();
    let nb = chain.blobs.len();
    // solid blobs make the statistics and the contacts; specks (noise or streaks that clip on bright
    // bone, or contacts that barely clip) join only where the array's rhythm expects a contact
    let mut solid: Vec<usize> = (0..nb)
        .filter(|&b| chain.blobs[b].volume_mm3 >= min_blob_mm3)
        .collect();
    if solid.len() < 2 {
        solid = (0..nb).collect();
    }
    let extents: Vec<f64> = (0..nb).map(|b| chain.extent(b, voxel_mm)).collect();
    let mut sorted: Vec<f64> = solid.iter().map(|&b| extents[b]).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    // the footprint of one contact: the median extent of the blobs no longer than they are thick, or
    // the thickness when every blob holds merged contacts (a bloomed contact is as long as it is thick)
    let mut thick: Vec<f64> = solid
        .iter()
        .map(|&b| (4.0 * chain.blobs[b].volume_mm3 / (std::f64::consts::PI * extents[b])).sqrt())
        .collect();
    thick.sort_by(|a, b| a.total_cmp(b));
    let thick_med = thick[thick.len() / 2];
    let small: Vec<f64> = sorted
        .iter()
        .copied()
        .filter(|&e| e < 1.6 * thick_med + voxel_mm)
        .collect();
    let e1 = if small.len() >= 2 {
        small[small.len() / 2]
    } else {
        thick_med + 0.5 * voxel_mm
    }
    .max(voxel_mm);
    let singles: Vec<usize> = solid
        .iter()
        .copied()
        .filter(|&b| extents[b] < 1.5 * e1)
        .collect();
    // metal of one contact (voxels): the median single blob, when there are enough of them
    let mut single_mass: Vec<usize> = singles.iter().map(|&b| chain.s[b].len()).collect();
    single_mass.sort_unstable();
    let m1 = (single_mass.len() >= 2).then(|| single_mass[single_mass.len() / 2] as f64);
    // pitch: the median nearest-neighbour distance between single contacts (most contacts' nearest
    // neighbour is the next one on the array; across turns near the apex it may be closer)
    let mut gaps: Vec<f64> = singles
        .iter()
        .map(|&a| {
            singles
                .iter()
                .filter(|&&b| b != a)
                .map(|&b| dist(chain.blobs[a].centroid, chain.blobs[b].centroid))
                .fold(f64::INFINITY, f64::min)
        })
        .filter(|d| d.is_finite())
        .collect();
    gaps.sort_by(|a, b| a.total_cmp(b));
    let pitch = if gaps.len() >= 3 {
        Some(gaps[gaps.len() / 2])
    } else {
        periodicity(chain, &solid, voxel_mm)
    };
    let mut pieces: Vec<Piece> = Vec::new();
    // a single contact's cross-section (equivalent diameter), to tell a lead wire from merged contacts
    let mut single_thick: Vec<f64> = singles
        .iter()
        .map(|&b| (4.0 * chain.blobs[b].volume_mm3 / (std::f64::consts::PI * extents[b])).sqrt())
        .collect();
    single_thick.sort_by(|a, b| a.total_cmp(b));
    let t1 = (single_thick.len() >= 2).then(|| single_thick[single_thick.len() / 2]);
    let mut wires = Vec::new();
    for &b in &solid {
        let thickness =
            (4.0 * chain.blobs[b].volume_mm3 / (std::f64::consts::PI * extents[b])).sqrt();
        if extents[b] >= 1.5 * e1 && t1.is_some_and(|t| thickness < 0.75 * t) {
            // long and clearly thinner than a contact: a lead wire that clips (bright bone)
            wires.push(b);
            continue;
        }
        let n = match pitch {
            _ if extents[b] < 1.5 * e1 => 1,
            Some(p) => {
                let (n, bulges) = best_count(&chain.s[b], extents[b], e1, p, voxel_mm);
                tracing::debug!(blob = b, thickness, ?t1, bulges, n, "merged");
                if bulges < BEADED && extents[b] >= 2.0 * e1 && t1.is_some_and(|t| thickness < t) {
                    // long, no bulges, not thicker than one contact: a lead wire, not merged contacts
                    wires.push(b);
                    continue;
                }
                n
            }
            None => {
                notes.push(format!(
                    "merged contacts over {:.1} mm with no measurable pitch: count is a lower bound",
                    extents[b]
                ));
                2
            }
        };
        let s = &chain.s[b];
        let pts = &chain.blobs[b].points;
        tracing::debug!(
            blob = b,
            voxels = s.len(),
            extent = extents[b],
            e1,
            ?pitch,
            contacts = n,
            centroid = ?chain.blobs[b].centroid,
            "blob"
        );
        if n == 1 {
            pieces.push(Piece {
                contacts: vec![chain.blobs[b].centroid],
                blob: b,
                speck: false,
            });
            continue;
        }
        let lo = s.iter().cloned().fold(f64::INFINITY, f64::min);
        let span = extents[b] - e1;
        let step = span / (n - 1) as f64;
        let mut centres: Vec<f64> = (0..n)
            .map(|i| lo + 0.5 * (e1 - voxel_mm) + i as f64 * step)
            .collect();
        let half = 0.5 * pitch.unwrap_or(step).min(step.max(voxel_mm));
        let mut out = vec![[0.0; 3]; n];
        let mut mass = vec![0usize; n];
        for _ in 0..3 {
            for ((c, o), m) in centres.iter_mut().zip(out.iter_mut()).zip(mass.iter_mut()) {
                let sel: Vec<usize> = (0..s.len())
                    .filter(|&v| (s[v] - *c).abs() <= half)
                    .collect();
                *m = sel.len();
                if sel.is_empty() {
                    continue;
                }
                *c = sel.iter().map(|&v| s[v]).sum::<f64>() / sel.len() as f64;
                *o = mean(&sel.iter().map(|&v| pts[v]).collect::<Vec<_>>());
            }
        }
        // a window with little metal is the tail of a contact or a wire (a lead bright enough to clip on
        // dense bone), not a contact; two windows that converged onto one contact are one
        let mut sorted_mass = mass.clone();
        sorted_mass.sort_unstable();
        let typical = sorted_mass[sorted_mass.len() / 2].max(1) as f64;
        let min_mass = 0.6 * m1.unwrap_or(typical).min(typical);
        let mut windows: Vec<(f64, Vec3, usize)> = centres
            .into_iter()
            .zip(out)
            .zip(mass)
            .filter(|(_, m)| *m as f64 >= min_mass)
            .map(|((c, o), m)| (c, o, m))
            .collect();
        windows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut piece: Vec<(f64, Vec3, usize)> = Vec::new();
        for w in windows {
            match piece.last_mut() {
                Some(last) if w.0 - last.0 < 0.5 * step => {
                    if w.2 > last.2 {
                        *last = w;
                    }
                }
                _ => piece.push(w),
            }
        }
        if !piece.is_empty() {
            pieces.push(Piece {
                contacts: piece.into_iter().map(|p| p.1).collect(),
                blob: b,
                speck: false,
            });
        }
    }
    for b in (0..nb).filter(|b| !solid.contains(b)) {
        pieces.push(Piece {
            contacts: vec![chain.blobs[b].centroid],
            blob: b,
            speck: true,
        });
    }
    let (mut contacts, used_list) = order_pieces(pieces);
    let mut used = vec![false; nb];
    for b in used_list.into_iter().chain(wires.iter().copied()) {
        used[b] = true;
    }
    if !wires.is_empty() {
        notes.push(format!(
            "{} thin run(s) of clipped metal taken as lead wire, not contacts",
            wires.len()
        ));
    }
    let length_mm = contacts.windows(2).map(|w| dist(w[0], w[1])).sum();
    let (order_from_spiral, angle) = match spiral_fit(&contacts) {
        Some(fit) => {
            if fit.first_is_apical {
                // already tip first
            } else {
                contacts.reverse();
            }
            (true, fit.angle_deg)
        }
        None => (false, None),
    };
    if !order_from_spiral {
        notes.push("array too straight or too short to tell tip from base by the spiral".into());
    }
    ArrayContacts {
        used_blobs: used,
        contacts,
        pitch_mm: pitch,
        length_mm,
        insertion_angle_deg: angle,
        order_from_spiral,
        notes,
    }
}

/// Contacts from one blob: a single contact, the ordered contacts of a merged blob, or a speck (a blob
/// too small to trust: noise or a streak that clips on bright bone, or a contact that barely clips).
#[derive(Debug, Clone)]
struct Piece {
    contacts: Vec<Vec3>,
    blob: usize,
    speck: bool,
}

/// Order the contacts of the chain's pieces into one sequence; returns it with the blobs used.
///
/// The sequence starts at the solid piece end farthest from the centroid (the outer, basal end of a
/// spiral) and grows by the piece end nearest to the position predicted from the last step and the last
/// turn: near the apex a contact of the next turn may be nearer than the next contact, but it is not
/// where the curve is heading. A speck joins only when it sits where the next contact is predicted;
/// specks left over are not part of the array.
fn order_pieces(mut pieces: Vec<Piece>) -> (Vec<Vec3>, Vec<usize>) {
    let solid: Vec<Vec3> = pieces
        .iter()
        .filter(|p| !p.speck)
        .flat_map(|p| p.contacts.iter().copied())
        .collect();
    if solid.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let c = mean(&solid);
    let mut best = (f64::NEG_INFINITY, 0, false);
    for (n, p) in pieces.iter().enumerate().filter(|(_, p)| !p.speck) {
        let ends = [
            (false, p.contacts[0]),
            (true, p.contacts[p.contacts.len() - 1]),
        ];
        for (rev, q) in ends {
            let d = dist(q, c);
            if d > best.0 {
                best = (d, n, rev);
            }
        }
    }
    let first = pieces.swap_remove(best.1);
    let mut used = vec![first.blob];
    let mut path = first.contacts;
    if best.2 {
        path.reverse();
    }
    while pieces.iter().any(|p| !p.speck) {
        let m = path.len();
        let p = path[m - 1];
        // the next position, and the one after it (in case the next contact is missing)
        let (pred, pred2, step) = if m >= 3 {
            let h0 = sub(path[m - 2], path[m - 3]);
            let h1 = sub(p, path[m - 2]);
            let h2 = rotate_like(h0, h1);
            let q = add(p, h2);
            (q, add(q, rotate_like(h1, h2)), dot(h1, h1).sqrt())
        } else if m == 2 {
            let h = sub(p, path[0]);
            (add(p, h), add(p, add(h, h)), dot(h, h).sqrt())
        } else {
            (p, p, 0.0)
        };
        let mut pick = (f64::INFINITY, 0, false);
        for (n, piece) in pieces.iter().enumerate() {
            let ends = [
                (false, piece.contacts[0]),
                (true, piece.contacts[piece.contacts.len() - 1]),
            ];
            for (rev, q) in ends {
                // first step: the nearest end, preferring the outer turn
                let cost = if m == 1 {
                    dist(q, p) - 0.5 * dist(q, c)
                } else {
                    // a contact where the one after next is expected costs a little more than one
                    // where the next is expected
                    dist(q, pred).min(dist(q, pred2) + 0.25 * step)
                };
                if piece.speck && (m == 1 || cost > 0.4 * step) {
                    continue;
                }
                if cost < pick.0 {
                    pick = (cost, n, rev);
                }
            }
        }
        let next = pieces.swap_remove(pick.1);
        used.push(next.blob);
        let mut more = next.contacts;
        if pick.2 {
            more.reverse();
        }
        path.extend(more);
    }
    (path, used)
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// `h1` turned once more by the rotation that takes the direction of `h0` to that of `h1`.
fn rotate_like(h0: Vec3, h1: Vec3) -> Vec3 {
    let n0 = dot(h0, h0).sqrt();
    let n1 = dot(h1, h1).sqrt();
    if n0 < 1e-9 || n1 < 1e-9 {
        return h1;
    }
    let a = [h0[0] / n0, h0[1] / n0, h0[2] / n0];
    let b = [h1[0] / n1, h1[1] / n1, h1[2] / n1];
    let axis = cross(a, b);
    let s = dot(axis, axis).sqrt();
    let cth = dot(a, b).clamp(-1.0, 1.0);
    if s < 1e-9 {
        return h1;
    }
    let k = [axis[0] / s, axis[1] / s, axis[2] / s];
    // Rodrigues: rotate h1 about k by the angle between h0 and h1
    let kx = cross(k, h1);
    let kd = dot(k, h1);
    [
        h1[0] * cth + kx[0] * s + k[0] * kd * (1.0 - cth),
        h1[1] * cth + kx[1] * s + k[1] * kd * (1.0 - cth),
        h1[2] * cth + kx[2] * s + k[2] * kd * (1.0 - cth),
    ]
}

/// How many contacts a merged blob holds: the count from its length and the pitch, or one more or less,
/// whichever puts evenly spaced contacts on the bulges of the blob's cross-section profile along the arc
/// rather than on the necks between them.
///
/// Returns the count and the contrast of bulges over necks (about 0 for a wire or a smooth tube).
fn best_count(s: &[f64], extent: f64, e1: f64, pitch: f64, voxel_mm: f64) -> (usize, f64) {
    let n0 = (((extent - e1) / pitch).round() as usize + 1).max(1);
    let h = 0.05;
    let lo = s.iter().cloned().fold(f64::INFINITY, f64::min);
    let nbins = ((extent + voxel_mm) / h).ceil() as usize + 1;
    let mut prof = vec![0.0; nbins];
    let sd = (0.5 * voxel_mm / h).max(1.0);
    let w = (3.0 * sd).ceil() as i64;
    for &x in s {
        let c = (x - lo) / h;
        for d in -w..=w {
            let b = c.round() as i64 + d;
            if b >= 0 && (b as usize) < nbins {
                let z = (b as f64 - c) / sd;
                prof[b as usize] += (-0.5 * z * z).exp();
            }
        }
    }
    let at = |x: f64| -> f64 {
        let b = ((x - lo) / h).round();
        if b < 0.0 || b as usize >= nbins {
            0.0
        } else {
            prof[b as usize]
        }
    };
    let mut best = (f64::NEG_INFINITY, n0);
    for n in n0.saturating_sub(1).max(2)..=n0 + 1 {
        let q = (extent - e1) / (n - 1) as f64;
        if q < 0.5 * pitch || q > 1.6 * pitch {
            continue;
        }
        let a = lo + 0.5 * (e1 - voxel_mm);
        let peaks: f64 = (0..n).map(|i| at(a + i as f64 * q)).sum::<f64>() / n as f64;
        let necks: f64 = (0..n - 1)
            .map(|i| at(a + (i as f64 + 0.5) * q))
            .sum::<f64>()
            / (n - 1) as f64;
        let score = (peaks - necks) / peaks.max(1e-9);
        if score > best.0 + 1e-6 {
            best = (score, n);
        }
    }
    // a flat profile says nothing: keep the count from the length
    if best.0 < 0.05 {
        (n0, best.0)
    } else {
        (best.1, best.0)
    }
}

/// Bulge contrast above which a long blob is merged contacts rather than a wire.
const BEADED: f64 = 0.3;

/// Pitch from the autocorrelation of the voxel count along the arc (lags 0.6–2.6 mm).
fn periodicity(chain: &Chain, blobs: &[usize], voxel_mm: f64) -> Option<f64> {
    let h = 0.05;
    let n = (chain.length_mm / h).ceil() as usize + 1;
    if n < 40 {
        return None;
    }
    let mut prof = vec![0.0; n];
    let sd = 0.35 * voxel_mm / h;
    let w = (3.0 * sd).ceil() as i64;
    for s in blobs.iter().flat_map(|&b| chain.s[b].iter()) {
        let c = s / h;
        let ci = c.round() as i64;
        for d in -w..=w {
            let x = ci + d;
            if x >= 0 && (x as usize) < n {
                let z = (x as f64 - c) / sd;
                prof[x as usize] += (-0.5 * z * z).exp();
            }
        }
    }
    let m = prof.iter().sum::<f64>() / n as f64;
    for p in prof.iter_mut() {
        *p -= m;
    }
    let var: f64 = prof.iter().map(|p| p * p).sum();
    if var <= 0.0 {
        return None;
    }
    let acf = |lag: usize| -> f64 {
        prof.iter()
            .zip(&prof[lag..])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / var
    };
    let (lo, hi) = ((0.6 / h) as usize, ((2.6 / h) as usize).min(n - 1));
    let vals: Vec<f64> = (lo.saturating_sub(1)..=hi + 1)
        .map(|l| if l < n { acf(l) } else { 0.0 })
        .collect();
    // first local maximum above 0.2
    for i in 1..vals.len() - 1 {
        if vals[i] > 0.2 && vals[i] >= vals[i - 1] && vals[i] >= vals[i + 1] {
            return Some((lo.saturating_sub(1) + i) as f64 * h);
        }
    }
    None
}

struct SpiralFit {
    first_is_apical: bool,
    angle_deg: Option<f64>,
}

/// Turning of the array in its best plane (at least 4 contacts): the tangent of a cochlear spiral turns
/// by the same angle as the position around the modiolus, so the insertion angle is the total turning,
/// with no need to locate the modiolar axis; the apical end is the one that turns faster per mm.
fn spiral_fit(contacts: &[Vec3]) -> Option<SpiralFit> {
    let n = contacts.len();
    if n < 4 {
        return None;
    }
    let c = mean(contacts);
    let mut cov = [[0.0; 3]; 3];
    for p in contacts {
        let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
        for a in 0..3 {
            for b in 0..3 {
                cov[a][b] += d[a] * d[b];
            }
        }
    }
    let (vals, vecs) = jacobi(cov);
    // vals ascending: the plane is spanned by the two largest axes
    if vals[2] <= 0.0 || vals[1] / vals[2] < 0.02 {
        return None;
    }
    let (e1, e2) = (vecs[2], vecs[1]);
    let xy: Vec<[f64; 2]> = contacts
        .iter()
        .map(|p| {
            let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
            [dot(d, e1), dot(d, e2)]
        })
        .collect();
    let heading: Vec<f64> = xy
        .windows(2)
        .map(|w| (w[1][1] - w[0][1]).atan2(w[1][0] - w[0][0]))
        .collect();
    let seg_len: Vec<f64> = xy
        .windows(2)
        .map(|w| ((w[1][0] - w[0][0]).powi(2) + (w[1][1] - w[0][1]).powi(2)).sqrt())
        .collect();
    let turn: Vec<f64> = heading
        .windows(2)
        .map(|w| {
            let mut d = w[1] - w[0];
            while d > std::f64::consts::PI {
                d -= std::f64::consts::TAU;
            }
            while d < -std::f64::consts::PI {
                d += std::f64::consts::TAU;
            }
            d
        })
        .collect();
    let total: f64 = turn.iter().sum();
    // contacts at the ends sit half a segment beyond the first / last turning point
    let angle = total.abs() * (n - 1) as f64 / (n - 2) as f64;
    // turning per mm over the first and last third
    let k = (turn.len() / 3).max(1);
    let rate = |t: &[f64], l: &[f64]| t.iter().sum::<f64>().abs() / l.iter().sum::<f64>().max(1e-6);
    let first = rate(&turn[..k], &seg_len[..k + 1]);
    let last = rate(&turn[turn.len() - k..], &seg_len[seg_len.len() - k - 1..]);
    if angle < 60f64.to_radians() || (first - last).abs() < 0.15 * first.max(last) {
        return None;
    }
    Some(SpiralFit {
        first_is_apical: first > last,
        angle_deg: Some(angle.to_degrees()),
    })
}

/// Eigen-decomposition of a symmetric 3×3 matrix (cyclic Jacobi): values ascending, vectors as rows.
fn jacobi(mut a: [[f64; 3]; 3]) -> ([f64; 3], [Vec3; 3]) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _ in 0..50 {
        let off = a[0][1].abs() + a[0][2].abs() + a[1][2].abs();
        if off < 1e-12 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-15 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            let mut b = a;
            for k in 0..3 {
                b[k][p] = c * a[k][p] - s * a[k][q];
                b[k][q] = s * a[k][p] + c * a[k][q];
            }
            let mut d = b;
            for k in 0..3 {
                d[p][k] = c * b[p][k] - s * b[q][k];
                d[q][k] = s * b[p][k] + c * b[q][k];
            }
            a = d;
            for row in v.iter_mut() {
                let (x, y) = (row[p], row[q]);
                row[p] = c * x - s * y;
                row[q] = s * x + c * y;
            }
        }
    }
    let vals = [a[0][0], a[1][1], a[2][2]];
    let mut idx = [0, 1, 2];
    idx.sort_by(|&x, &y| vals[x].total_cmp(&vals[y]));
    let col = |c: usize| [v[0][c], v[1][c], v[2][c]];
    (
        [vals[idx[0]], vals[idx[1]], vals[idx[2]]],
        [col(idx[0]), col(idx[1]), col(idx[2])],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_the_axes_of_a_diagonal_covariance() {
        let (vals, vecs) = jacobi([[4.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 9.0]]);
        assert_eq!(vals, [1.0, 4.0, 9.0]);
        assert!((vecs[2][2].abs() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn spiral_fit_orders_tip_first_and_measures_the_angle() {
        // 1.25 turns, radius shrinking from 4 to 2 mm: apical end is the last point
        let pts: Vec<Vec3> = (0..15)
            .map(|n| {
                let t = n as f64 / 14.0 * 1.25 * std::f64::consts::TAU;
                let r = 4.0 - 2.0 * n as f64 / 14.0;
                [r * t.cos(), r * t.sin(), 0.1 * t]
            })
            .collect();
        let f = spiral_fit(&pts).unwrap();
        assert!(!f.first_is_apical);
        let a = f.angle_deg.unwrap();
        assert!((a - 450.0).abs() < 40.0, "{a}");
    }
}
