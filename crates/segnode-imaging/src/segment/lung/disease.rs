//! Dense disease inside the pleural cavity (issue 19): masses, consolidation and collapse are lung; a free
//! pleural effusion is not.
//!
//! The air-based lung of the earlier steps stops where the parenchyma turns solid, so a 5 cm tumour on the
//! pleura was carved out of the lung. Whether a solid region is lung is decided here from **where it lies**,
//! not from its density (on the coarse grid, after the per-side closing):
//!
//! 1. **Rays.** Every voxel is lung (right / left), cavity wall (bone or contrast-filled vessel, fat, air
//!    outside the lungs, tissue outside the body), open (out of field, the airway) or solid. From every
//!    solid voxel rays along 9 lines (the 3 axes, the 2 in-plane and 4 vertical diagonals, both ways) run
//!    through solid tissue to the first non-solid voxel within [`DiseaseParams::reach_mm`].
//! 2. **Enclosed by parenchyma and pleura.** A solid voxel joins a lung when along at least
//!    `min_lung_lung_lines` lines that lung lies on both sides (the parenchyma wraps around it), and along
//!    at least `min_enclosed_lines` of the 9 lines that lung lies on one side and that lung or the cavity
//!    wall on the other. The chest wall fails the first test (along the pleura its rays meet no lung), the
//!    mediastinum and heart the second (medially their rays meet the other lung or run on through the
//!    mediastinum). Nothing below the lowest aerated voxel of its column is a candidate (the diaphragm,
//!    liver, spleen, and the heart under the lung that covers it) unless, along its column through solid
//!    tissue, this lung lies above it and the cavity wall below it within `fat_floor_mm`: fat (the
//!    pericardial or mediastinal fat under a hilar mass) or contrast blood at least
//!    `wall_floor_min_depth_mm` under the lung (the aorta beside a hilar mass; the heart's own wall
//!    under the lung is thinner). A left hilar mass sits on the heart with no lung under it; without
//!    this 80 % of a 40 mm one (second generator) lay below its floor.
//! 3. **Basal disease and fluid.** A lower lobe that is wholly consolidated, a collapsed lobe against the
//!    spine and a free effusion leave no aerated lung below them, so step 2 cannot see them. Their floor
//!    comes from the other side: where this side's lung ends well above the mirrored lowest lung of the
//!    other side (`basal_gap_mm`; the right hemidiaphragm lies higher by `right_dome_higher_mm`), solid
//!    tissue above that floor, with this side's lung above it and the chest wall or spine behind it (the
//!    dependent position), lies in the pleural cavity. A wall with this lung beyond it (a ray cast on
//!    through wall and solid) is inside the chest — contrast blood in the heart's chambers, pericardial
//!    fat — not its back: without that test the second chest generator's healthy heart joined the left
//!    lung (83 mL with contrast, 160 mL without). Needs an axial, unrotated grid and one healthy
//!    base: bilateral basal disease is not recognised. Where the mirror image holds the heart (the medial
//!    part of a right lower lobe), `medial` judges the voxel instead: in the lung's shadow in front,
//!    behind and laterally, above the other side's dome.
//! 4. **Lung or fluid.** A basal region of fluid attenuation (`fluid_hu`; no air inside, lying dependent,
//!    bounded by the chest wall: the radiological signs of a free effusion) is pleural effusion: it stays
//!    out of the lung and, from `min_effusion_ml`, is reported as its own segment. Solid basal regions
//!    (consolidation, collapse: soft-tissue attenuation, air bronchograms left as lung by the air step)
//!    are lung. Density only separates fluid from solid here; lung versus not-lung was decided by place.
//!
//! Known limits: where the pericardial fat plane under a hilar mass is not resolved (a horizontal plane in
//! thick slices), the heart's wall under the mass joins it (~3 mL with contrast on the second generator);
//! without contrast a left hilar mass over the heart is covered ~80 % (nothing but more heart lies under its
//! medial part). The line test alone does not tell the left ventricle's myocardium (solid between lung and
//! contrast blood) from a mass against the mediastinum: on the real contrast chest crop it passes in
//! speckles (one 20 mL region of which the opening leaves 0.3 mL), which the in-plane opening and the
//! smallest mass remove. The same speckle cuts a small juxtapleural mass lying on a rib band into pieces, so
//! the smallest mass counts what the opening leaves of one enclosed region, all pieces together (a 30 mm
//! mass of the second generator: 1.6 + 1.3 mL of a 5.2 mL region, 0 % covered before). A mass on the apex or
//! base with no aerated lung beyond it, disease on both bases, a loculated (non-dependent) effusion, an
//! effusion denser than `fluid_hu` (haemothorax) counted as lung, an empyema or a mass of fluid attenuation
//! at the base counted as effusion.

use super::hull::{self, HullParams};
use super::medial::{dome_top, take_medial, MedialParams, Scene, Walks};
use super::rays::{cast, AIRWAY, BEYOND, CLASS, OPEN, SOLID, WALL};
use super::{LungSegmenter, LEFT_CODE, RIGHT_CODE};
use crate::segment::morph::{self, dims, neighbours6};
use crate::volume::Volume;
use ndarray::{Array3, Zip};
use rayon::prelude::*;

/// Thresholds of the disease step (issue 19); units in the names, reasons in the comments.
#[derive(Debug, Clone)]
pub struct DiseaseParams {
    /// Run the step at all (off: the air-only lung of version 0.1).
    pub enabled: bool,
    /// At or above this coarse mean (HU) a ray meets the cavity wall: ribs, spine and sternum (≥ 300 HU
    /// in a 2 mm block), contrast-filled heart and great vessels. Enhancing tumour and consolidation stay
    /// below ~150 HU.
    pub wall_hu: i16,
    /// Fat (HU, in-plane smoothed): extrapleural, pericardial and mediastinal fat bound the cavity.
    /// Solid disease (≥ −40 HU, even necrotic) and aerated lung (≤ −400 HU) lie outside this range.
    pub fat_hu: [i16; 2],
    /// Longest ray through solid tissue (mm): from the centre of a ~10 cm mass to the lung around it.
    pub reach_mm: f64,
    /// Longest upward ray of the basal rule (mm): through a consolidated lower lobe to the upper lobe.
    pub basal_reach_mm: f64,
    /// Enclosed solid thinner than this in-plane (mm) is pleura, pericardium or a fissure, not disease:
    /// the enclosed set is opened in-plane with a disc of half this diameter.
    pub min_thickness_mm: f64,
    /// Smallest enclosed core kept (mL, after the opening): smaller solid pieces are partial volume at
    /// the apex or pericardium; nodules below this size are taken in by the in-plane closing already.
    pub min_mass_ml: f64,
    /// The rim of an enclosed mass (mm) grown from its core into solid tissue with lung on one side of
    /// at least `min_rim_lines` lines: the part along the pleura whose lines end in the wall both ways.
    pub rim_mm: f64,
    /// Lines (of 9) with lung on one side and lung or wall on the other for the rim.
    pub min_rim_lines: u8,
    /// Basal rule: how far (mm) a basal core grows along the pleura into dependent solid tissue above the
    /// borrowed floor (the top of a consolidated lobe has no aerated lung above it, only chest wall).
    pub basal_rim_mm: f64,
    /// Basal rule: a voxel's mirror image must fall within this distance (mm, in-plane) of the other
    /// lung, so the borrowed cavity never reaches into the mediastinum, aorta or spine.
    pub mirror_tolerance_mm: f64,
    /// Smallest solid basal region taken as diseased lung (mL): a lobe or a collapse, not a sliver of
    /// heart or diaphragm where the domes differ.
    pub min_basal_ml: f64,
    /// Lines (of 9) with this side's lung on both sides for a solid voxel to be enclosed.
    pub min_lung_lung_lines: u8,
    /// Lines (of 9) with lung on one side and lung or the cavity wall on the other.
    pub min_enclosed_lines: u8,
    /// Below the floor (the lowest aerated voxel of its column), solid tissue may still be enclosed
    /// when, along its column through solid tissue only, this lung lies above it and the cavity wall
    /// below it within this distance (mm): fat (the pericardial or mediastinal fat), or contrast blood
    /// at least `wall_floor_min_depth_mm` under the lung. A hilar mass sitting on the heart or beside
    /// the aorta lies below the lung over it (or the bronchus inside it) with no lung under it: the
    /// column floor alone left 80 % of a 40 mm left hilar mass of the second generator out. The
    /// diaphragm and liver fail (more solid tissue under them than this), the heart without contrast
    /// too. 0 turns the exception off.
    pub fat_floor_mm: f64,
    /// The depth (mm, through solid tissue under this lung, and at least two slices between) from
    /// which contrast blood under a voxel counts as the wall below a mass: the heart's own wall under
    /// the lung is thinner (~10 mm of myocardium over the chambers), so it stays below the floor. With
    /// 5 mm slices one slice between let 17 mL of the heart's top into the left lung (second
    /// generator, consolidated right lower lobe).
    pub wall_floor_min_depth_mm: f64,
    /// Basal rule: this side's lung ends at least this far (mm) above the other side's mirrored lowest
    /// lung before its base counts as diseased (normal asymmetry of the domes is 1–2 cm).
    pub basal_gap_mm: f64,
    /// The right hemidiaphragm lies higher than the left (mm; population average 1–2 cm): the floor
    /// borrowed from the other side is shifted by this.
    pub right_dome_higher_mm: f64,
    /// Mean attenuation of a basal region (HU) that makes it fluid: transudate 0–15, exudate up to ~25.
    pub fluid_hu: [f64; 2],
    /// Smallest effusion reported as a segment (mL); smaller fluid is only kept out of the lung.
    pub min_effusion_ml: f64,
    /// In-plane convex fill of enclosed masses (the part against the heart).
    pub hull: HullParams,
    /// In-plane closing radius (mm) of the lung with its masses: fills the notch a mass leaves against
    /// the heart or a vessel of its own attenuation, where no ray meets the pleura (only next to a mass).
    pub notch_mm: f64,
    /// Basal rule: the medial part of a diseased base, where the mirror test fails (see `medial`).
    pub medial: MedialParams,
}

impl Default for DiseaseParams {
    fn default() -> Self {
        DiseaseParams {
            enabled: true,
            wall_hu: 200,
            fat_hu: [-200, -50],
            reach_mm: 80.0,
            basal_reach_mm: 160.0,
            min_thickness_mm: 8.0,
            min_mass_ml: 2.0,
            rim_mm: 10.0,
            basal_rim_mm: 15.0,
            mirror_tolerance_mm: 10.0,
            min_basal_ml: 10.0,
            min_rim_lines: 3,
            min_lung_lung_lines: 2,
            min_enclosed_lines: 7,
            fat_floor_mm: 40.0,
            wall_floor_min_depth_mm: 10.0,
            basal_gap_mm: 20.0,
            right_dome_higher_mm: 10.0,
            fluid_hu: [-20.0, 25.0],
            min_effusion_ml: 10.0,
            hull: HullParams::default(),
            notch_mm: 9.0,
            medial: MedialParams::default(),
        }
    }
}

/// The 9 lines, one direction each (the other is its negation), as `[dk, dj, di]`.
const LINES: [[isize; 3]; 9] = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
    [0, 1, 1],
    [0, 1, -1],
    [1, 1, 0],
    [1, -1, 0],
    [1, 0, 1],
    [1, 0, -1],
];

/// What the disease step adds to the coarse result.
pub(super) struct DiseaseMasks {
    /// Coarse voxels that joined a lung (kept whole at full resolution, not re-thresholded).
    pub lung: Array3<bool>,
    /// Coarse voxels of effusion, per side code (0 = none).
    pub effusion: Array3<u8>,
    /// Flat indices of airway-rim voxels (bronchial wall inside a mass) that joined a lung: no longer
    /// excluded.
    pub released: Vec<usize>,
}

/// Inputs of the disease step on the coarse grid.
pub(super) struct CoarseView<'a> {
    pub c: &'a Array3<i16>,
    pub c_oof: &'a Array3<bool>,
    pub tlab: &'a Array3<u32>,
    pub body_id: u32,
    pub exclude: &'a Array3<bool>,
    /// Small air components that are not lung (air bronchograms, cavities, small gas bubbles).
    pub pocket: &'a Array3<bool>,
    pub f: [usize; 3],
}

/// In-plane opening of `m` by `r` 4-neighbour steps: erode (outside the grid counts as empty), then regrow
/// inside `m` (slices in parallel). The erosion keeps the pixels farther than `r` (city-block) from any
/// pixel outside the mask, from a two-pass distance transform; the regrowth is a breadth-first search of
/// depth `r` inside the mask: the same as `r` steps each, at a cost independent of `r`.
fn open2d(m: &mut [bool], d: [usize; 3], r: usize) {
    let [_, nj, ni] = d;
    let plane = nj * ni;
    m.par_chunks_mut(plane).for_each_init(
        || (vec![0u32; plane], vec![false; plane]),
        |(dist, reached), mp| {
            if !mp.iter().any(|&v| v) {
                return;
            }
            for j in 0..nj {
                for i in 0..ni {
                    let p = j * ni + i;
                    dist[p] = if !mp[p] {
                        0
                    } else {
                        let left = if i > 0 { dist[p - 1] } else { 0 };
                        let up = if j > 0 { dist[p - ni] } else { 0 };
                        left.min(up) + 1
                    };
                }
            }
            for j in (0..nj).rev() {
                for i in (0..ni).rev() {
                    let p = j * ni + i;
                    if dist[p] == 0 {
                        continue;
                    }
                    let right = if i + 1 < ni { dist[p + 1] } else { 0 };
                    let down = if j + 1 < nj { dist[p + ni] } else { 0 };
                    dist[p] = dist[p].min(right.min(down) + 1);
                }
            }
            let mut front: Vec<usize> = Vec::new();
            for p in 0..plane {
                reached[p] = dist[p] as usize > r;
                if reached[p] {
                    front.push(p);
                }
            }
            spread4(front, r, [nj, ni], |q| {
                let take = mp[q] && !reached[q];
                reached[q] |= take;
                take
            });
            mp.copy_from_slice(reached);
        },
    );
}

/// Breadth-first spread from `front` over at most `r` in-plane 4-neighbour steps of a `nj × ni` plane:
/// `take(q)` says whether pixel `q` joins (and marks it), each joined pixel spreads on in the next step.
fn spread4(
    mut front: Vec<usize>,
    r: usize,
    plane: [usize; 2],
    mut take: impl FnMut(usize) -> bool,
) {
    for _ in 0..r {
        let mut next = Vec::new();
        for &p in &front {
            for q in morph::neighbours4(p, plane).into_iter().flatten() {
                if take(q) {
                    next.push(q);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        front = next;
    }
}

/// Geodesic growth of `m` inside `free`: `r` in-plane 4-neighbour steps, then `rz` steps along k. The
/// in-plane part is a breadth-first search of depth `r` per slice; along k, a voxel joins when a voxel of
/// `m` lies within `rz` steps in its column with free voxels all the way (distances up and down the
/// column in two passes): the same as the steps one by one.
fn grow_within(m: &mut [bool], free: &[bool], d: [usize; 3], r: usize, rz: usize) {
    let [nk, nj, ni] = d;
    let plane = nj * ni;
    m.par_chunks_mut(plane)
        .zip(free.par_chunks(plane))
        .for_each(|(mp, fp)| {
            let front: Vec<usize> = (0..plane).filter(|&p| mp[p]).collect();
            spread4(front, r, [nj, ni], |q| {
                let take = !mp[q] && fp[q];
                mp[q] |= take;
                take
            });
        });
    if rz == 0 {
        return;
    }
    // steps from the nearest voxel of `m` below (smaller k) through free voxels; 0 marks `m` itself
    const FAR: u16 = u16::MAX;
    let mut below = vec![FAR; m.len()];
    for k in 0..nk {
        for p in 0..plane {
            let q = k * plane + p;
            below[q] = if m[q] {
                0
            } else if free[q] && k > 0 && below[q - plane] != FAR {
                below[q - plane] + 1
            } else {
                FAR
            };
        }
    }
    let mut above = vec![FAR; plane];
    for k in (0..nk).rev() {
        for (p, up) in above.iter_mut().enumerate() {
            let q = k * plane + p;
            let b = below[q];
            *up = if b == 0 {
                0
            } else if free[q] && k + 1 < nk && *up != FAR {
                *up + 1
            } else {
                FAR
            };
            if b != 0 && (b as usize <= rz || *up as usize <= rz) {
                m[q] = true;
            }
        }
    }
}

fn sides_s_now(sides: &Array3<u8>) -> &[u8] {
    sides.as_slice().expect("layout")
}

/// In-plane dilation of `m` by `r` 4-neighbour steps (slices in parallel): the pixels within city-block
/// distance `r` of the mask, from a two-pass distance transform (cost independent of `r`).
fn dilate2d(m: &mut [bool], d: [usize; 3], r: usize) {
    let [_, nj, ni] = d;
    let plane = nj * ni;
    if r == 0 {
        return;
    }
    m.par_chunks_mut(plane).for_each_init(
        || vec![0u32; plane],
        |dist, mp| {
            if !mp.iter().any(|&v| v) {
                return;
            }
            let far = (nj + ni) as u32 + 1;
            for j in 0..nj {
                for i in 0..ni {
                    let p = j * ni + i;
                    dist[p] = if mp[p] {
                        0
                    } else {
                        let mut x = far;
                        if i > 0 {
                            x = x.min(dist[p - 1] + 1);
                        }
                        if j > 0 {
                            x = x.min(dist[p - ni] + 1);
                        }
                        x
                    };
                }
            }
            for j in (0..nj).rev() {
                for i in (0..ni).rev() {
                    let p = j * ni + i;
                    let mut x = dist[p];
                    if i + 1 < ni {
                        x = x.min(dist[p + 1] + 1);
                    }
                    if j + 1 < nj {
                        x = x.min(dist[p + ni] + 1);
                    }
                    dist[p] = x;
                    mp[p] = x as usize <= r;
                }
            }
        },
    );
}

/// [`morph::close2d`] of `m` as on a grid larger by `pad` (j, i; before, after) of empty voxels: the
/// closing of the work box is that of the whole grid.
fn close2d_padded(m: &Array3<bool>, r: usize, pad: [[usize; 2]; 2]) -> Array3<bool> {
    let [nk, nj, ni] = dims(m);
    let (pj, pi) = (pad[0][0], pad[1][0]);
    let big = [nk, nj + pj + pad[0][1], ni + pi + pad[1][1]];
    if big == [nk, nj, ni] {
        return morph::close2d(m, r);
    }
    let mut a = Array3::from_elem(big, false);
    a.slice_mut(ndarray::s![.., pj..pj + nj, pi..pi + ni])
        .assign(m);
    morph::close2d(&a, r)
        .slice(ndarray::s![.., pj..pj + nj, pi..pi + ni])
        .as_standard_layout()
        .into_owned()
}

/// The voxels of the box `bx` of a `[k, j, i]` array of shape `d`, row-major.
fn crop<T: Copy>(a: &[T], d: [usize; 3], bx: [[usize; 2]; 3]) -> Vec<T> {
    let mut out = Vec::with_capacity(bx.iter().map(|r| r[1] - r[0]).product());
    for k in bx[0][0]..bx[0][1] {
        for j in bx[1][0]..bx[1][1] {
            let row = (k * d[1] + j) * d[2];
            out.extend_from_slice(&a[row + bx[2][0]..row + bx[2][1]]);
        }
    }
    out
}

/// Writes `src` (the box `bx`, row-major) back into the array `dst` of shape `d`.
fn paste<T: Copy>(dst: &mut [T], d: [usize; 3], bx: [[usize; 2]; 3], src: &[T]) {
    let w = bx[2][1] - bx[2][0];
    let mut rows = src.chunks(w);
    for k in bx[0][0]..bx[0][1] {
        for j in bx[1][0]..bx[1][1] {
            let row = (k * d[1] + j) * d[2];
            if let Some(r) = rows.next() {
                dst[row + bx[2][0]..row + bx[2][1]].copy_from_slice(r);
            }
        }
    }
}

/// The body's midline along the x index axis `xa` (1 or 2): the median midpoint of the body's outer extent
/// over the lines along x that cross at least half the widest body. From the outline, not the tissue mass:
/// a consolidated lung or a large heart shifts the centre of the tissue, not the skin.
fn body_midline(tl: &[u32], body_id: u32, d: [usize; 3], xa: usize) -> f64 {
    let [nk, nj, ni] = d;
    let (nx, ny) = if xa == 2 { (ni, nj) } else { (nj, ni) };
    let at = |k: usize, y: usize, x: usize| {
        let (j, i) = if xa == 2 { (y, x) } else { (x, y) };
        tl[(k * nj + j) * ni + i] == body_id
    };
    let mut spans = Vec::new();
    for k in 0..nk {
        for y in 0..ny {
            let Some(a) = (0..nx).find(|&x| at(k, y, x)) else {
                continue; // no body on this line: no need to search it from the other end
            };
            if let Some(b) = (0..nx).rev().find(|&x| at(k, y, x)) {
                spans.push((b - a, (a + b) as f64 / 2.0));
            }
        }
    }
    let widest = spans.iter().map(|s| s.0).max().unwrap_or(0);
    let mut mids: Vec<f64> = spans
        .iter()
        .filter(|s| 2 * s.0 >= widest)
        .map(|s| s.1)
        .collect();
    if mids.is_empty() {
        return (nx as f64 - 1.0) / 2.0;
    }
    mids.sort_by(|a, b| a.total_cmp(b));
    mids[mids.len() / 2]
}

/// Walks along the columns (k) of the classes `lab` (`d` = [nk, nj, ni], row-major; `up_is_k` when the
/// patient's superior is +k) from every solid voxel, through solid voxels only. Returns per voxel the wall
/// met going down within `max_steps` (0 none, 1 fat: a wall voxel with coarse HU in `fat_hu` = [air
/// threshold, wall attenuation), 2 another wall: contrast blood, bone, air that is not lung) and the class
/// met going up with the steps to it (a lung code, or any other class; `OPEN` off the grid).
fn column_walks(
    lab: &[u8],
    c: &[i16],
    d: [usize; 3],
    up_is_k: bool,
    max_steps: u32,
    fat_hu: [i16; 2],
) -> (Vec<u8>, Vec<(u8, u32)>) {
    let [nk, nj, ni] = d;
    let plane = nj * ni;
    let kind = |q: usize| -> u8 {
        if lab[q] != WALL {
            0
        } else if (fat_hu[0]..fat_hu[1]).contains(&c[q]) {
            1
        } else {
            2
        }
    };
    let mut under = vec![0u8; c.len()];
    let mut up = vec![(0u8, 0u32); c.len()];
    // the slices from the inferior end
    let ks: Vec<usize> = if up_is_k {
        (0..nk).collect()
    } else {
        (0..nk).rev().collect()
    };
    // going up: the steps down to the first voxel that is not solid, and its kind
    let mut st: Vec<(u32, u8)> = vec![(u32::MAX, 0); plane];
    for (n, &k) in ks.iter().enumerate() {
        for (r, s) in st.iter_mut().enumerate() {
            let q = k * plane + r;
            if n > 0 {
                let qb = ks[n - 1] * plane + r;
                *s = if lab[qb] == SOLID {
                    (s.0.saturating_add(1), s.1)
                } else {
                    (1, kind(qb))
                };
            }
            if lab[q] == SOLID && s.0 <= max_steps {
                under[q] = s.1;
            }
        }
    }
    // going down: the class met going up through solid voxels, and the steps to it
    let mut st: Vec<(u32, u8)> = vec![(u32::MAX, OPEN); plane];
    for (n, &k) in ks.iter().enumerate().rev() {
        for (r, s) in st.iter_mut().enumerate() {
            let q = k * plane + r;
            if n + 1 < ks.len() {
                let qa = ks[n + 1] * plane + r;
                *s = if lab[qa] == SOLID {
                    (s.0.saturating_add(1), s.1)
                } else {
                    (1, lab[qa])
                };
            }
            if lab[q] == SOLID {
                up[q] = (s.1, s.0);
            }
        }
    }
    (under, up)
}

/// Debug aid: the 6-connected pieces of `m` of at least 0.3 mL (size, k range, mean j, mean i).
fn debug_pieces(what: &str, side: usize, m: &[bool], d: [usize; 3], vox_ml: f64) {
    if !tracing::enabled!(tracing::Level::DEBUG) || !m.iter().any(|&v| v) {
        return;
    }
    let Ok(a) = Array3::from_shape_vec(d, m.to_vec()) else {
        return;
    };
    let (lab, sizes) = morph::label6(&a);
    let mut acc = vec![(usize::MAX, 0usize, 0usize, 0usize); sizes.len()];
    for ((k, j, i), &l) in lab.indexed_iter() {
        if l > 0 {
            let e = &mut acc[l as usize - 1];
            e.0 = e.0.min(k);
            e.1 = e.1.max(k);
            e.2 += j;
            e.3 += i;
        }
    }
    for (n, &sz) in sizes.iter().enumerate() {
        let ml = sz as f64 * vox_ml;
        if ml >= 0.3 {
            let e = acc[n];
            tracing::debug!(
                what,
                side,
                ml,
                k0 = e.0,
                k1 = e.1,
                j = e.2 / sz,
                i = e.3 / sz,
                "disease piece"
            );
        }
    }
}

/// Index axis (and sign) that a patient axis runs along, if the grid is aligned with it (within ~25°).
fn aligned_axis(volume: &Volume, patient_axis: usize) -> Option<(usize, f64)> {
    let g = &volume.geometry;
    [(0, g.normal), (1, g.col_dir), (2, g.row_dir)]
        .into_iter()
        .find(|(_, v)| v[patient_axis].abs() > 0.9)
        .map(|(a, v)| (a, v[patient_axis].signum()))
}

impl LungSegmenter {
    /// The disease step on the coarse side labels `sides` (see the module docs); adds enclosed and basal
    /// solid disease to `sides` and returns what it added and the effusion it recognised.
    pub(super) fn disease(
        &self,
        volume: &Volume,
        cv: &CoarseView,
        sides: &mut Array3<u8>,
        notes: &mut Vec<String>,
    ) -> DiseaseMasks {
        let p = &self.params.disease;
        let d = dims(sides);
        let nk = d[0];
        let mut added = Array3::from_elem(d, false);
        let mut effusion = Array3::<u8>::zeros(d);
        if !p.enabled || nk < 3 {
            return DiseaseMasks {
                lung: added,
                effusion,
                released: Vec::new(),
            };
        }
        let sp = volume.geometry.spacing_kji();
        let csp = [0, 1, 2].map(|a| sp[a] * cv.f[a] as f64);
        let air_hu = self.params.air_hu;
        let c = cv.c.as_slice().expect("layout");
        let mut sw = super::Stopwatch::new();
        // where the classes are worked out: the voxels that can be lung, solid or airway (lung already,
        // or in the field and airway, an air pocket or body tissue below the wall's attenuation), grown
        // by 2 — one for the fat-range voxels that join a lung, one for the smoothing's neighbours
        let (oof_f, ex_f, pk_f) = (
            cv.c_oof.as_slice().expect("layout"),
            cv.exclude.as_slice().expect("layout"),
            cv.pocket.as_slice().expect("layout"),
        );
        let tl_f = cv.tlab.as_slice().expect("layout");
        let sides_f = sides.as_slice().expect("layout");
        let Some(s0) = morph::bbox_where(d, |q| {
            sides_f[q] != 0
                || (!oof_f[q]
                    && (ex_f[q]
                        || if c[q] < air_hu {
                            pk_f[q]
                        } else {
                            tl_f[q] == cv.body_id && c[q] < p.wall_hu
                        }))
        }) else {
            return DiseaseMasks {
                lung: added,
                effusion,
                released: Vec::new(),
            };
        };
        let sb = morph::pad_box(s0, 2, d);
        let full_d = d;
        let d = sb.map(|r| r[1] - r[0]);
        let [_, nj, ni] = d;
        let plane = nj * ni;
        let c_v = crop(c, full_d, sb);
        let c = &c_v[..];
        let sides_v = crop(sides_f, full_d, sb);
        let (oof_v, ex_v, tl_v, pk_v) = (
            crop(oof_f, full_d, sb),
            crop(ex_f, full_d, sb),
            crop(tl_f, full_d, sb),
            crop(pk_f, full_d, sb),
        );
        // in-plane 3×3 mean of the non-air voxels: noise in a necrotic mass must not look like fat, and
        // tissue beside the lung must not average with the air into the fat range
        let mut smooth = vec![0i16; c.len()];
        smooth
            .par_chunks_mut(plane)
            .zip(c.par_chunks(plane))
            .for_each_init(
                || (vec![0i32; plane], vec![0u8; plane]),
                |(hs, hn), (out, cp)| {
                    // separable: sums and counts of the non-air voxels over 3 columns, then 3 rows
                    for j in 0..nj {
                        let row = &cp[j * ni..(j + 1) * ni];
                        for i in 0..ni {
                            let (mut s, mut n) = (0i32, 0u8);
                            for &v in &row[i.saturating_sub(1)..(i + 2).min(ni)] {
                                if v >= air_hu {
                                    s += v as i32;
                                    n += 1;
                                }
                            }
                            hs[j * ni + i] = s;
                            hn[j * ni + i] = n;
                        }
                    }
                    for j in 0..nj {
                        let (j0, j1) = (j.saturating_sub(1), (j + 2).min(nj));
                        for i in 0..ni {
                            let (mut s, mut n) = (0i32, 0i32);
                            for jj in j0..j1 {
                                s += hs[jj * ni + i];
                                n += hn[jj * ni + i] as i32;
                            }
                            out[j * ni + i] = if n > 0 {
                                (s / n) as i16
                            } else {
                                cp[j * ni + i]
                            };
                        }
                    }
                },
            );
        sw.lap("disease: smooth");
        // voxel classes
        let sides_s = &sides_v[..];
        let (oof, ex, tl, pocket) = (&oof_v[..], &ex_v[..], &tl_v[..], &pk_v[..]);
        let mut lab: Vec<u8> = (0..c.len())
            .into_par_iter()
            .map(|q| {
                if sides_s[q] != 0 {
                    sides_s[q]
                } else if oof[q] {
                    OPEN
                } else if ex[q] {
                    AIRWAY
                } else if c[q] < air_hu {
                    // an air bronchogram or cavity inside solid disease is passed through; other air
                    // that is not lung (outside, bowel, a pneumothorax) bounds the cavity
                    if pocket[q] {
                        SOLID
                    } else {
                        WALL
                    }
                } else {
                    let wall = tl[q] != cv.body_id
                        || c[q] >= p.wall_hu
                        || (p.fat_hu[0]..=p.fat_hu[1]).contains(&smooth[q]);
                    if wall {
                        WALL
                    } else {
                        SOLID
                    }
                }
            })
            .collect();
        // partial volume at the lung surface reads as fat: a fat-range voxel touching a lung is that lung
        let fix: Vec<(usize, u8)> = (0..c.len())
            .into_par_iter()
            .filter_map(|q| {
                if lab[q] != WALL || c[q] >= p.wall_hu || c[q] < air_hu {
                    return None;
                }
                let mut side = 0u8;
                neighbours6(q, d, |r| {
                    if sides_s[r] != 0 {
                        side = sides_s[r];
                    }
                });
                (side != 0).then_some((q, side))
            })
            .collect();
        for (q, s) in fix {
            lab[q] = s;
        }
        sw.lap("disease: classes");
        // the work box: every solid, lung and airway voxel and one more. Outside it every voxel is open or
        // wall, so every ray ends where it does on the whole grid, and the in-plane dilations (city-block
        // distances) are the same inside it; the notch closing alone looks farther (see `notch_pad`)
        let Some(core) = morph::bbox_where(d, |q| {
            let v = lab[q];
            v == RIGHT_CODE || v == LEFT_CODE || v == SOLID || v == AIRWAY
        }) else {
            return DiseaseMasks {
                lung: added,
                effusion,
                released: Vec::new(),
            };
        };
        let bx = morph::pad_box(core, 1, d);
        // the same box on the whole grid
        let bf: [[usize; 2]; 3] = [0, 1, 2].map(|a| [bx[a][0] + sb[a][0], bx[a][1] + sb[a][0]]);
        // the closing sees r + 1 voxels beyond its mask, as far as the grid goes
        let r_notch = (p.notch_mm / csp[1].min(csp[2])).round() as usize;
        let notch_pad = [1, 2].map(|a| {
            [
                bf[a][0].min(r_notch + 1),
                (full_d[a] - bf[a][1]).min(r_notch + 1),
            ]
        });
        let bd = bx.map(|r| r[1] - r[0]);
        let x_axis = aligned_axis(volume, 0);
        // the body midline in box coordinates (from the body outline on the whole grid)
        let mid = x_axis
            .filter(|&(xa, _)| xa != 0)
            .map(|(xa, _)| body_midline(tl_f, cv.body_id, full_d, xa) - bf[xa][0] as f64);
        let Ok(mut bsides) = Array3::from_shape_vec(bd, crop(sides_s, d, bx)) else {
            return DiseaseMasks {
                lung: added,
                effusion,
                released: Vec::new(),
            };
        };
        let bc = crop(c, d, bx);
        let blab = crop(&lab, d, bx);
        drop(lab);
        sw.lap("disease: box");
        let m = self.disease_in_box(
            volume,
            blab,
            &bc,
            &mut bsides,
            mid,
            notch_pad,
            csp,
            notes,
            &mut sw,
        );
        paste(
            sides.as_slice_mut().expect("layout"),
            full_d,
            bf,
            bsides.as_slice().expect("layout"),
        );
        paste(
            added.as_slice_mut().expect("layout"),
            full_d,
            bf,
            m.lung.as_slice().expect("layout"),
        );
        paste(
            effusion.as_slice_mut().expect("layout"),
            full_d,
            bf,
            m.effusion.as_slice().expect("layout"),
        );
        let released = m
            .released
            .iter()
            .map(|&q| {
                let (k, j, i) = (q / (bd[1] * bd[2]), (q / bd[2]) % bd[1], q % bd[2]);
                ((k + bf[0][0]) * full_d[1] + j + bf[1][0]) * full_d[2] + i + bf[2][0]
            })
            .collect();
        DiseaseMasks {
            lung: added,
            effusion,
            released,
        }
    }

    /// The disease step from the rays on, on the work box: `lab` the voxel classes, `c` the coarse HU,
    /// `sides` the side labels (changed in place), `mid` the body midline along the x index axis,
    /// `notch_pad` the room (j, i; before, after) the whole grid has around the box for the notch closing.
    #[allow(clippy::too_many_arguments)]
    fn disease_in_box(
        &self,
        volume: &Volume,
        lab: Vec<u8>,
        c: &[i16],
        sides: &mut Array3<u8>,
        mid: Option<f64>,
        notch_pad: [[usize; 2]; 2],
        csp: [f64; 3],
        notes: &mut Vec<String>,
        sw: &mut super::Stopwatch,
    ) -> DiseaseMasks {
        let p = &self.params.disease;
        let d = dims(sides);
        let [nk, nj, ni] = d;
        let plane = nj * ni;
        let mut added = Array3::from_elem(d, false);
        let mut effusion = Array3::<u8>::zeros(d);
        let cvox_ml = csp.iter().product::<f64>() / 1000.0;
        let air_hu = self.params.air_hu;
        let sides_s = sides.as_slice().expect("layout");
        // rays: per line and side, lung-lung and lung-(lung|wall) counts
        let mut ll = [vec![0u8; c.len()], vec![0u8; c.len()]];
        let mut lw = [vec![0u8; c.len()], vec![0u8; c.len()]];
        // the vertical and the antero-posterior rays kept for the basal rule: classes within
        // `basal_reach_mm` (the `BEYOND` flag marks those past `reach_mm`)
        let mut up_ray: Option<(Vec<u8>, f64)> = None;
        let z_axis = aligned_axis(volume, 2);
        let y_axis = aligned_axis(volume, 1);
        let x_axis = aligned_axis(volume, 0);
        let mut back_ray: Option<(Vec<u8>, f64)> = None;
        // three lines (six casts, one task each) at a time, then their counts in one pass
        for lines in LINES.chunks(3) {
            let plan: Vec<([isize; 3], u16, u16, bool, bool, f64)> = lines
                .iter()
                .map(|&line| {
                    let step_mm = (0..3)
                        .map(|a| (line[a] as f64 * csp[a]).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let reach = (p.reach_mm / step_mm).ceil() as u16;
                    let long = (p.basal_reach_mm / step_mm).ceil() as u16;
                    let axis = (0..3)
                        .find(|&a| line[a] != 0 && line.iter().filter(|&&v| v != 0).count() == 1);
                    let is_up = axis.is_some() && axis == z_axis.map(|z| z.0);
                    let is_back = !is_up && axis.is_some() && axis == y_axis.map(|y| y.0);
                    // only the kept rays need the long reach; the others stop at `reach`
                    let max_steps = if is_up || is_back { long } else { reach };
                    (line, max_steps, reach, is_up, is_back, step_mm)
                })
                .collect();
            let mut hits: Vec<Vec<u8>> = plan
                .par_iter()
                .flat_map_iter(|&(line, max_steps, reach, ..)| {
                    [
                        (line, max_steps, reach),
                        (line.map(|v| -v), max_steps, reach),
                    ]
                })
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|(dir, max_steps, reach)| cast(&lab, d, dir, max_steps, reach))
                .collect();
            let [ll0, ll1] = &mut ll;
            let [lw0, lw1] = &mut lw;
            let hs = &hits;
            ll0.par_chunks_mut(plane)
                .zip(ll1.par_chunks_mut(plane))
                .zip(lw0.par_chunks_mut(plane).zip(lw1.par_chunks_mut(plane)))
                .enumerate()
                .for_each(|(k, ((a0, a1), (b0, b1)))| {
                    let base = k * plane;
                    for r in 0..plane {
                        let q = base + r;
                        if lab[q] != SOLID {
                            continue;
                        }
                        // past the reach: open; the airway bounds the cavity like its wall
                        let end = |h: u8| match h {
                            _ if h & BEYOND != 0 => OPEN,
                            AIRWAY => WALL,
                            _ => h,
                        };
                        for pair in hs.chunks(2) {
                            let (e1, e2) = (end(pair[0][q]), end(pair[1][q]));
                            for (code, a, b) in [
                                (RIGHT_CODE, &mut *a0, &mut *b0),
                                (LEFT_CODE, &mut *a1, &mut *b1),
                            ] {
                                let l1 = e1 == code;
                                let l2 = e2 == code;
                                if l1 && l2 {
                                    a[r] += 1;
                                }
                                if (l1 && (l2 || e2 == WALL)) || (l2 && e1 == WALL) {
                                    b[r] += 1;
                                }
                            }
                        }
                    }
                });
            // keep the vertical and the antero-posterior rays for the basal rule
            for (n, &(_, _, _, is_up, is_back, step_mm)) in plan.iter().enumerate().rev() {
                let h2 = hits.remove(2 * n + 1);
                let h1 = hits.remove(2 * n);
                if is_up {
                    // towards superior: the direction whose patient z grows
                    let zs = z_axis.map_or(1.0, |z| z.1);
                    up_ray = Some((if zs > 0.0 { h1 } else { h2 }, step_mm));
                } else if is_back {
                    let ys = y_axis.map_or(1.0, |y| y.1);
                    back_ray = Some((if ys > 0.0 { h1 } else { h2 }, step_mm));
                }
            }
        }
        sw.lap("disease: rays");
        // floors: the lowest aerated voxel of each column, per side (None without an axial grid)
        let floors = z_axis.filter(|&(a, _)| a == 0).map(|(_, zs)| {
            let mut fl = [vec![-1i32; plane], vec![-1i32; plane]];
            for k in 0..nk {
                for q in 0..plane {
                    let s = sides_s[k * plane + q];
                    if s == RIGHT_CODE || s == LEFT_CODE {
                        let f = &mut fl[s as usize - 1][q];
                        let lower = *f < 0
                            || if zs > 0.0 {
                                (k as i32) < *f
                            } else {
                                (k as i32) > *f
                            };
                        if lower {
                            *f = k as i32;
                        }
                    }
                }
            }
            (fl, zs)
        });
        let below = |k: usize, f: i32, zs: f64| {
            f < 0
                || if zs > 0.0 {
                    (k as i32) < f
                } else {
                    (k as i32) > f
                }
        };
        // below the floor, solid tissue under this lung with a wall under it (see `fat_floor_mm`)
        // steps from the lung: the depth, and at least two whole slices between (a thick slice blurs
        // the heart's top into the lung over it)
        let min_depth = ((p.wall_floor_min_depth_mm / csp[0]).round() as u32).max(3);
        // a cavity-wall voxel is fat in this coarse HU range (its class came from the smoothed fat range):
        // the floor exception's wall under a mass and the medial rule's fat beside it
        let fat_wall_hu = [air_hu, p.wall_hu];
        // per voxel: 1 = fat under within reach, 2 = other wall under within reach; plus the lung code
        // met going up through solid tissue and the steps to it
        let (wall_under, lung_up) = match &floors {
            Some((_, zs)) if p.fat_floor_mm > 0.0 => column_walks(
                &lab,
                c,
                d,
                *zs > 0.0,
                (p.fat_floor_mm / csp[0]).round() as u32,
                fat_wall_hu,
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let under_floor = |q: usize, n: usize| -> bool {
            floors.as_ref().is_some_and(|(fl, zs)| {
                if !below(q / plane, fl[n][q % plane], *zs) {
                    return false;
                }
                let w = wall_under.get(q).copied().unwrap_or(0);
                let (code, steps) = lung_up.get(q).copied().unwrap_or((0, 0));
                // under this lung (through solid tissue), with fat under it, or another wall (the
                // contrast blood of the aorta or the heart) under it and deep enough in the solid
                // tissue not to be the heart's own wall under the lung
                let ok = code as usize == n + 1 && (w == 1 || (w == 2 && steps >= min_depth));
                !ok
            })
        };
        sw.lap("disease: floors");
        // step 2: enclosed solid voxels
        let mut n_enclosed = [0usize; 2];
        let mut enclosed = [vec![false; c.len()], vec![false; c.len()]];
        {
            for q in 0..c.len() {
                if lab[q] != SOLID {
                    continue;
                }
                for n in 0..2 {
                    if ll[n][q] < p.min_lung_lung_lines || lw[n][q] < p.min_enclosed_lines {
                        continue;
                    }
                    if under_floor(q, n) {
                        continue;
                    }
                    enclosed[n][q] = true;
                    break;
                }
            }
            let vox = csp[1].min(csp[2]);
            let r_open = (p.min_thickness_mm / 2.0 / vox).round() as usize;
            let r_grow = (p.rim_mm / vox).round() as usize;
            let r_grow_z = (p.rim_mm / csp[0]).round() as usize;
            for n in 0..2 {
                debug_pieces("enclosed before opening", n, &enclosed[n], d, cvox_ml);
                // the enclosed regions before the opening: the pieces one region leaves are one mass
                let Ok(before) = Array3::from_shape_vec(d, enclosed[n].clone()) else {
                    continue;
                };
                open2d(&mut enclosed[n], d, r_open);
                debug_pieces("enclosed after opening", n, &enclosed[n], d, cvox_ml);
                if !enclosed[n].iter().any(|&v| v) {
                    continue; // no mass on this side: nothing to grow or fill
                }
                // the rim of a mass against the chest wall or the mediastinum: along the pleura its
                // lines meet the wall at both ends, so it is grown from the enclosed core instead
                let weak = Array3::from_shape_fn(d, |(k, j, i)| {
                    let q = (k * nj + j) * ni + i;
                    let ok = lab[q] == SOLID && lw[n][q] >= p.min_rim_lines && !under_floor(q, n);
                    !ok
                });
                let Ok(mut seed) = Array3::from_shape_vec(d, std::mem::take(&mut enclosed[n]))
                else {
                    continue;
                };
                // cores smaller than a mass: partial volume at the apex, bits of pericardium. A core is
                // what the opening leaves of one enclosed region, all its pieces together: where a rib
                // band runs under a small juxtapleural mass the line test speckles on a few slices and
                // the opening cuts the mass into pieces below the smallest mass (a 30 mm mass of the
                // second generator: 1.6 + 1.3 mL of one 5.2 mL region). The left ventricle's speckle on
                // the real contrast crop is one large region (20 mL) of which the opening leaves 0.3 mL.
                let (blab, bsizes) = morph::label6(&before);
                let mut kept = vec![0usize; bsizes.len()];
                Zip::from(&seed).and(&blab).for_each(|&v, &l| {
                    if v && l > 0 {
                        kept[l as usize - 1] += 1;
                    }
                });
                let min_vox = (p.min_mass_ml / cvox_ml).ceil() as usize;
                Zip::from(&mut seed).and(&blab).for_each(|v, &l| {
                    if l == 0 || kept[l as usize - 1] < min_vox {
                        *v = false;
                    }
                });
                let mut grown = seed.into_raw_vec_and_offset().0;
                if r_grow > 0 && grown.iter().any(|&v| v) {
                    let free: Vec<bool> = weak.iter().map(|&w| !w).collect();
                    grow_within(&mut grown, &free, d, r_grow, r_grow_z);
                }
                // the bays the heart or a vessel cuts into a mass (see `hull`)
                for axis in 0..3 {
                    hull::fill_convex(&mut grown, |q| lab[q] == SOLID, d, axis, &p.hull);
                }
                enclosed[n] = grown;
            }
            sw.lap("disease: enclosed+hull");
            // the notch between a mass and the lung beside the heart: the lung with its masses, closed
            // in-plane, takes the solid voxels of the notch next to a mass
            let r_notch = (p.notch_mm / vox).round() as usize;
            for (n, code) in [RIGHT_CODE, LEFT_CODE].into_iter().enumerate() {
                if r_notch == 0 || !enclosed[n].iter().any(|&v| v) {
                    continue;
                }
                let with_mass: Vec<bool> = (0..c.len())
                    .map(|q| sides_s[q] == code || enclosed[n][q])
                    .collect();
                let Ok(m) = Array3::from_shape_vec(d, with_mass) else {
                    continue;
                };
                let closed = close2d_padded(&m, r_notch, notch_pad);
                let mut near = enclosed[n].clone();
                dilate2d(&mut near, d, r_notch);
                let (ms, cs) = (
                    m.as_slice().expect("layout"),
                    closed.as_slice().expect("layout"),
                );
                for q in 0..c.len() {
                    if cs[q] && !ms[q] && near[q] && lab[q] == SOLID {
                        enclosed[n][q] = true;
                    }
                }
            }
            sw.lap("disease: notch");
            let out = sides.as_slice_mut().expect("layout");
            let add = added.as_slice_mut().expect("layout");
            for (n, code) in [RIGHT_CODE, LEFT_CODE].into_iter().enumerate() {
                for (q, &e) in enclosed[n].iter().enumerate() {
                    if e {
                        out[q] = code;
                        add[q] = true;
                        n_enclosed[n] += 1;
                    }
                }
            }
        }
        for (n, name) in ["right", "left"].iter().enumerate() {
            let ml = n_enclosed[n] as f64 * cvox_ml;
            if ml >= 1.0 {
                notes.push(format!(
                    "dense tissue enclosed by the {name} lung kept as lung: {ml:.0} mL"
                ));
            }
        }
        sw.lap("disease: write enclosed");
        // step 3: basal disease, needs an axial grid aligned with x and y
        let (Some((fl, zs)), Some((xa, xs)), Some((up_h, _)), Some((bk_h, _))) =
            (floors, x_axis, up_ray, back_ray)
        else {
            return DiseaseMasks {
                lung: added,
                effusion,
                released: Vec::new(),
            };
        };
        if xa == 0 {
            return DiseaseMasks {
                lung: added,
                effusion,
                released: Vec::new(),
            };
        }
        let Some(mid) = mid else {
            return DiseaseMasks {
                lung: added,
                effusion,
                released: Vec::new(),
            };
        };
        // behind the first wall: a ray towards posterior that passes through wall and solid alike, so
        // the basal rule can tell the posterior chest wall or spine (beyond it the body ends) from
        // contrast blood or fat inside the chest (the heart's chambers, pericardial fat: beyond them
        // this lung goes on, behind the heart)
        let past_wall: Option<Vec<u8>> = y_axis.map(|(ya, ys)| {
            let through: Vec<u8> = lab
                .par_iter()
                .map(|&v| if v == WALL { SOLID } else { v })
                .collect();
            let mut dir = [0isize; 3];
            dir[ya] = if ys > 0.0 { 1 } else { -1 };
            let n = d[ya].min(u16::MAX as usize) as u16;
            cast(&through, d, dir, n, n)
        });
        let nx = if xa == 2 { ni } else { nj };
        let mirror = |r: usize| -> Option<usize> {
            let (j, i) = (r / ni, r % ni);
            let x = if xa == 2 { i } else { j };
            let m = (2.0 * mid - x as f64).round();
            if m < 0.0 || m >= nx as f64 {
                return None;
            }
            let m = m as usize;
            Some(if xa == 2 { j * ni + m } else { m * ni + i })
        };
        let zstep = csp[0];
        let gap = (p.basal_gap_mm / zstep).round() as i32;
        // the other lung, widened in-plane by the tolerance: where the mirror image of a voxel falls
        // in it, the voxel lies where the other side has pleural cavity (not mediastinum, aorta, spine)
        let r_mirror = (p.mirror_tolerance_mm / csp[1].min(csp[2])).round() as usize;
        let wide: Vec<Vec<bool>> = [RIGHT_CODE, LEFT_CODE]
            .iter()
            .map(|&code| {
                let mut m: Vec<bool> = sides_s_now(sides).iter().map(|&s| s == code).collect();
                dilate2d(&mut m, d, r_mirror);
                m
            })
            .collect();
        let mut basal = [Array3::from_elem(d, false), Array3::from_elem(d, false)];
        let mut grow_ok = [Array3::from_elem(d, false), Array3::from_elem(d, false)];
        // basal candidates that fail only the mirror test: judged by the medial rule
        let mut medial_cand = [vec![false; c.len()], vec![false; c.len()]];
        {
            let out = sides.as_slice().expect("layout");
            for (n, code) in [RIGHT_CODE, LEFT_CODE].into_iter().enumerate() {
                let other = 1 - n;
                // this side's floor borrowed from the other: shifted up for the right, down for the left
                let shift_mm = if code == RIGHT_CODE {
                    p.right_dome_higher_mm
                } else {
                    -p.right_dome_higher_mm
                };
                let shift = (shift_mm / zstep).round() as i32 * if zs > 0.0 { 1 } else { -1 };
                let gap_dir = gap * if zs > 0.0 { 1 } else { -1 };
                // per column: the mirror column, the borrowed floor and whether the own base is healthy
                let cols: Vec<Option<(usize, i32, bool)>> = (0..plane)
                    .map(|r| {
                        // this side of the midline only
                        let x = if xa == 2 { r % ni } else { r / ni } as f64;
                        let on_side = ((x - mid) * xs > 0.0) == (code == LEFT_CODE);
                        if !on_side {
                            return None;
                        }
                        let mr = mirror(r)?;
                        let fo = fl[other][mr];
                        if fo < 0 {
                            return None;
                        }
                        let floor = fo + shift;
                        let own = fl[n][r];
                        // the own lung reaches (nearly) as low as the borrowed floor: a healthy base
                        let healthy = own >= 0 && below(own as usize, floor + gap_dir, zs);
                        Some((mr, floor, healthy))
                    })
                    .collect();
                // the highest point of the other side's diaphragm, shifted like the borrowed floor
                let medial_floor = dome_top(&fl[other], ni).map(|f| f + shift);
                let wide_other = &wide[other];
                basal[n]
                    .as_slice_mut()
                    .expect("layout")
                    .par_chunks_mut(plane)
                    .zip(
                        grow_ok[n]
                            .as_slice_mut()
                            .expect("layout")
                            .par_chunks_mut(plane),
                    )
                    .zip(medial_cand[n].par_chunks_mut(plane))
                    .enumerate()
                    .for_each(|(k, ((bs, gs), ms))| {
                        // the mirror image, shifted by the difference of the domes
                        let ko = k as i32 - shift;
                        if ko < 0 || ko as usize >= nk {
                            return;
                        }
                        let wo = &wide_other[ko as usize * plane..(ko as usize + 1) * plane];
                        for (r, col) in cols.iter().enumerate() {
                            let Some((mr, floor, healthy)) = *col else {
                                continue;
                            };
                            let q = k * plane + r;
                            if lab[q] != SOLID || out[q] != 0 {
                                continue;
                            }
                            // dependent: the chest wall or spine (or this lung) behind it; a wall
                            // with lung beyond it is inside the chest (the heart), not its wall
                            let lung_past_wall = past_wall.as_ref().is_some_and(|h| {
                                let c = h[q] & CLASS;
                                c == RIGHT_CODE || c == LEFT_CODE
                            });
                            let behind_wall = bk_h[q] & CLASS == WALL && !lung_past_wall;
                            let lung_above = up_h[q] & CLASS == code;
                            if !wo[mr] || below(k, floor, zs) {
                                // the mirror image holds the heart, or lies under it (the borrowed
                                // floor is the top of the heart): the medial rule judges the voxel,
                                // above the other side's dome
                                // behind it the wall or this lung (an air bronchogram in the lobe)
                                let behind = behind_wall || bk_h[q] & CLASS == code;
                                ms[r] = lung_above
                                    && behind
                                    && medial_floor.is_some_and(|f| !below(k, f, zs));
                                continue;
                            }
                            if behind_wall {
                                gs[r] = true;
                            }
                            if !healthy && lung_above && behind_wall {
                                bs[r] = true;
                            }
                        }
                    });
            }
        }
        // the medial part of a diseased base, against the mediastinum: in the lung's shadow in front,
        // behind and laterally (see `medial`)
        let ya = y_axis.filter(|&(a, _)| a != 0 && a != xa);
        if let (true, Some((ya, ys))) = (p.medial.enabled, ya) {
            let step = |axis: usize, sign: f64| -> [isize; 2] {
                let s = if sign > 0.0 { 1 } else { -1 };
                if axis == 1 {
                    [s, 0]
                } else {
                    [0, s]
                }
            };
            let vox = csp[1].min(csp[2]);
            let out = sides.as_slice().expect("layout");
            let scene = Scene {
                lab: &lab,
                c,
                sides: out,
                d,
                mixed_hu: [air_hu, p.fat_hu[1]],
                fat_wall_hu,
                fat_medial: p.medial.fat_medial,
            };
            for (n, code) in [RIGHT_CODE, LEFT_CODE].into_iter().enumerate() {
                if (p.medial.right_lung_only && code != RIGHT_CODE)
                    || !medial_cand[n].iter().any(|&v| v)
                {
                    continue;
                }
                // anterior: patient −y; lateral: −x for the right lung, +x for the left
                let walks = Walks {
                    anterior: step(ya, -ys),
                    lateral: step(xa, if code == RIGHT_CODE { -xs } else { xs }),
                    reach: (p.medial.reach_mm / vox).round() as usize,
                    skip: (p.medial.partial_volume_mm / vox).round() as usize,
                };
                let added_n = take_medial(
                    &scene,
                    &medial_cand[n],
                    basal[n].as_slice_mut().expect("layout"),
                    code,
                    &walks,
                );
                tracing::debug!(side = n, voxels = added_n, "medial basal rule");
            }
        }
        sw.lap("disease: basal rule");
        // the core grows along the pleura into the parts whose upward ray leaves the cavity (the top of
        // a consolidated lower lobe, the thin anterior edge above the dome)
        let r_basal = (p.basal_rim_mm / csp[1].min(csp[2])).round() as usize;
        let mut ml = [[0.0f64; 2]; 2]; // [side][solid, fluid]
        for (n, code) in [RIGHT_CODE, LEFT_CODE].into_iter().enumerate() {
            if !basal[n].iter().any(|&v| v) {
                continue;
            }
            // cores too small for a lobe: slivers where the domes or the heart differ between sides
            let (clab, csizes) = morph::label6(&basal[n]);
            let min_vox = (p.min_basal_ml / cvox_ml).ceil() as usize;
            Zip::from(&mut basal[n]).and(&clab).for_each(|b, &l| {
                if l > 0 && csizes[l as usize - 1] < min_vox {
                    *b = false;
                }
            });
            if !basal[n].iter().any(|&v| v) {
                continue;
            }
            let grown = if r_basal > 0 {
                let block = grow_ok[n].mapv(|v| !v);
                morph::dilate6(&basal[n], r_basal, Some(&block))
            } else {
                basal[n].clone()
            };
            // step 4: per region, fluid or solid
            let (blab, bsizes) = morph::label6(&grown);
            let bl = blab.as_slice().expect("layout");
            let mut sums = vec![0i64; bsizes.len()];
            for q in 0..c.len() {
                if bl[q] > 0 {
                    sums[bl[q] as usize - 1] += c[q] as i64;
                }
            }
            let verdict: Vec<Option<bool>> = sums
                .iter()
                .zip(&bsizes)
                .map(|(&sum, &size)| {
                    let mean = sum as f64 / size.max(1) as f64;
                    let fluid = (p.fluid_hu[0]..=p.fluid_hu[1]).contains(&mean);
                    // small solid regions at the base are more likely the heart or the diaphragm's
                    // slope than a diseased lobe
                    (fluid || size as f64 * cvox_ml >= p.min_basal_ml).then_some(fluid)
                })
                .collect();
            let out = sides.as_slice_mut().expect("layout");
            let add = added.as_slice_mut().expect("layout");
            let eff = effusion.as_slice_mut().expect("layout");
            for q in 0..c.len() {
                if bl[q] == 0 || out[q] != 0 {
                    continue;
                }
                match verdict[bl[q] as usize - 1] {
                    Some(true) => {
                        eff[q] = code;
                        ml[n][1] += cvox_ml;
                    }
                    Some(false) => {
                        out[q] = code;
                        add[q] = true;
                        ml[n][0] += cvox_ml;
                    }
                    None => {}
                }
            }
        }
        for (n, name) in ["right", "left"].iter().enumerate() {
            if ml[n][0] >= 1.0 {
                notes.push(format!(
                    "dense {name} lung base (consolidation or collapse) kept as lung: {:.0} mL",
                    ml[n][0]
                ));
            }
            if ml[n][1] >= 1.0 {
                notes.push(format!(
                    "{name} pleural effusion left out of the lung: {:.0} mL",
                    ml[n][1]
                ));
            }
        }
        sw.lap("disease: basal grow+verdict");
        finish_interface(
            &lab,
            c,
            p,
            air_hu,
            d,
            sides.as_slice_mut().expect("layout"),
            added.as_slice_mut().expect("layout"),
            effusion,
        )
    }
}

/// The interface between added disease and its lung: partial-volume voxels read as fat (marked as that
/// lung for the rays) and the bronchial wall inside a hilar mass (the airway rim) join the disease.
#[allow(clippy::too_many_arguments)]
fn finish_interface(
    lab: &[u8],
    c: &[i16],
    p: &DiseaseParams,
    air_hu: i16,
    d: [usize; 3],
    out: &mut [u8],
    add: &mut [bool],
    effusion: Array3<u8>,
) -> DiseaseMasks {
    let extra: Vec<(usize, u8)> = (0..c.len())
        .into_par_iter()
        .filter_map(|q| {
            if out[q] != 0 || c[q] < air_hu || c[q] >= p.wall_hu {
                return None;
            }
            let mut side = 0u8;
            neighbours6(q, d, |r| {
                if add[r] {
                    side = out[r];
                }
            });
            (side != 0 && (lab[q] == side || lab[q] == AIRWAY)).then_some((q, side))
        })
        .collect();
    let mut released = Vec::new();
    // the bronchial wall where a bronchus ends inside a mass: in-plane islands of solid airway rim with no
    // lumen in them, enclosed by one lung
    let [_, nj, ni] = d;
    let plane = nj * ni;
    let islands: Vec<(usize, u8)> = out
        .par_chunks(plane)
        .enumerate()
        .flat_map_iter(|(k, op)| {
            let base = k * plane;
            let mut seen = vec![false; plane];
            let mut found = Vec::new();
            for start in 0..plane {
                if seen[start] || lab[base + start] != AIRWAY || c[base + start] < air_hu {
                    continue;
                }
                let (mut region, mut stack) = (Vec::new(), vec![start]);
                seen[start] = true;
                let (mut side, mut ok) = (0u8, true);
                while let Some(p) = stack.pop() {
                    region.push(p);
                    for nb in morph::neighbours4(p, [nj, ni]) {
                        let Some(r) = nb else {
                            ok = false;
                            continue;
                        };
                        if lab[base + r] == AIRWAY {
                            if c[base + r] < air_hu {
                                ok = false; // the lumen: a bronchus passing, keep it out
                            } else if !seen[r] {
                                seen[r] = true;
                                stack.push(r);
                            }
                        } else if op[r] == RIGHT_CODE || op[r] == LEFT_CODE {
                            if side != 0 && side != op[r] {
                                ok = false;
                            }
                            side = op[r];
                        } else {
                            ok = false;
                        }
                    }
                }
                if ok && side != 0 {
                    found.extend(region.into_iter().map(|p| (base + p, side)));
                }
            }
            found
        })
        .collect();
    for (q, s) in islands {
        out[q] = s;
        add[q] = true;
        released.push(q);
    }
    for (q, s) in extra {
        out[q] = s;
        add[q] = true;
        if lab[q] == AIRWAY {
            released.push(q);
        }
    }
    let lung =
        Array3::from_shape_vec(d, add.to_vec()).unwrap_or_else(|_| Array3::from_elem(d, false));
    DiseaseMasks {
        lung,
        effusion,
        released,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `r` explicit 4-neighbour steps: the definition the distance-transform versions must match.
    fn steps2d(m: &[bool], nj: usize, ni: usize, r: usize, erode_first: bool) -> Vec<bool> {
        let orig = m.to_vec();
        let step = |src: &[bool], grow: bool| -> Vec<bool> {
            (0..nj * ni)
                .map(|p| {
                    let nb = morph::neighbours4(p, [nj, ni]);
                    if grow {
                        (orig[p] || !erode_first)
                            && (src[p] || nb.iter().any(|q| q.is_some_and(|q| src[q])))
                    } else {
                        src[p] && nb.iter().all(|q| q.is_some_and(|q| src[q]))
                    }
                })
                .collect()
        };
        let mut cur = orig.clone();
        if erode_first {
            for _ in 0..r {
                cur = step(&cur, false);
            }
        }
        for _ in 0..r {
            cur = step(&cur, true);
        }
        cur
    }

    #[test]
    fn column_walks_match_stepping_along_each_column() {
        let d = [9usize, 4, 5];
        let n = d.iter().product::<usize>();
        let mut x: u64 = 5;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        // mostly solid, some lung, walls of fat or contrast attenuation
        let lab: Vec<u8> = (0..n)
            .map(|_| match rnd(10) {
                0 => LEFT_CODE,
                1 | 2 => WALL,
                _ => SOLID,
            })
            .collect();
        let c: Vec<i16> = (0..n)
            .map(|_| if rnd(2) == 0 { -80 } else { 300 })
            .collect();
        let plane = d[1] * d[2];
        let (mut fat, mut other) = (0, 0);
        for up_is_k in [true, false] {
            let (under, up) = column_walks(&lab, &c, d, up_is_k, 3, [-400, 200]);
            for q in 0..n {
                if lab[q] != SOLID {
                    continue;
                }
                let (k, r) = ((q / plane) as isize, q % plane);
                let (down, upward) = if up_is_k { (-1, 1) } else { (1, -1) };
                // the definition: step until the first voxel that is not solid
                let walk = |dir: isize| -> Option<(usize, u32)> {
                    let (mut kk, mut steps) = (k, 0);
                    loop {
                        kk += dir;
                        steps += 1;
                        if kk < 0 || kk >= d[0] as isize {
                            return None;
                        }
                        let qq = kk as usize * plane + r;
                        if lab[qq] != SOLID {
                            return Some((qq, steps));
                        }
                    }
                };
                let want_under = match walk(down) {
                    Some((qq, s)) if s <= 3 && lab[qq] == WALL => {
                        if c[qq] < 200 {
                            1
                        } else {
                            2
                        }
                    }
                    _ => 0,
                };
                fat += (want_under == 1) as usize;
                other += (want_under == 2) as usize;
                assert_eq!(under[q], want_under, "under, q {q}, up_is_k {up_is_k}");
                match walk(upward) {
                    Some((qq, s)) => assert_eq!(up[q], (lab[qq], s), "up, q {q}"),
                    None => assert_eq!(up[q].0, OPEN, "up off the grid, q {q}"),
                }
            }
        }
        assert!(
            fat > 0 && other > 0,
            "both kinds of wall under: {fat} {other}"
        );
    }

    #[test]
    fn geodesic_growth_matches_repeated_steps() {
        let d = [7usize, 9, 11];
        let n = d.iter().product::<usize>();
        let plane = d[1] * d[2];
        let mut x: u64 = 11;
        let mut rnd = |pct: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 100 < pct
        };
        let m: Vec<bool> = (0..n).map(|_| rnd(4)).collect();
        let free: Vec<bool> = (0..n).map(|_| rnd(70)).collect();
        for (r, rz) in [(0, 0), (1, 0), (2, 1), (3, 3), (0, 2)] {
            // the definition: r in-plane steps per slice, then rz steps along k, each from a copy
            let mut want = m.clone();
            for k in 0..d[0] {
                for _ in 0..r {
                    let src = want.clone();
                    for p in 0..plane {
                        let q = k * plane + p;
                        if want[q] || !free[q] {
                            continue;
                        }
                        let (j, i) = (p / d[2], p % d[2]);
                        want[q] = (i > 0 && src[q - 1])
                            || (i + 1 < d[2] && src[q + 1])
                            || (j > 0 && src[q - d[2]])
                            || (j + 1 < d[1] && src[q + d[2]]);
                    }
                }
            }
            for _ in 0..rz {
                let src = want.clone();
                for q in 0..n {
                    if want[q] || !free[q] {
                        continue;
                    }
                    let k = q / plane;
                    want[q] = (k > 0 && src[q - plane]) || (k + 1 < d[0] && src[q + plane]);
                }
            }
            let mut got = m.clone();
            grow_within(&mut got, &free, d, r, rz);
            assert_eq!(got, want, "r {r} rz {rz}");
        }
    }

    #[test]
    fn opening_and_dilation_match_repeated_steps() {
        let (nj, ni) = (23, 31);
        let mut x: u64 = 7;
        for fill in [30u64, 60, 85] {
            let m: Vec<bool> = (0..2 * nj * ni)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % 100 < fill
                })
                .collect();
            for r in 0..5 {
                let mut o = m.clone();
                open2d(&mut o, [2, nj, ni], r);
                let mut g = m.clone();
                dilate2d(&mut g, [2, nj, ni], r);
                for k in 0..2 {
                    let s = &m[k * nj * ni..(k + 1) * nj * ni];
                    assert_eq!(
                        &o[k * nj * ni..(k + 1) * nj * ni],
                        &steps2d(s, nj, ni, r, true)[..],
                        "open r {r} fill {fill}"
                    );
                    assert_eq!(
                        &g[k * nj * ni..(k + 1) * nj * ni],
                        &steps2d(s, nj, ni, r, false)[..],
                        "dilate r {r} fill {fill}"
                    );
                }
            }
        }
    }
}
