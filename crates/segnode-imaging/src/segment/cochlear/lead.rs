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
}

impl Default for LeadParams {
    fn default() -> Self {
        LeadParams {
            min_ratio: 1.45,
            min_tail: 3,
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
    fn contacts_of_similar_height_are_left_alone() {
        let p = LeadParams::default();
        let h = [0.45, 0.5, 0.42, 0.48, 0.38, 0.47, 0.41, 0.36, 0.44, 0.4];
        assert_eq!(array_span(&h, 4, &p), None);
        // two low peaks at an end are not a stretch of lead
        let h = [0.45, 0.5, 0.42, 0.48, 0.44, 0.47, 0.2, 0.2];
        assert_eq!(array_span(&h, 4, &p), None);
    }
}
