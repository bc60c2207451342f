//! The clipped-blob reading of an array's contacts (the reading of cochlear-0.1, kept beside the
//! metal profile of `profile.rs` as a second opinion): contacts that bloom into separate blobs are
//! located by the blob centroid; blobs that hold several merged contacts are split by the array's pitch
//! (median nearest-neighbour distance of the separate blobs, or the periodicity of the voxel mass along
//! the arc), checked against the bulges of the blob's cross-section profile; a long blob thinner than
//! one contact, or one without bulges, is lead wire. On bright bone, tiny blobs (specks) join only where
//! the ordering expects the next contact.
//!
//! The pipeline takes this reading only when the profile's contact pattern is inconsistent and this
//! one's is regular (see `mod.rs`).

use super::blobs::{dist, mean};
use super::chain::Chain;
use super::contacts::{order_pieces, spiral_order, Piece};
use crate::volume::geometry::Vec3;

/// Contacts of the clipped-blob reading, ordered apical tip first when the spiral tells.
#[derive(Debug, Clone)]
pub struct BlobReading {
    pub contacts: Vec<Vec3>,
    pub pitch_mm: Option<f64>,
    pub insertion_angle_deg: Option<f64>,
    pub order_from_spiral: bool,
    pub notes: Vec<String>,
}

/// Locate the contacts of a chain; `voxel_mm` is the geometric mean voxel size.
pub fn locate(chain: &Chain, voxel_mm: f64, min_blob_mm3: f64) -> BlobReading {
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
                .map(|&b| dist(mean(&chain.blobs[a].points), mean(&chain.blobs[b].points)))
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
            centroid = ?mean(&chain.blobs[b].points),
            "blob"
        );
        if n == 1 {
            pieces.push(Piece {
                contacts: vec![mean(&chain.blobs[b].points)],
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
            contacts: vec![mean(&chain.blobs[b].points)],
            blob: b,
            speck: true,
        });
    }
    let (mut contacts, _) = order_pieces(pieces);
    if !wires.is_empty() {
        notes.push(format!(
            "{} thin run(s) of clipped metal taken as lead wire, not contacts",
            wires.len()
        ));
    }
    let (order_from_spiral, angle) = spiral_order(&mut contacts, &mut notes);
    BlobReading {
        contacts,
        pitch_mm: pitch,
        insertion_angle_deg: angle,
        order_from_spiral,
        notes,
    }
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
