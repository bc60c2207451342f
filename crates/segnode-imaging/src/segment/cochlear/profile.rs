//! The metal around a chain's clipped cores, read as a profile along the array's path: contacts told
//! from lead wire by what they are (wider and denser metal, periodic along the path), and the electrode
//! mask at the metal's physical extent.
//!
//! The clipped cores (`blobs.rs`) find the metal but not its size: a lead wire that runs over dense
//! otic-capsule bone clips as well as a contact does, and a contact's core is smaller than the platinum
//! when the device does not clip far above bone. So around the cores, every voxel within
//! [`ProfileParams::reach_mm`] is read with its grey value as a metal share
//! `w = (v − background) / (metal − background)` clamped to 0–1, where the background is an upper
//! quantile of the outer shell of that neighbourhood over each millimetre of path (the local bone, fluid
//! or soft tissue) and the metal level the
//! device maximum when metal clips (else a high percentile of the cores). Each voxel takes the arc
//! coordinate of its nearest core voxel, so the sum of `w · voxel volume` per mm of arc is the metal
//! cross-section `A(s)` (mm²), orientation-independent and the same whether the device clips or not.
//!
//! Contacts are the peaks of `A(s)`: a peak counts when it stands out from the valleys on both sides as
//! much as the array's contacts do (the upper class of the peak prominences, split where they separate
//! clearly; a lead wire's peaks are noise on a plateau). Peaks closer than any
//! real array's pitch are one contact. The pitch of the accepted peaks is then judged: gaps that are
//! about a multiple of the typical pitch (a missing contact) or much shorter (an extra one) make the
//! pattern inconsistent, which is reported, not repaired.
//!
//! The mask is every neighbourhood voxel at or above half-way between the local background and the
//! local metal level (the partial-volume boundary); unclipped, that level is never below the array's
//! own metal level (a thin lead wire's blurred peak is a fraction of its platinum's level), and the
//! candidate cores (down to a quarter of the metal level) are not painted over it.
//! When metal clips, the metal's own level is unknown but far above the clip, so its half-way contour
//! lies inside the saturated region. The saturated bloom is larger than the metal (3–5× its volume on
//! tests/py/cbct2.py phantoms: a voxel saturates at a tenth of the metal's level); shrinking it to the
//! physical extent needs the metal's level or the point-spread function, which the saturated image does
//! not give directly. [`ProfileParams::clipped_extent_from_rim`] (on by default) takes them from the rim
//! instead (a Gaussian cross-section's unsaturated rim holds `2πσ²` of clip-level shares whatever its
//! peak, its half-peak area `2πσ² ln 2`), so the mask of clipped metal is its half-peak extent: the
//! metal at physical size, what both phantom generators take as the electrode's truth (issue 11).
//! Off, the mask is the saturated bloom (the cores).

use super::blobs::kji;
use super::chain::Chain;
use super::lead::LeadParams;
use super::pattern::PatternParams;
use crate::volume::geometry::Vec3;
use crate::volume::Volume;
use std::collections::HashMap;

/// Thresholds of the profile analysis (mm unless said otherwise).
#[derive(Debug, Clone)]
pub struct ProfileParams {
    /// Neighbourhood read around the clipped cores (mm): a contact's half-width (≤ 0.35 mm for real
    /// arrays) plus the blur of a CBCT point-spread function (σ ≈ 0.1–0.2 mm).
    pub reach_mm: f64,
    /// Bin width of the arc profile (mm).
    pub bin_mm: f64,
    /// Gaussian smoothing of the profile (mm, σ), at least half a voxel.
    pub smooth_mm: f64,
    /// Peaks closer than this along the arc are one contact (mm): the tightest real pitch is ≈ 0.6 mm
    /// (Cochlear Nucleus 0.75–0.9, AB ≈ 1, MED-EL 1.9–2.4).
    pub min_separation_mm: f64,
    /// The heights of contact and wire peaks separate when the upper class's mean is at least this many
    /// times the lower class's: a wire's noise dips a few per cent, contacts dip to the wire between them
    /// (tight-pitch contacts that merge still dip a third of their height; 3 keeps them one class).
    pub class_ratio: f64,
    /// The contact class holds at least this many peaks (an array has ≥ 4 contacts in view).
    pub min_class_peaks: usize,
    /// A clear peak is at least this share of the median clear peak's height: a short run of lead
    /// wire that clips on bright bone rises clearly from its ends but holds a third of a contact's metal.
    pub min_height: f64,
    /// A contact peak rises at least this share of the contact height above the valleys on both sides
    /// (merged contacts at a tight pitch still dip between contacts; noise on a wire does not reach it).
    pub min_prominence: f64,
    /// A peak at least this share of a clear contact's height is a contact even with a shallow dip:
    /// merged contacts stand as tall as separate ones, a lead wire's noise stands lower.
    pub merged_height: f64,
    /// ... but it still dips this share of the contact prominence on both sides (else it is a plateau),
    /// and sits one pitch (± this share) from an accepted contact of the same run of metal.
    pub merged_dip: f64,
    pub pitch_tolerance: f64,
    /// A peak's prominence is measured down to the lowest point within this arc distance on each side
    /// (mm), not across the whole blob: the wire between two contacts is reached within half a contact
    /// length plus the blur (< 0.5 mm), while a long stretch of lead wire that clips over dense bone is
    /// a plateau whose noise peaks would otherwise take the prominence of the distant valleys.
    pub prominence_window_mm: f64,
    /// The electrode boundary: this share of the way from the local background to the metal level.
    pub mask_level: f64,
    /// Clipped metal: shrink the saturated bloom to the metal's half-peak extent estimated from the
    /// rim around it ([`Profile::mask`]); off, the mask is the saturated bloom. On by default: the
    /// electrode is its metal at physical size (issue 11, and both phantom generators' truth), and the
    /// bloom is 3–5× that.
    pub clipped_extent_from_rim: bool,
    /// Length of path over which one rim reading holds (mm): a contact's length, so that a stretch
    /// holds a contact or wire, rarely both.
    pub rim_bin_mm: f64,
    /// Length of path over which one background level holds (mm): bone, fluid and air change within a
    /// few millimetres along an array.
    pub background_bin_mm: f64,
    /// The background is this quantile of the neighbourhood's outer shell: above the median, so that a
    /// wire along the edge of dense capsule bone reads the bone, not the fluid, as its background.
    pub background_quantile: f64,
    /// Fewer shell voxels than this in a stretch: the chain's overall background is used.
    pub min_shell_voxels: usize,
    /// A gap between consecutive contacts longer than this times the median pitch: a contact is missing
    /// or the array is cut; shorter than `1 / this`: an extra contact.
    pub irregular_gap: f64,
    /// The array's run of contacts at one pitch (`pattern.rs`).
    pub pattern: PatternParams,
    /// The lead wire past the basal contact, told by its lower peaks (`lead.rs`).
    pub lead: LeadParams,
    /// A step of two pitches along one run of metal holds a contact merged with a neighbour when the
    /// metal per mm in its middle is at least this share of that at its two ends: merged contacts
    /// carry about the same (the profile's dip between them is shallow), the lead between two
    /// contacts a third or less.
    pub merged_metal_share: f64,
    /// Half-width of the window (share of the pitch) over which that metal is measured: about a
    /// contact's half-length at a tight pitch, less than half the pitch so that windows do not meet.
    pub merged_window: f64,
    /// Where the array reaches the field's edge, a second run at the array's pitch is kept when one of
    /// its contacts lies this close to the edge (mm): the array leaving and re-entering the field.
    pub edge_mm: f64,
}

impl Default for ProfileParams {
    fn default() -> Self {
        ProfileParams {
            reach_mm: 0.6,
            bin_mm: 0.05,
            smooth_mm: 0.08,
            min_separation_mm: 0.45,
            class_ratio: 3.0,
            min_class_peaks: 4,
            min_height: 0.45,
            min_prominence: 0.2,
            merged_height: 0.75,
            merged_dip: 0.03,
            pitch_tolerance: 0.3,
            prominence_window_mm: 1.0,
            mask_level: 0.5,
            clipped_extent_from_rim: true,
            rim_bin_mm: 0.5,
            background_bin_mm: 1.0,
            background_quantile: 0.75,
            min_shell_voxels: 12,
            irregular_gap: 1.4,
            pattern: PatternParams::default(),
            lead: LeadParams::default(),
            merged_metal_share: 0.75,
            merged_window: 0.25,
            edge_mm: 1.0,
        }
    }
}

/// One neighbourhood voxel with its nearest core's blob and arc coordinate.
#[derive(Debug, Clone, Copy)]
struct Near {
    dist: f64,
    blob: usize,
    s: f64,
    /// Metal share against the local metal level (the profile's reading).
    w: f64,
    /// Metal share against the array's metal level (the mask's reading): see [`Profile::mask`].
    m: f64,
    /// Saturated voxels: distance to the nearest unsaturated voxel (mm, with a sub-voxel tie-break
    /// from the neighbours' metal share); else 0.
    depth: f64,
}

/// The metal around one chain.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Linear index → neighbourhood voxel.
    near: Vec<(usize, Near)>,
    pub background: f64,
    pub metal: f64,
    /// Whether metal clips at the device maximum (the metal level is then the clip, not the metal's).
    clipped: bool,
}

/// Peaks found in one blob's profile: arc coordinate and height (mm²).
#[derive(Debug, Clone, Copy)]
pub struct Peak {
    pub blob: usize,
    pub s: f64,
    pub height: f64,
    pub prominence: f64,
}

impl Profile {
    /// Read the neighbourhood of the chain's cores; `metal` is the device maximum when metal clips,
    /// `core` the level a voxel must reach to set the local metal level of unclipped metal (the chain
    /// holds lead wire and blurred contact rims below it, which must not read as full metal).
    pub fn read(
        volume: &Volume,
        chain: &Chain,
        metal: Option<f64>,
        core: f64,
        p: &ProfileParams,
    ) -> Profile {
        let shape = volume.shape();
        let sp = volume.geometry.spacing_kji();
        let r = [
            (p.reach_mm / sp[0]).ceil() as i64,
            (p.reach_mm / sp[1]).ceil() as i64,
            (p.reach_mm / sp[2]).ceil() as i64,
        ];
        let mut map: HashMap<usize, Near> = HashMap::new();
        let mut core_vals = Vec::new();
        for (b, blob) in chain.blobs.iter().enumerate() {
            for (n, &v) in blob.voxels.iter().enumerate() {
                let s = chain.s[b][n];
                let [k, j, i] = kji(v, shape);
                let hu = volume.hu[[k, j, i]] as f64;
                if hu >= core {
                    core_vals.push(hu);
                }
                for_each_near([k, j, i], r, shape, sp, |idx, d, _| {
                    if d > p.reach_mm {
                        return;
                    }
                    let e = map.entry(idx).or_insert(Near {
                        dist: f64::INFINITY,
                        blob: b,
                        s,
                        w: 0.0,
                        m: 0.0,
                        depth: 0.0,
                    });
                    if d < e.dist {
                        *e = Near {
                            dist: d,
                            blob: b,
                            s,
                            w: 0.0,
                            m: 0.0,
                            depth: 0.0,
                        };
                    }
                });
            }
        }
        let vmin = sp.iter().cloned().fold(f64::INFINITY, f64::min);
        let value = |idx: usize| {
            let [k, j, i] = kji(idx, shape);
            volume.hu[[k, j, i]] as f64
        };
        // the background per stretch of the path (blob, arc bin): the anatomy along an array changes
        // from fluid and soft tissue to dense otic capsule within millimetres
        let bin = |n: &Near| (n.blob, (n.s / p.background_bin_mm).floor() as i64);
        let mut shells: HashMap<(usize, i64), Vec<f64>> = HashMap::new();
        let mut all_shell = Vec::new();
        for (&idx, n) in &map {
            if n.dist >= p.reach_mm - 0.75 * vmin {
                let v = value(idx);
                shells.entry(bin(n)).or_default().push(v);
                all_shell.push(v);
            }
        }
        let background = quantile(&mut all_shell, p.background_quantile).unwrap_or(0.0);
        let local: HashMap<(usize, i64), f64> = shells
            .into_iter()
            .filter(|(_, v)| v.len() >= p.min_shell_voxels)
            .filter_map(|(key, mut v)| Some((key, quantile(&mut v, p.background_quantile)?)))
            .collect();
        let clipped = metal.is_some();
        // unclipped metal: the local metal level is the brightest core voxel of the stretch (a thin wire
        // peaks lower than a contact after the blur)
        let mut peak: HashMap<(usize, i64), f64> = HashMap::new();
        for (b, blob) in chain.blobs.iter().enumerate() {
            for (n, &v) in blob.voxels.iter().enumerate() {
                if value(v) < core {
                    continue;
                }
                let key = (b, (chain.s[b][n] / p.background_bin_mm).floor() as i64);
                let e = peak.entry(key).or_insert(f64::NEG_INFINITY);
                *e = e.max(value(v));
            }
        }
        core_vals.sort_by(|a, b| a.total_cmp(b));
        let metal = metal.unwrap_or_else(|| {
            core_vals
                .get(core_vals.len() * 9 / 10)
                .copied()
                .unwrap_or(background + 1.0)
        });
        let mut near: Vec<(usize, Near)> = map
            .into_iter()
            .map(|(idx, mut n)| {
                let bg = local.get(&bin(&n)).copied().unwrap_or(background);
                let top = if clipped {
                    metal
                } else {
                    peak.get(&bin(&n)).copied().unwrap_or(metal)
                };
                let span = (top - bg).max(1.0);
                n.w = ((value(idx) - bg) / span).clamp(0.0, 1.0);
                // the mask reads against the array's metal level at least: a lead wire thinner than the
                // blur peaks far below its platinum's level, and half-way to its own faint peak paints
                // the blur's width, not the wire's
                let span = (top.max(metal) - bg).max(1.0);
                n.m = ((value(idx) - bg) / span).clamp(0.0, 1.0);
                (idx, n)
            })
            .collect();
        near.sort_unstable_by_key(|x| x.0);
        if clipped && p.clipped_extent_from_rim {
            saturated_depth(volume, &mut near, metal, p.reach_mm);
        }
        Profile {
            near,
            background,
            metal,
            clipped,
        }
    }

    /// The metal cross-section profile of blob `b` (mm² per bin, smoothed) and the arc start of bin 0.
    fn blob_profile(
        &self,
        b: usize,
        voxel_mm3: f64,
        voxel_mm: f64,
        p: &ProfileParams,
    ) -> (Vec<f64>, f64) {
        let it = self.near.iter().filter(|(_, n)| n.blob == b && n.w > 0.0);
        let (lo, hi) = it
            .clone()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), (_, n)| {
                (l.min(n.s), h.max(n.s))
            });
        if !lo.is_finite() {
            return (Vec::new(), 0.0);
        }
        let pad = 4.0 * p.smooth_mm.max(0.5 * voxel_mm);
        let start = lo - pad;
        let nb = ((hi + pad - start) / p.bin_mm).ceil() as usize + 1;
        let mut raw = vec![0.0; nb];
        for (_, n) in it {
            let x = ((n.s - start) / p.bin_mm).round() as usize;
            if x < nb {
                raw[x] += n.w * voxel_mm3 / p.bin_mm;
            }
        }
        // the arc coordinate of a voxel is its nearest core's, quantised by the voxel: smooth by at
        // least half a voxel so that a contact is one peak
        let sd = p.smooth_mm.max(0.5 * voxel_mm) / p.bin_mm;
        let w = (3.0 * sd).ceil() as i64;
        let kern: Vec<f64> = (-w..=w)
            .map(|d| (-0.5 * (d as f64 / sd).powi(2)).exp())
            .collect();
        let ks: f64 = kern.iter().sum();
        let mut out = vec![0.0; nb];
        for (x, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (m, kv) in kern.iter().enumerate() {
                let y = x as i64 + m as i64 - w;
                if y >= 0 && (y as usize) < nb {
                    acc += kv * raw[y as usize];
                }
            }
            *o = acc / ks;
        }
        (out, start)
    }

    /// Local maxima of every blob's profile with their prominence (peaks closer than the minimum
    /// separation merged, the taller kept).
    pub fn peaks(
        &self,
        chain: &Chain,
        voxel_mm3: f64,
        voxel_mm: f64,
        p: &ProfileParams,
    ) -> Vec<Peak> {
        let mut all = Vec::new();
        for b in 0..chain.blobs.len() {
            let (prof, start) = self.blob_profile(b, voxel_mm3, voxel_mm, p);
            let n = prof.len();
            let mut idx: Vec<usize> = (1..n.saturating_sub(1))
                .filter(|&x| prof[x] > 0.0 && prof[x] >= prof[x - 1] && prof[x] > prof[x + 1])
                .collect();
            // merge peaks closer than the minimum separation: the taller wins
            let sep = (p.min_separation_mm / p.bin_mm).round() as usize;
            let mut kept: Vec<usize> = Vec::new();
            idx.sort_by(|&a, &c| prof[c].total_cmp(&prof[a]));
            for x in idx {
                if kept.iter().all(|&k| k.abs_diff(x) >= sep) {
                    kept.push(x);
                }
            }
            kept.sort_unstable();
            let window = (p.prominence_window_mm / p.bin_mm).round() as usize;
            for &x in &kept {
                // prominence: the lower of the two valleys down to the next taller peak, the end or
                // the window's edge
                let h = prof[x];
                let mut left = h;
                let mut y = x;
                while y > 0 && x - y < window {
                    y -= 1;
                    if prof[y] > h {
                        break;
                    }
                    left = left.min(prof[y]);
                }
                let mut right = h;
                let mut y = x;
                while y + 1 < n && y - x < window {
                    y += 1;
                    if prof[y] > h {
                        break;
                    }
                    right = right.min(prof[y]);
                }
                all.push(Peak {
                    blob: b,
                    s: start + x as f64 * p.bin_mm,
                    height: h,
                    prominence: h - left.max(right),
                });
            }
        }
        all
    }

    /// Mean metal cross-section (mm²) of blob `b` within `half` of arc `s`.
    pub fn metal_at(&self, b: usize, s: f64, half: f64, voxel_mm3: f64) -> f64 {
        let sum: f64 = self
            .near
            .iter()
            .filter(|(_, n)| n.blob == b && (n.s - s).abs() <= half)
            .map(|(_, n)| n.w)
            .sum();
        sum * voxel_mm3 / (2.0 * half).max(1e-9)
    }

    /// Weighted centre (patient mm) of blob `b`'s neighbourhood voxels within `half` of arc `s`.
    pub fn centre(&self, volume: &Volume, b: usize, s: f64, half: f64) -> Option<Vec3> {
        let shape = volume.shape();
        let g = &volume.geometry;
        let (mut acc, mut wsum) = ([0.0; 3], 0.0);
        for (idx, n) in &self.near {
            if n.blob != b || (n.s - s).abs() > half || n.w <= 0.0 {
                continue;
            }
            // weight the metal share squared: the bright middle of a contact, not its blurred rim
            let w = n.w * n.w;
            let [k, j, i] = kji(*idx, shape);
            let q = g.index_to_patient(k as f64, j as f64, i as f64);
            for a in 0..3 {
                acc[a] += w * q[a];
            }
            wsum += w;
        }
        (wsum > 0.0).then(|| [acc[0] / wsum, acc[1] / wsum, acc[2] / wsum])
    }

    /// Linear indices of the electrode at its physical extent for the given blobs: neighbourhood voxels
    /// half-way (`mask_level`) from background to metal or above. Unclipped, the metal level is the
    /// local peak where it lies above the array's metal level (a high percentile of its cores, the
    /// contacts' centres), else the array's level: the lead wire is the same platinum as the contacts,
    /// and its own blurred peak (a fraction of its level when it is thinner than the point-spread
    /// function) would put the boundary at the blur's width.
    pub fn mask(&self, blobs: &[bool], p: &ProfileParams) -> Vec<usize> {
        if self.clipped && p.clipped_extent_from_rim {
            return self.clipped_mask(blobs, p);
        }
        // clipped metal: the true level lies far above the clip, so the half-way contour of the true metal
        // lies inside the saturated region; the saturated region (the cores) is the tightest estimate
        let level = if self.clipped { 1.0 } else { p.mask_level };
        self.near
            .iter()
            .filter(|(_, n)| blobs.get(n.blob).copied().unwrap_or(false) && n.m >= level)
            .map(|(idx, _)| *idx)
            .collect()
    }
}

impl Profile {
    /// Whether the mask is complete without the chain's cores (the saturated bloom is then larger
    /// than the metal, and the cores must not be painted over it).
    pub fn mask_excludes_cores(&self, p: &ProfileParams) -> bool {
        !self.clipped || p.clipped_extent_from_rim
    }

    /// Clipped metal at its half-peak extent, per stretch of path ([`ProfileParams::rim_bin_mm`]): a
    /// metal cross-section blurred by a Gaussian point-spread function is a Gaussian of some width σ
    /// and a peak far above the clip. The metal outside the saturated contour, summed as shares of the
    /// clip level (`Σ w` over the rim, in voxels), is `2πσ²` per unit length whatever the peak (the
    /// Gaussian's tail integral equals its value at the contour times `2πσ²`), and the area above half
    /// the peak is `2πσ² ln 2`. So each stretch keeps its `ln 2 · Σ w_rim` deepest saturated voxels.
    /// Noise and streaks on the rim enter `Σ w` linearly (no exponential of a noisy ratio).
    fn clipped_mask(&self, blobs: &[bool], p: &ProfileParams) -> Vec<usize> {
        let key = |n: &Near| (n.blob, (n.s / p.rim_bin_mm).floor() as i64);
        let mut rim: HashMap<(usize, i64), f64> = HashMap::new();
        let mut sat: HashMap<(usize, i64), Vec<(f64, usize)>> = HashMap::new();
        for (idx, n) in &self.near {
            if !blobs.get(n.blob).copied().unwrap_or(false) {
                continue;
            }
            if n.w >= 1.0 {
                sat.entry(key(n)).or_default().push((n.depth, *idx));
            } else {
                *rim.entry(key(n)).or_default() += n.w;
            }
        }
        let mut out = Vec::new();
        for (k, mut v) in sat {
            let want = half_peak_voxels(rim.get(&k).copied().unwrap_or(0.0));
            v.sort_by(|a, b| b.0.total_cmp(&a.0));
            out.extend(v.iter().take(want).map(|x| x.1));
        }
        out.sort_unstable();
        out
    }
}

/// Call `f(index, distance mm, [k, j, i])` for every voxel of the volume (`shape`, spacing `sp`) within
/// `r` voxels of `at` along each axis (the box, clipped at the volume's edges; `at` itself at 0 mm).
fn for_each_near(
    at: [usize; 3],
    r: [i64; 3],
    shape: [usize; 3],
    sp: [f64; 3],
    mut f: impl FnMut(usize, f64, [usize; 3]),
) {
    let span = |a: usize| {
        let lo = (at[a] as i64 - r[a]).max(0) as usize;
        let hi = (at[a] as i64 + r[a]).min(shape[a] as i64 - 1).max(-1);
        lo..(hi + 1) as usize
    };
    for kk in span(0) {
        let dk = (kk as f64 - at[0] as f64) * sp[0];
        for jj in span(1) {
            let dj = (jj as f64 - at[1] as f64) * sp[1];
            for ii in span(2) {
                let di = (ii as f64 - at[2] as f64) * sp[2];
                let d = (dk * dk + dj * dj + di * di).sqrt();
                f((kk * shape[1] + jj) * shape[2] + ii, d, [kk, jj, ii]);
            }
        }
    }
}

/// Voxels above half the peak of a Gaussian cross-section clipped at some level, from its rim's metal
/// share (`Σ (v − background) / (clip − background)` over the unsaturated voxels around it): the rim
/// holds `2πσ²` (in voxel areas) whatever the peak, the half-peak disc `2πσ² ln 2`.
fn half_peak_voxels(rim_share: f64) -> usize {
    (std::f64::consts::LN_2 * rim_share.max(0.0)).round() as usize
}

/// The depth of every saturated neighbourhood voxel inside the saturated region: the distance (mm) to
/// the nearest voxel below the clip within `reach_mm`, plus a hundredth of its 26 neighbours' mean
/// metal share (deeper voxels have brighter rims), so that voxels at one distance are ranked.
fn saturated_depth(volume: &Volume, near: &mut [(usize, Near)], clip: f64, reach_mm: f64) {
    let shape = volume.shape();
    let sp = volume.geometry.spacing_kji();
    let r = [0, 1, 2].map(|a| (reach_mm / sp[a]).ceil() as i64);
    let share: HashMap<usize, f64> = near.iter().map(|(i, n)| (*i, n.w)).collect();
    for (idx, n) in near.iter_mut() {
        if n.w < 1.0 {
            continue;
        }
        let [k, j, i] = kji(*idx, shape);
        let mut best = reach_mm;
        let (mut nsum, mut ncount) = (0.0, 0usize);
        for_each_near([k, j, i], r, shape, sp, |at, d, [ku, ju, iu]| {
            if d > 0.0
                && [ku, ju, iu]
                    .iter()
                    .zip([k, j, i])
                    .all(|(&a, b)| a.abs_diff(b) <= 1)
            {
                nsum += share.get(&at).copied().unwrap_or(0.0);
                ncount += 1;
            }
            if d < best && (volume.hu[[ku, ju, iu]] as f64) < clip {
                best = d;
            }
        });
        n.depth = best + 0.01 * nsum / ncount.max(1) as f64;
    }
}

/// Split peak prominences into a contact class and a lower (wire / noise) class; returns the contact
/// prominence (the upper class's median) and the threshold between the classes, or `None` for one
/// class. Prominence, not height: a wire over a low background or at a bend reads as much metal per mm
/// as a contact over bone, but only contacts rise clearly above the stretches on both sides.
pub fn contact_height(peaks: &[Peak], p: &ProfileParams) -> (f64, Option<f64>) {
    let mut h: Vec<f64> = peaks.iter().map(|x| x.prominence).collect();
    h.sort_by(|a, b| a.total_cmp(b));
    if h.is_empty() {
        return (0.0, None);
    }
    // best two-class split (Otsu on the sorted heights)
    let n = h.len();
    let mut best: Option<(f64, usize)> = None;
    for cut in 1..n {
        let (a, b) = h.split_at(cut);
        let ma = a.iter().sum::<f64>() / a.len() as f64;
        let mb = b.iter().sum::<f64>() / b.len() as f64;
        let between = (a.len() * b.len()) as f64 * (mb - ma).powi(2);
        if best.is_none_or(|(v, _)| between > v) {
            best = Some((between, cut));
        }
    }
    if let Some((_, cut)) = best {
        let (a, b) = h.split_at(cut);
        let ma = a.iter().sum::<f64>() / a.len() as f64;
        let mb = b.iter().sum::<f64>() / b.len() as f64;
        // a contact class of fewer peaks than the smallest array holds is the odd bright spot
        if mb >= p.class_ratio * ma.max(1e-9) && b.len() >= p.min_class_peaks {
            return (b[b.len() / 2], Some(0.5 * (a[a.len() - 1] + b[0])));
        }
    }
    (h[n / 2], None)
}

fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(at).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line's Gaussian cross-section, peak far above the clip, sampled on a fine grid: the pixels
    /// above half the peak number what the clipped rim says, whatever the peak and the width.
    #[test]
    fn half_peak_area_from_a_clipped_rim() {
        for (sigma, peak) in [(3.0, 10.0), (3.0, 40.0), (5.0, 8.0), (8.0, 25.0)] {
            let (clip, n) = (1.0, 60i32);
            let (mut rim, mut half) = (0.0, 0usize);
            for y in -n..=n {
                for x in -n..=n {
                    let r2 = (x * x + y * y) as f64;
                    let v = peak * (-r2 / (2.0 * sigma * sigma)).exp();
                    if v < clip {
                        rim += v / clip;
                    }
                    if v >= 0.5 * peak {
                        half += 1;
                    }
                }
            }
            let got = half_peak_voxels(rim) as f64;
            assert!(
                (got - half as f64).abs() <= 0.1 * half as f64 + 2.0,
                "σ {sigma} px, peak {peak}× the clip: {got} voxels from the rim, {half} above half the peak"
            );
            // the saturated bloom itself is several times larger: shrinking it is the point
            let bloom = (2.0 * std::f64::consts::PI * sigma * sigma * peak.ln()).round();
            assert!(
                bloom > 2.0 * got,
                "σ {sigma}, peak {peak}: bloom {bloom}, half {got}"
            );
        }
    }
}
