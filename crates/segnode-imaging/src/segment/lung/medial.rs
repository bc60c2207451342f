//! The medial part of a consolidated lower lobe (issue 19), where the basal rule's mirror test cannot
//! judge it: the heart lies left of the midline, so the mirror image of the right lobe's medial part falls
//! in the heart, not near the left lung, and that part was left out (~11 % of a consolidated right lower
//! lobe on the phantom).
//!
//! Decided from where the region lies, in the axial plane: a solid voxel whose mirror image holds the
//! heart, with this lung above it and the chest wall or spine behind it (the basal rule's other
//! conditions), joins the lung when, walking in-plane through solid tissue, it meets this lung — aerated,
//! or the **basal core** (the consolidated lobe already taken in by the mirror test) — **in front** (the
//! aerated lung over the consolidation), **behind** and **laterally**, and the core itself laterally or
//! behind: a whole consolidated lobe leaves its core lateral to the medial part; a consolidated medial
//! basal segment leaves aerated lobe lateral to it and its own posterior part (taken by the mirror test,
//! whose mirror image lies beside the spine, not in the heart) behind it. Such a voxel lies in the shadow
//! of the lung in three directions; only the medial side is open, and that side is the mediastinal
//! pleura. The heart fails: in front of it is the anterior chest wall or more mediastinum, not
//! lung; the posterior mediastinum and the spine fail too: in front of them lies the heart. A healthy base
//! has no basal core, so nothing is added to it.
//!
//! The floor: the borrowed floor of such a column is the top of the heart on the other side, useless; the
//! liver dome inside a ring of lung base would pass the walks. The floor is instead the highest point of
//! the other side's diaphragm ([`dome_top`], the lowest lung at the centre of the other lung's footprint),
//! shifted by the difference of the domes like the borrowed floor.
//!
//! Beside the mediastinal fat ([`MedialParams::fat_medial`]) the walks in front and behind are not
//! needed: fat medially and the core laterally or behind place the voxel in the pleural cavity.
//!
//! Known limits: the thin strip between the lobe and the spine (behind it lies the wall, not lung) stays
//! out; so does the medial part below the other side's dome top (~2 % of the phantom's lobe, ~12 % of a
//! consolidated medial basal segment), and where consolidation meets the heart at the same density the
//! boundary is a guess (the walks stop in the heart short of the pericardial fat: ~2 mL of heart taken,
//! ~6 % of that segment left out on the phantom); the right lung only (see
//! [`MedialParams::right_lung_only`]); an axial grid aligned with the patient axes is needed (as for the
//! basal rule).

use super::rays::{SOLID, WALL};
use rayon::prelude::*;

/// Limits of the medial rule; units in the names.
#[derive(Debug, Clone)]
pub struct MedialParams {
    /// Run the rule at all.
    pub enabled: bool,
    /// Judge the right lung only. The heart lies left of the midline, so it is the right lobe's mirror
    /// image that falls in the heart; on the left the mirror image falls in the right lung, and the left
    /// voxels whose mirror test fails are the descending aorta and the spine, which the left lower lobe
    /// wraps (on the phantom the rule added 3.7 mL of aorta there and no lobe). Dextrocardia is not
    /// recognised.
    pub right_lung_only: bool,
    /// Longest in-plane walk through solid tissue (mm): across the medial part of a lower lobe, ~5 cm,
    /// with room; a walk that goes on longer is in the mediastinum or the liver.
    pub reach_mm: f64,
    /// A walk passes a band of mixed voxels (coarse mean between the air and the fat threshold) up to
    /// this width (mm): an oblique fissure crossing a thick slice leaves such a band, 3–6 mm wide,
    /// between the aerated and the consolidated lobe. The lateral walk passes an air bronchogram (this
    /// lung, aerated, inside the consolidation) of up to this width too. Fat thicker than this
    /// (pericardial fat in front of the heart) still stops a walk.
    pub partial_volume_mm: f64,
    /// Beside the mediastinum: a voxel whose medial walk, through solid tissue only, ends in a layer of
    /// fat thicker than `partial_volume_mm` (the mediastinal fat; the heart's right border ends medially
    /// in its own blood or runs on through the heart past the reach) joins with the basal core lateral
    /// to it or behind it, whatever lies in front (the heart) and behind (the spine). The medial strip
    /// of a consolidated right lower lobe of the second generator lies there: of its candidates that
    /// failed the shadow walks, 2 % failed only the front, the rest the walks behind or lateral (the
    /// lobe covered 93.2 / 94.1 % at 1.25 / 5 mm without this, 94.0 / 95.3 % with it).
    pub fat_medial: bool,
}

impl Default for MedialParams {
    fn default() -> Self {
        MedialParams {
            enabled: true,
            right_lung_only: true,
            reach_mm: 60.0,
            partial_volume_mm: 5.0,
            fat_medial: true,
        }
    }
}

/// In-plane steps (dj, di) of the three walks: anterior, posterior and lateral for this lung.
pub(super) struct Walks {
    pub anterior: [isize; 2],
    pub lateral: [isize; 2],
    /// Longest walk (voxels).
    pub reach: usize,
    /// Longest run of mixed voxels passed (voxels, see [`MedialParams::partial_volume_mm`]).
    pub skip: usize,
}

/// What the walks look at, on the work box `d`: voxel classes, coarse HU and side labels.
pub(super) struct Scene<'a> {
    pub lab: &'a [u8],
    pub c: &'a [i16],
    pub sides: &'a [u8],
    pub d: [usize; 3],
    /// Coarse HU range of the mixed voxels at the lung's border: [air threshold, top of fat].
    pub mixed_hu: [i16; 2],
    /// Coarse HU range in which a cavity-wall voxel is fat (its class came from the smoothed fat
    /// range): [air threshold, the wall's attenuation].
    pub fat_wall_hu: [i16; 2],
    /// See [`MedialParams::fat_medial`].
    pub fat_medial: bool,
}

/// The top of a lung's diaphragm from `floors` (the lowest aerated voxel per column of a `· × ni` plane,
/// −1 where none): the floor of the column at the centroid of the lung's footprint, where the dome is
/// highest and no heart lies under the lung. `None` without lung there.
pub(super) fn dome_top(floors: &[i32], ni: usize) -> Option<i32> {
    let (mut n, mut sj, mut si) = (0usize, 0usize, 0usize);
    for (r, &f) in floors.iter().enumerate() {
        if f >= 0 {
            n += 1;
            sj += r / ni;
            si += r % ni;
        }
    }
    if n == 0 {
        return None;
    }
    let r = (sj as f64 / n as f64).round() as usize * ni + (si as f64 / n as f64).round() as usize;
    floors.get(r).copied().filter(|&f| f >= 0)
}

/// Adds to `basal` (the basal core of lung `code`) the candidates `cand` that meet this lung in front,
/// behind and laterally, and the core laterally or behind (module docs). Returns the number of voxels
/// added.
pub(super) fn take_medial(
    scene: &Scene,
    cand: &[bool],
    basal: &mut [bool],
    code: u8,
    walks: &Walks,
) -> usize {
    let Scene {
        lab,
        c,
        sides,
        d,
        mixed_hu,
        fat_wall_hu,
        fat_medial,
    } = *scene;
    let [_, nj, ni] = d;
    let plane = nj * ni;
    let posterior = walks.anterior.map(|v| -v);
    let basal_now: &[bool] = basal;
    // this lung: its label, or its border of mixed voxels that the rays count as this lung
    let own = |r: usize| sides[r] == code || lab[r] == code;
    let is_lung = |r: usize, core_only: bool| basal_now[r] || (own(r) && !core_only);
    let meets = |q: usize, step: [isize; 2], core_only: bool| -> bool {
        let (k, j0, i0) = (q / plane, ((q % plane) / ni) as isize, (q % ni) as isize);
        let at = |n: usize| -> Option<usize> {
            let (j, i) = (j0 + n as isize * step[0], i0 + n as isize * step[1]);
            (j >= 0 && i >= 0 && j < nj as isize && i < ni as isize)
                .then(|| k * plane + j as usize * ni + i as usize)
        };
        // consecutive voxels passed that are not solid: the mixed band, or (laterally) an air bronchogram
        let mut run = 0;
        for n in 1..=walks.reach {
            let Some(r) = at(n) else {
                return false;
            };
            if is_lung(r, core_only) {
                return true;
            }
            if lab[r] == SOLID && sides[r] == 0 {
                run = 0;
                continue;
            }
            let mixed = sides[r] == 0 && (mixed_hu[0]..mixed_hu[1]).contains(&c[r]);
            let bronchogram = core_only && own(r);
            run += 1;
            if !(mixed || bronchogram) || run > walks.skip {
                return false;
            }
        }
        false
    };
    // the medial walk: through solid tissue, then a layer of fat thicker than the mixed band
    let medial = walks.lateral.map(|v| -v);
    let fat_beside = |q: usize| -> bool {
        let (k, j0, i0) = (q / plane, ((q % plane) / ni) as isize, (q % ni) as isize);
        let mut fat = 0;
        for n in 1..=walks.reach + walks.skip + 1 {
            let (j, i) = (j0 + n as isize * medial[0], i0 + n as isize * medial[1]);
            if j < 0 || i < 0 || j >= nj as isize || i >= ni as isize {
                return false;
            }
            let r = k * plane + j as usize * ni + i as usize;
            if fat == 0 && lab[r] == SOLID && sides[r] == 0 && n <= walks.reach {
                continue;
            }
            let is_fat =
                lab[r] == WALL && sides[r] == 0 && (fat_wall_hu[0]..fat_wall_hu[1]).contains(&c[r]);
            if !is_fat {
                return false;
            }
            fat += 1;
            if fat > walks.skip {
                return true;
            }
        }
        false
    };
    let found: Vec<usize> = (0..cand.len())
        .into_par_iter()
        .filter(|&q| {
            if !cand[q] || basal_now[q] {
                return false;
            }
            let lateral_core = meets(q, walks.lateral, true);
            let posterior_core = meets(q, posterior, true);
            let shadow = meets(q, walks.anterior, false)
                && ((lateral_core && meets(q, posterior, false))
                    || (posterior_core && meets(q, walks.lateral, false)));
            // beside the mediastinal fat, with the lobe's core lateral or behind it
            shadow || (fat_medial && (lateral_core || posterior_core) && fat_beside(q))
        })
        .collect();
    for &q in &found {
        basal[q] = true;
    }
    found.len()
}
