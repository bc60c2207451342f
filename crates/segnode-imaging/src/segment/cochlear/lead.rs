//! The lead wire past the basal contact, told from the array by how much metal it carries.
//!
//! A band contact is two to three times as wide as the lead wire (≈ 0.4–0.6 mm against ≈ 0.2 mm), so
//! its metal cross-section `A(s)` (`profile.rs`) stands higher, whether the device clips or not. Where
//! the lead clips over dense otic-capsule bone, its profile still shows peaks — the voxel grid and the
//! noise modulate it — and at a tight pitch those peaks may keep the array's rhythm well enough for the
//! run at one pitch (`pattern.rs`) to walk on along the lead. But they stand lower than the contacts,
//! and they lie together at one end of the ordered candidates: the lead leaves the array at its basal
//! contact and never comes back between contacts.
//!
//! So along the ordered candidates the peak heights are split into a head and a tail at one end (the
//! split that separates their means best, of at least [`LeadParams::min_tail`] peaks); the tail is taken as lead when the head's mean height is
//! clearly above the tail's ([`LeadParams::min_ratio`]). A height that drifts along the array (partial
//! volume, a background that changes) separates far less than a contact does from a wire; still, the
//! test is made only when the candidates outnumber any array's contacts (`contacts.rs`): at 0.3–0.4 mm
//! voxels the contacts over fluid and over bone may differ by as much.

use super::blobs::dist;
use crate::volume::geometry::Vec3;

/// Thresholds of the lead-tail test.
#[derive(Debug, Clone)]
pub struct LeadParams {
    /// The head's mean peak height over the tail's at least this (ratio): a contact carries 4–9 times
    /// the wire's cross-section; after the blur and the clip its peak still stands 1.6–2.5 times as
    /// high, while contacts of one array vary by ±20 % (partial volume, noise).
    pub min_ratio: f64,
    /// A tail holds at least this many peaks: one or two low peaks at an end are a contact cut by the
    /// field or partly out of the clipped range, not a stretch of lead.
    pub min_tail: usize,
    /// A peak of the tail next to the array rejoins it when it keeps the array's pitch and stands at
    /// least this share of the way from the tail's mean height up to the array's: the split falls
    /// near, not exactly at, the basal contact (whose peak may read lower: partial volume, the
    /// background changing towards the round window), while the lead's peaks sit at the tail's level.
    pub rejoin_share: f64,
}

impl Default for LeadParams {
    fn default() -> Self {
        LeadParams {
            min_ratio: 1.45,
            min_tail: 3,
            rejoin_share: 0.3,
        }
    }
}

/// The span `lo..hi` of the ordered candidates that is the array when a tail at one end is lead wire
/// (peaks clearly lower than the rest), else `None`; the array keeps at least `min_keep` candidates.
pub fn array_span(heights: &[f64], min_keep: usize, p: &LeadParams) -> Option<(usize, usize)> {
    let n = heights.len();
    if n < min_keep + p.min_tail {
        return None;
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    // (between-class score, lo, hi)
    let mut best: Option<(f64, usize, usize)> = None;
    // every split is scored (so that a short low tail is not stretched into a contact to reach
    // `min_tail`); the best must then hold `min_tail` peaks
    for k in 1..=n - min_keep {
        // tail at the start (0..k) or at the end (n-k..n)
        for (lo, hi, tail) in [(k, n, &heights[..k]), (0, n - k, &heights[n - k..])] {
            let head = &heights[lo..hi];
            let (mh, mt) = (mean(head), mean(tail));
            if mh <= mt {
                continue;
            }
            let score = (head.len() * tail.len()) as f64 * (mh - mt).powi(2);
            if best.is_none_or(|b| score > b.0) {
                best = Some((score, lo, hi));
            }
        }
    }
    let (_, lo, hi) = best?;
    if n - (hi - lo) < p.min_tail {
        return None;
    }
    let head = mean(&heights[lo..hi]);
    let tail: Vec<f64> = heights[..lo]
        .iter()
        .chain(&heights[hi..])
        .copied()
        .collect();
    (head >= p.min_ratio * mean(&tail).max(1e-9)).then_some((lo, hi))
}

/// The tail cut off by [`array_span`], from the boundary outward with each peak's height, and the
/// height a peak of it needs to rejoin the array ([`LeadParams::rejoin_share`]).
pub fn cut_tail(
    points: &[Vec3],
    heights: &[f64],
    (lo, hi): (usize, usize),
    p: &LeadParams,
) -> (Vec<(Vec3, f64)>, f64) {
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let tail: Vec<f64> = heights[..lo]
        .iter()
        .chain(&heights[hi..])
        .copied()
        .collect();
    let (head, low) = (mean(&heights[lo..hi]), mean(&tail));
    let cut: Vec<(Vec3, f64)> = if lo > 0 {
        (0..lo).rev().map(|i| (points[i], heights[i])).collect()
    } else {
        (hi..points.len())
            .map(|i| (points[i], heights[i]))
            .collect()
    };
    (cut, low + p.rejoin_share * (head - low))
}

/// Peaks of the cut tail next to the array's nearer end that keep its pitch (a straight step within
/// `tol` of one pitch) and reach `min_height` rejoin it, one after the other from that end; returns
/// how many.
pub fn rejoin(
    contacts: &mut Vec<Vec3>,
    cut: &[(Vec3, f64)],
    pitch: f64,
    tol: f64,
    min_height: f64,
) -> usize {
    let (Some(&first), Some(&last), Some(&(c0, _))) =
        (contacts.first(), contacts.last(), cut.first())
    else {
        return 0;
    };
    let at_last = dist(last, c0) <= dist(first, c0);
    let mut end = if at_last { last } else { first };
    let mut added = Vec::new();
    for &(c, h) in cut {
        if h < min_height || (dist(end, c) / pitch - 1.0).abs() > tol {
            break;
        }
        added.push(c);
        end = c;
    }
    let n = added.len();
    if at_last {
        contacts.extend(added);
    } else {
        for c in added {
            contacts.insert(0, c);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_tail_at_either_end_is_lead() {
        let p = LeadParams::default();
        let mut h = vec![0.45, 0.5, 0.42, 0.48, 0.44, 0.47, 0.2, 0.25, 0.18, 0.22];
        assert_eq!(array_span(&h, 4, &p), Some((0, 6)));
        h.reverse();
        assert_eq!(array_span(&h, 4, &p), Some((4, 10)));
    }

    #[test]
    fn contacts_cut_with_the_lead_rejoin_at_the_pitch() {
        let p = LeadParams::default();
        // contacts 1 mm apart along x, the last two read a little low, then lead peaks
        let pts: Vec<Vec3> = (0..12).map(|i| [i as f64, 0.0, 0.0]).collect();
        let h = [
            0.5, 0.48, 0.5, 0.47, 0.5, 0.49, 0.33, 0.32, 0.2, 0.18, 0.2, 0.21,
        ];
        let span = array_span(&h, 4, &p).unwrap();
        let (cut, min_h) = cut_tail(&pts, &h, span, &p);
        let mut array: Vec<Vec3> = pts[span.0..span.1].to_vec();
        rejoin(&mut array, &cut, 1.0, 0.3, min_h);
        assert_eq!(array.len(), 8, "{span:?} {min_h}");
    }

    #[test]
    fn contacts_of_similar_height_are_left_alone() {
        let p = LeadParams::default();
        let h = [0.45, 0.5, 0.42, 0.48, 0.38, 0.47, 0.41, 0.36, 0.44, 0.4];
        assert_eq!(array_span(&h, 4, &p), None);
        // two low peaks at an end are not a stretch of lead
        let h = [0.45, 0.5, 0.42, 0.48, 0.44, 0.47, 0.2, 0.2];
        assert_eq!(array_span(&h, 4, &p), None);
    }
}
