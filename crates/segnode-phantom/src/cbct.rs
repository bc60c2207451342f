//! Deterministic (seeded) temporal-bone CBCT phantoms with implanted cochlear electrode arrays, for the
//! `cochlear` pipeline's tests and benchmark.
//!
//! The model is analytic in patient coordinates (LPS mm; +x = patient left): a head of soft tissue, per
//! ear a dense petrous bone with a denser otic capsule around a cochlea-like spiral canal (2.5 turns, radius
//! 4 → 1 mm, rising along a modiolar axis that points anterolaterally and slightly down), an air-filled
//! middle ear and a mastoid with air cells; the right ear is the mirror image of the left. An electrode
//! array is a chain of ball contacts placed along the canal at a fixed pitch, joined by a thin wire, with
//! an extracochlear lead running out through the mastoid. Optional teeth with an amalgam filling far from
//! the ears.
//!
//! Image formation: metal is blurred by the device's point-spread function (exact Gaussian-blurred ball
//! occupancy; Gaussian line profile for wires), added to the anatomy with a very high effective
//! attenuation, streaks from the metal are added in the acquisition (axial) planes, Gaussian noise, and the
//! result is clipped at the device's maximum.
//!
//! Ground truth: an electrode is its metal at physical size, the contacts' balls ∪ the wire ∪ the lead
//! (each a cylinder of its radius around its polyline), voxels whose 4×4×4 supersampled occupancy is at
//! least one half: the same definition as the second generator's (tests/py/cbct2.py) and issue 11's
//! ("the phantom's true metal, contacts ∪ lead at physical size"). The wire (0.07 mm) and the lead
//! (0.16 mm) are thinner than half a voxel on every tested grid, so in practice the truth is the
//! contacts. The saturated bloom the device shows is 3-5× larger than that metal; it is not the truth of
//! an electrode. The dental filling's truth stays its bloom (clean value at the device maximum): it is a
//! region that must never be labelled, and the bloom is the stricter (larger) test of that.

use crate::rng::Rng;
use ndarray::{Array3, Axis};
use rayon::prelude::*;
use segnode_imaging::volume::geometry::{cross, dot, norm, Geometry, Vec3};

/// Ground-truth classes of the CBCT phantom label map.
pub mod cbct_class {
    pub const BACKGROUND: u8 = 0;
    pub const RIGHT_ELECTRODE: u8 = 1;
    pub const LEFT_ELECTRODE: u8 = 2;
    /// Dental amalgam filling (must never be labelled as an electrode).
    pub const FILLING: u8 = 3;
}

/// Slice orientation of the exported stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// IOP 1\0\0\0\1\0.
    Axial,
    /// IOP 1\0\0\0\0\−1 (the orientation CBCT viewers export for ear studies).
    Coronal,
    /// IOP 0\1\0\0\0\−1.
    Sagittal,
    /// The axial frame turned 25° about x, then 20° about z (a double-oblique reformat).
    Oblique,
}

impl Orientation {
    pub fn iop(self) -> [f64; 6] {
        match self {
            Orientation::Axial => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            Orientation::Coronal => [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
            Orientation::Sagittal => [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
            Orientation::Oblique => {
                let (a, b) = (25f64.to_radians(), 20f64.to_radians());
                // R = Rz(b) · Rx(a) applied to the x and y unit vectors
                let r = [b.cos(), b.sin(), 0.0];
                let c = [-b.sin() * a.cos(), b.cos() * a.cos(), a.sin()];
                [r[0], r[1], r[2], c[0], c[1], c[2]]
            }
        }
    }
}

/// Which ears carry an implant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ears {
    Left,
    Right,
    Both,
}

/// Named phantom variants (issue 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CbctVariant {
    /// Coronal stack, right ear, 0.2 mm isotropic, 22 contacts at 0.75 mm.
    CoronalRight,
    /// Coronal stack, left ear, 0.3 mm isotropic, 12 contacts at 2.4 mm.
    CoronalLeft,
    /// Axial stack, both ears, 0.3 mm isotropic (one segment per side).
    AxialBoth,
    /// Axial stack, left ear, 0.2 mm, 16 contacts at 1.1 mm.
    AxialLeft,
    /// Axial stack, right ear and a dental amalgam filling far from the ear, 0.3 mm.
    AxialFilling,
    /// Sagittal stack, left ear, anisotropic 0.25 × 0.25 mm in plane, 0.4 mm between slices, 4095 device max.
    SagittalAniso,
    /// Coronal stack, both ears, 0.3 mm, the left array partly outside the field of view.
    CoronalClipped,
    /// Coronal stack, right ear, 0.3 mm, bright bone: otic capsule at 2750 of a 3071 maximum, more noise.
    BrightBone,
    /// Double-oblique stack, left ear, 0.25 mm.
    Oblique,
    /// Benchmark: axial, both ears, 0.2 mm, a cube of `matrix`³ voxels (400 in the benchmark).
    Bench,
}

impl CbctVariant {
    pub const TESTED: [CbctVariant; 9] = [
        CbctVariant::BrightBone,
        CbctVariant::Oblique,
        CbctVariant::CoronalRight,
        CbctVariant::CoronalLeft,
        CbctVariant::AxialBoth,
        CbctVariant::AxialLeft,
        CbctVariant::AxialFilling,
        CbctVariant::SagittalAniso,
        CbctVariant::CoronalClipped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CbctVariant::CoronalRight => "coronal-right",
            CbctVariant::CoronalLeft => "coronal-left",
            CbctVariant::AxialBoth => "axial-both",
            CbctVariant::AxialLeft => "axial-left",
            CbctVariant::AxialFilling => "axial-filling",
            CbctVariant::SagittalAniso => "sagittal-aniso",
            CbctVariant::CoronalClipped => "coronal-clipped",
            CbctVariant::BrightBone => "bright-bone",
            CbctVariant::Oblique => "oblique",
            CbctVariant::Bench => "bench",
        }
    }
}

/// An electrode array design.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrayDesign {
    pub contacts: usize,
    /// Centre-to-centre distance along the array (mm).
    pub pitch_mm: f64,
    /// Contact diameter (mm).
    pub contact_mm: f64,
    /// Arc length along the canal from the round window to the basal contact (mm).
    pub basal_offset_mm: f64,
}

/// Grid, acquisition and content of a CBCT phantom.
#[derive(Debug, Clone)]
pub struct CbctSpec {
    pub variant: CbctVariant,
    pub seed: u64,
    pub orientation: Orientation,
    /// In-plane pixel spacing (mm).
    pub pixel_mm: f64,
    /// Distance between slices (mm).
    pub slice_mm: f64,
    /// Covered box in patient coordinates: (min, max) corners (mm).
    pub box_min: Vec3,
    pub box_max: Vec3,
    pub ears: Ears,
    /// Array design per side: index 0 = right, 1 = left.
    pub arrays: [ArrayDesign; 2],
    pub filling: bool,
    pub device_max: f64,
    pub noise_sd: f64,
    /// Standard deviation of the device's Gaussian point-spread function (mm).
    pub psf_mm: f64,
    /// Grey value of the otic capsule and of the petrous bone (devices differ in calibration).
    pub capsule_hu: f64,
    pub petrous_hu: f64,
}

/// Cochlea centres (LPS mm) per side: index 0 = right (−x), 1 = left (+x).
pub const COCHLEA: [Vec3; 2] = [[-32.0, 8.0, 0.0], [32.0, 8.0, 0.0]];

impl CbctSpec {
    pub fn new(variant: CbctVariant, seed: u64) -> CbctSpec {
        let mut rng = Rng::new(seed ^ 0xC0C4_1EA5);
        let mut design = |contacts: usize, pitch: f64| ArrayDesign {
            contacts,
            pitch_mm: pitch,
            contact_mm: rng.range(0.3, 0.5),
            basal_offset_mm: rng.range(0.8, 2.0),
        };
        let a_right = design(22, 0.75);
        let a_left = design(12, 2.4);
        let a_mid = design(16, 1.1);
        let a_mid2 = design(19, 1.3);
        let unilateral = |c: Vec3| {
            (
                [c[0] - 11.0, c[1] - 12.0, c[2] - 9.0],
                [c[0] + 13.0, c[1] + 12.0, c[2] + 9.0],
            )
        };
        let mirror_x = |(a, b): (Vec3, Vec3)| ([-b[0], a[1], a[2]], [-a[0], b[1], b[2]]);
        let (rmin, rmax) = mirror_x(unilateral(COCHLEA[1]));
        let (lmin, lmax) = unilateral(COCHLEA[1]);
        let mut s = CbctSpec {
            variant,
            seed,
            orientation: Orientation::Coronal,
            pixel_mm: 0.2,
            slice_mm: 0.2,
            box_min: rmin,
            box_max: rmax,
            ears: Ears::Right,
            arrays: [a_right, a_left],
            filling: false,
            device_max: 3071.0,
            noise_sd: 45.0,
            psf_mm: 0.12,
            capsule_hu: 1900.0,
            petrous_hu: 1250.0,
        };
        match variant {
            CbctVariant::CoronalRight => {}
            CbctVariant::CoronalLeft => {
                s.pixel_mm = 0.3;
                s.slice_mm = 0.3;
                s.box_min = lmin;
                s.box_max = lmax;
                s.ears = Ears::Left;
            }
            CbctVariant::AxialBoth => {
                s.orientation = Orientation::Axial;
                s.pixel_mm = 0.3;
                s.slice_mm = 0.3;
                s.box_min = [-45.0, -4.0, -9.0];
                s.box_max = [45.0, 20.0, 9.0];
                s.ears = Ears::Both;
                s.arrays = [a_mid2, a_mid];
            }
            CbctVariant::AxialLeft => {
                s.orientation = Orientation::Axial;
                s.box_min = lmin;
                s.box_max = lmax;
                s.ears = Ears::Left;
                s.arrays[1] = a_mid;
            }
            CbctVariant::AxialFilling => {
                s.orientation = Orientation::Axial;
                s.pixel_mm = 0.3;
                s.slice_mm = 0.3;
                s.box_min = [-45.0, -52.0, -42.0];
                s.box_max = [-10.0, 18.0, 9.0];
                s.arrays[0] = a_mid2;
                s.filling = true;
            }
            CbctVariant::SagittalAniso => {
                s.orientation = Orientation::Sagittal;
                s.pixel_mm = 0.25;
                s.slice_mm = 0.4;
                s.box_min = lmin;
                s.box_max = lmax;
                s.ears = Ears::Left;
                s.arrays[1] = a_mid2;
                s.device_max = 4095.0;
            }
            CbctVariant::CoronalClipped => {
                s.pixel_mm = 0.3;
                s.slice_mm = 0.3;
                // the left box stops 1 mm lateral of the cochlea centre: the basal part is cut off
                s.box_min = [-45.0, -4.0, -9.0];
                s.box_max = [33.0, 20.0, 9.0];
                s.ears = Ears::Both;
                s.arrays = [a_mid, a_mid2];
            }
            CbctVariant::BrightBone => {
                s.pixel_mm = 0.3;
                s.slice_mm = 0.3;
                s.arrays[0] = a_mid;
                s.capsule_hu = 2750.0;
                s.petrous_hu = 2300.0;
                s.noise_sd = 60.0;
            }
            CbctVariant::Oblique => {
                s.orientation = Orientation::Oblique;
                s.pixel_mm = 0.25;
                s.slice_mm = 0.25;
                s.box_min = lmin;
                s.box_max = lmax;
                s.ears = Ears::Left;
                s.arrays[1] = a_mid2;
            }
            CbctVariant::Bench => {
                s.orientation = Orientation::Axial;
                s.box_min = [-40.0, -32.0, -40.0];
                s.box_max = [40.0, 48.0, 40.0];
                s.ears = Ears::Both;
                s.arrays = [a_right, a_mid];
            }
        }
        s
    }

    /// Resize the box to a cube of `n` voxels per axis around its centre (benchmarks).
    pub fn with_cube(mut self, n: usize) -> CbctSpec {
        let c = [
            0.5 * (self.box_min[0] + self.box_max[0]),
            0.5 * (self.box_min[1] + self.box_max[1]),
            0.5 * (self.box_min[2] + self.box_max[2]),
        ];
        let half_in = 0.5 * (n as f64 - 1.0) * self.pixel_mm;
        let half_sl = 0.5 * (n as f64 - 1.0) * self.slice_mm;
        let g = self.axes();
        for a in 0..3 {
            let h = if g.2[a].abs() > 0.5 { half_sl } else { half_in };
            self.box_min[a] = c[a] - h;
            self.box_max[a] = c[a] + h + 1e-6;
        }
        self
    }

    fn axes(&self) -> (Vec3, Vec3, Vec3) {
        let iop = self.orientation.iop();
        let r = [iop[0], iop[1], iop[2]];
        let c = [iop[3], iop[4], iop[5]];
        (r, c, cross(r, c))
    }

    /// Grid size `[slices, rows, columns]`.
    pub fn shape(&self) -> [usize; 3] {
        let (r, c, n) = self.axes();
        let ext = |d: Vec3| -> f64 {
            (0..3)
                .map(|a| d[a].abs() * (self.box_max[a] - self.box_min[a]))
                .sum()
        };
        [
            (ext(n) / self.slice_mm).floor() as usize + 1,
            (ext(c) / self.pixel_mm).floor() as usize + 1,
            (ext(r) / self.pixel_mm).floor() as usize + 1,
        ]
    }

    /// The index → patient geometry of the grid: centred on the box, covering it.
    pub fn geometry(&self) -> Geometry {
        let (r, c, n) = self.axes();
        let [ns, nr, nc] = self.shape();
        let centre = [
            0.5 * (self.box_min[0] + self.box_max[0]),
            0.5 * (self.box_min[1] + self.box_max[1]),
            0.5 * (self.box_min[2] + self.box_max[2]),
        ];
        let (hc, hr, hs) = (
            0.5 * (nc as f64 - 1.0) * self.pixel_mm,
            0.5 * (nr as f64 - 1.0) * self.pixel_mm,
            0.5 * (ns as f64 - 1.0) * self.slice_mm,
        );
        let mut origin = [0.0; 3];
        for a in 0..3 {
            origin[a] = centre[a] - hc * r[a] - hr * c[a] - hs * n[a];
        }
        Geometry {
            origin,
            row_dir: r,
            col_dir: c,
            normal: n,
            pixel_spacing: [self.pixel_mm, self.pixel_mm],
            slice_spacing: self.slice_mm,
        }
    }

    fn sides(&self) -> Vec<usize> {
        match self.ears {
            Ears::Right => vec![0],
            Ears::Left => vec![1],
            Ears::Both => vec![0, 1],
        }
    }
}

/// One implanted array as placed in the phantom.
#[derive(Debug, Clone)]
pub struct PlacedArray {
    /// 0 = right, 1 = left.
    pub side: usize,
    /// Contact centres (LPS mm), apical tip first.
    pub contacts: Vec<Vec3>,
    pub contact_radius: f64,
    /// Angle swept around the modiolar axis from the basal to the apical contact (degrees).
    pub insertion_angle_deg: f64,
    /// Contact-to-contact length along the array (mm).
    pub length_mm: f64,
}

/// A generated CBCT phantom.
#[derive(Debug, Clone)]
pub struct CbctPhantom {
    pub spec: CbctSpec,
    pub hu: Array3<i16>,
    pub geometry: Geometry,
    /// [`cbct_class`] per voxel: electrodes at their metal's physical size (supersampled occupancy
    /// ≥ 0.5), the filling as its saturated bloom (see the module doc).
    pub truth: Array3<u8>,
    pub arrays: Vec<PlacedArray>,
}

/// The cochlear frame of one side: centre, modiolar axis (base → apex) and two in-plane axes.
#[derive(Debug, Clone, Copy)]
struct Frame {
    c: Vec3,
    w: Vec3,
    u: Vec3,
    v: Vec3,
}

fn unit(a: Vec3) -> Vec3 {
    let n = norm(a);
    [a[0] / n, a[1] / n, a[2] / n]
}

fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn scale(a: Vec3, f: f64) -> Vec3 {
    [a[0] * f, a[1] * f, a[2] * f]
}

fn mirror(p: Vec3, side: usize) -> Vec3 {
    if side == 0 {
        [-p[0], p[1], p[2]]
    } else {
        p
    }
}

impl Frame {
    /// The left frame; the right one is its mirror image (x → −x), so the spirals have opposite handedness.
    fn new(side: usize) -> Frame {
        let w = unit([0.55, -0.75, -0.3]);
        // the basal turn starts (round window) posterolaterally, facing the middle ear
        let l = [1.0, 0.4, 0.0];
        let u0 = unit(sub(l, scale(w, dot(l, w))));
        let v0 = cross(w, u0);
        let f = Frame {
            c: COCHLEA[1],
            w,
            u: u0,
            v: v0,
        };
        if side == 1 {
            f
        } else {
            Frame {
                c: mirror(f.c, 0),
                w: mirror(f.w, 0),
                u: mirror(f.u, 0),
                v: mirror(f.v, 0),
            }
        }
    }

    /// Point of the canal's centre line at angle `t` (radians from the round window).
    fn spiral(&self, t: f64) -> Vec3 {
        let r = SPIRAL_R0 * (-SPIRAL_B * t).exp();
        let h = SPIRAL_RISE * t / SPIRAL_TURNS_RAD - 1.2;
        let (s, c) = t.sin_cos();
        add(
            self.c,
            add(
                add(scale(self.u, r * c), scale(self.v, r * s)),
                scale(self.w, h),
            ),
        )
    }
}

const SPIRAL_R0: f64 = 4.0;
const SPIRAL_TURNS_RAD: f64 = 2.5 * std::f64::consts::TAU;
const SPIRAL_RISE: f64 = 3.2;
/// r(2.5 turns) = 1 mm.
const SPIRAL_B: f64 = 0.088_254_240_5;

/// The canal centre line as a dense polyline with cumulative arc length: (angle, point, s).
fn spiral_table(f: &Frame) -> Vec<(f64, Vec3, f64)> {
    let n = 3000;
    let mut out = Vec::with_capacity(n + 1);
    let mut s = 0.0;
    let mut prev = f.spiral(0.0);
    for i in 0..=n {
        let t = SPIRAL_TURNS_RAD * i as f64 / n as f64;
        let p = f.spiral(t);
        s += norm(sub(p, prev));
        prev = p;
        out.push((t, p, s));
    }
    out
}

fn at_arc(table: &[(f64, Vec3, f64)], s: f64) -> Option<(f64, Vec3)> {
    let i = table.iter().position(|e| e.2 >= s)?;
    Some((table[i].0, table[i].1))
}

/// Squared distance to, and angle of, the nearest canal centre-line sample (coarse then fine search).
fn nearest_on_table(table: &[(f64, Vec3, f64)], p: Vec3) -> (f64, f64) {
    let d2 = |e: &(f64, Vec3, f64)| {
        let dd = sub(p, e.1);
        dot(dd, dd)
    };
    let mut best = (f64::INFINITY, 0usize);
    for (n, e) in table.iter().enumerate().step_by(15) {
        let d = d2(e);
        if d < best.0 {
            best = (d, n);
        }
    }
    let lo = best.1.saturating_sub(15);
    let hi = (best.1 + 15).min(table.len() - 1);
    for n in lo..=hi {
        let d = d2(&table[n]);
        if d < best.0 {
            best = (d, n);
        }
    }
    (best.0, table[best.1].0)
}

/// Standard normal CDF via erf.
fn phi(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// erf (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

/// Occupancy of a ball of radius `a` blurred by an isotropic Gaussian of sd `sg`, at distance `rho`.
fn blurred_ball(rho: f64, a: f64, sg: f64) -> f64 {
    if rho < 1e-6 {
        let z = a / sg;
        return erf(z / std::f64::consts::SQRT_2)
            - z * (2.0 / std::f64::consts::PI).sqrt() * (-0.5 * z * z).exp();
    }
    let k = sg / (rho * (std::f64::consts::TAU).sqrt());
    phi((a - rho) / sg)
        - phi((-a - rho) / sg)
        - k * ((-(rho - a).powi(2) / (2.0 * sg * sg)).exp()
            - (-(rho + a).powi(2) / (2.0 * sg * sg)).exp())
}

/// Distance from `p` to segment `ab`.
fn seg_dist(p: Vec3, a: Vec3, b: Vec3) -> f64 {
    let ab = sub(b, a);
    let t = (dot(sub(p, a), ab) / dot(ab, ab).max(1e-12)).clamp(0.0, 1.0);
    norm(sub(p, add(a, scale(ab, t))))
}

#[derive(Debug, Clone)]
struct MetalArray {
    side: usize,
    contacts: Vec<Vec3>,
    radius: f64,
    /// Wire polyline (contacts + lead) with its radius and effective attenuation.
    wire: Vec<Vec3>,
    lead: Vec<Vec3>,
    lo: Vec3,
    hi: Vec3,
}

/// Effective attenuation of the contacts' platinum (HU before clipping) and of the wires.
const CONTACT_HU: f64 = 50_000.0;
const WIRE_HU: f64 = 24_000.0;
const WIRE_RADIUS: f64 = 0.035;
const LEAD_HU: f64 = 4_000.0;
const LEAD_RADIUS: f64 = 0.08;
const FILLING_HU: f64 = 30_000.0;

struct Model {
    frames: Vec<(usize, Frame, Vec<(f64, Vec3, f64)>)>,
    arrays: Vec<MetalArray>,
    air_cells: Vec<(Vec3, f64)>,
    teeth: Vec<(Vec3, Vec3)>,
    filling: Option<(Vec3, Vec3)>,
    sigma: f64,
    capsule_hu: f64,
    petrous_hu: f64,
}

impl Model {
    fn new(spec: &CbctSpec) -> (Model, Vec<PlacedArray>) {
        let mut rng = Rng::new(spec.seed);
        let voxel2 = (2.0 * spec.pixel_mm * spec.pixel_mm + spec.slice_mm * spec.slice_mm) / 3.0;
        let sigma = (spec.psf_mm * spec.psf_mm + voxel2 / 12.0).sqrt();
        let mut frames = Vec::new();
        let mut arrays = Vec::new();
        let mut placed = Vec::new();
        let mut air_cells = Vec::new();
        for side in 0..2 {
            let f = Frame::new(side);
            let table = spiral_table(&f);
            // mastoid air cells (posterolateral), the same pattern mirrored
            for _ in 0..40 {
                let p = [
                    rng.range(36.0, 50.0),
                    rng.range(14.0, 30.0),
                    rng.range(-8.0, 10.0),
                ];
                air_cells.push((mirror(p, side), rng.range(0.8, 2.2)));
            }
            if spec.sides().contains(&side) {
                let d = spec.arrays[side];
                let mut contacts = Vec::new();
                let mut angles = Vec::new();
                for n in 0..d.contacts {
                    let s = d.basal_offset_mm + n as f64 * d.pitch_mm;
                    if let Some((t, p)) = at_arc(&table, s) {
                        contacts.push(p);
                        angles.push(t);
                    }
                }
                // the lead: from the round window out through the middle ear to the mastoid surface
                let rw = f.spiral(0.0);
                let lead = vec![
                    rw,
                    add(rw, mirror([3.0, 1.0, 1.0], side)),
                    add(rw, mirror([8.0, 6.0, 2.0], side)),
                    add(rw, mirror([20.0, 14.0, 4.0], side)),
                ];
                let mut wire = contacts.clone();
                wire.reverse();
                wire.push(rw);
                let radius = 0.5 * d.contact_mm;
                let mut lo = [f64::INFINITY; 3];
                let mut hi = [f64::NEG_INFINITY; 3];
                for p in contacts.iter().chain(lead.iter()) {
                    for a in 0..3 {
                        lo[a] = lo[a].min(p[a] - 1.5);
                        hi[a] = hi[a].max(p[a] + 1.5);
                    }
                }
                let length: f64 = contacts.windows(2).map(|w| norm(sub(w[1], w[0]))).sum();
                let angle =
                    angles.last().copied().unwrap_or(0.0) - angles.first().copied().unwrap_or(0.0);
                let mut apical_first = contacts.clone();
                apical_first.reverse();
                placed.push(PlacedArray {
                    side,
                    contacts: apical_first,
                    contact_radius: radius,
                    insertion_angle_deg: angle.to_degrees(),
                    length_mm: length,
                });
                arrays.push(MetalArray {
                    side,
                    contacts,
                    radius,
                    wire,
                    lead,
                    lo,
                    hi,
                });
            }
            frames.push((side, f, table));
        }
        let mut teeth = Vec::new();
        let mut filling = None;
        if spec.filling {
            for n in 0..4 {
                let c = [-28.0 + 4.0 * n as f64 * 0.6, -40.0 + 4.5 * n as f64, -34.0];
                teeth.push((c, [2.8, 2.8, 4.0]));
            }
            filling = Some(([-26.0, -40.5, -31.5], [1.6, 1.3, 1.0]));
        }
        (
            Model {
                frames,
                arrays,
                air_cells,
                teeth,
                filling,
                sigma,
                capsule_hu: spec.capsule_hu,
                petrous_hu: spec.petrous_hu,
            },
            placed,
        )
    }

    /// Anatomy (HU) without metal.
    fn anatomy(&self, p: Vec3) -> f64 {
        // head: an ellipsoid of soft tissue, air outside
        let e =
            (p[0] / 72.0).powi(2) + ((p[1] - 5.0) / 95.0).powi(2) + ((p[2] + 10.0) / 80.0).powi(2);
        if e > 1.0 {
            return -1000.0;
        }
        let mut v = 40.0;
        for (c, r) in &self.teeth {
            let d = (0..3).map(|a| ((p[a] - c[a]) / r[a]).powi(2)).sum::<f64>();
            if d < 1.0 {
                v = if d < 0.55 { 1500.0 } else { 2300.0 };
            }
        }
        let side = usize::from(p[0] > 0.0);
        let (_, f, table) = &self.frames[side];
        let q = mirror(p, side);
        let qc = mirror(f.c, side);
        // skull base: petrous ridge along (medial, anterior), dense bone
        let d = sub(q, qc);
        let axis = unit([-0.7, -0.7, 0.0]);
        let along = dot(d, axis);
        let perp = sub(d, scale(axis, along));
        if (along / 22.0).powi(2)
            + (perp[0] / 9.0).powi(2)
            + (perp[1] / 9.0).powi(2)
            + (perp[2] / 9.0).powi(2)
            < 1.0
        {
            v = self.petrous_hu;
        }
        // mastoid: trabecular bone with air cells, posterolateral
        let m = [q[0] - 43.0, q[1] - 22.0, q[2] - 1.0];
        if (m[0] / 10.0).powi(2) + (m[1] / 12.0).powi(2) + (m[2] / 13.0).powi(2) < 1.0 {
            v = 450.0;
            for (c, r) in &self.air_cells {
                let cc = mirror(*c, side);
                let dd = sub(q, cc);
                if dot(dd, dd) < r * r {
                    v = -950.0;
                }
            }
        }
        // middle ear: air lateral of the cochlea
        let me = [q[0] - 39.5, q[1] - 9.0, q[2] + 0.5];
        if (me[0] / 2.8).powi(2) + (me[1] / 5.0).powi(2) + (me[2] / 6.0).powi(2) < 1.0 {
            return -980.0;
        }
        // otic capsule: denser bone around the cochlea
        if dot(d, d) < 7.5 * 7.5 {
            v = self.capsule_hu;
            // modiolus slightly less dense (left-frame coordinates)
            let wl = self.frames[1].1.w;
            let w = dot(d, wl);
            let radial = sub(d, scale(wl, w));
            if dot(radial, radial) < 0.6 * 0.6 && w.abs() < 2.5 {
                v = 1300.0;
            }
            // the spiral canal: fluid
            let best = nearest_on_table(table, p);
            let rad = 0.85 - 0.35 * best.1 / SPIRAL_TURNS_RAD;
            if best.0 < rad * rad {
                v = 10.0;
            }
        }
        v
    }

    /// Metal contribution (HU above the anatomy, before clipping) and which class it belongs to.
    fn metal(&self, p: Vec3) -> (f64, u8) {
        let mut m = 0.0;
        let mut cls = 0;
        let sg = self.sigma;
        for a in &self.arrays {
            if (0..3).any(|i| p[i] < a.lo[i] || p[i] > a.hi[i]) {
                continue;
            }
            let mut here = 0.0;
            for c in &a.contacts {
                let d = sub(p, *c);
                let r2 = dot(d, d);
                if r2 < (a.radius + 5.0 * sg).powi(2) {
                    here += CONTACT_HU * blurred_ball(r2.sqrt(), a.radius, sg);
                }
            }
            let wire_sd2 = sg * sg + WIRE_RADIUS * WIRE_RADIUS / 4.0;
            let wire_peak = WIRE_RADIUS * WIRE_RADIUS / (2.0 * wire_sd2);
            let mut best = f64::INFINITY;
            for w in a.wire.windows(2) {
                best = best.min(seg_dist(p, w[0], w[1]));
            }
            here += WIRE_HU * wire_peak * (-best * best / (2.0 * wire_sd2)).exp();
            let lead_sd2 = sg * sg + LEAD_RADIUS * LEAD_RADIUS / 4.0;
            let lead_peak = LEAD_RADIUS * LEAD_RADIUS / (2.0 * lead_sd2);
            let mut best = f64::INFINITY;
            for w in a.lead.windows(2) {
                best = best.min(seg_dist(p, w[0], w[1]));
            }
            here += LEAD_HU * lead_peak * (-best * best / (2.0 * lead_sd2)).exp();
            if here > m {
                m = here;
                cls = if a.side == 1 {
                    cbct_class::LEFT_ELECTRODE
                } else {
                    cbct_class::RIGHT_ELECTRODE
                };
            }
        }
        if let Some((c, r)) = &self.filling {
            // soft ellipsoid: blurred occupancy from the scaled distance
            let q = (0..3)
                .map(|a| ((p[a] - c[a]) / r[a]).powi(2))
                .sum::<f64>()
                .sqrt();
            let rmin = r.iter().cloned().fold(f64::INFINITY, f64::min);
            let sdf = (q - 1.0) * rmin;
            if sdf < 5.0 * sg {
                let f = FILLING_HU * phi(-sdf / sg);
                if f > m {
                    m = f;
                    cls = cbct_class::FILLING;
                }
            }
        }
        (m, cls)
    }

    /// The electrode whose metal at physical size (contacts' balls, wire and lead cylinders) fills at
    /// least half of voxel `[k, j, i]`, by 4×4×4 supersampling: its [`cbct_class`], or 0.
    fn physical_metal(&self, g: &Geometry, k: usize, j: usize, i: usize) -> u8 {
        const SUB: usize = 4;
        let centre = g.index_to_patient(k as f64, j as f64, i as f64);
        let half_diag = 0.5
            * (g.pixel_spacing[0].powi(2) + g.pixel_spacing[1].powi(2) + g.slice_spacing.powi(2))
                .sqrt();
        for a in &self.arrays {
            if (0..3).any(|x| centre[x] < a.lo[x] || centre[x] > a.hi[x]) {
                continue;
            }
            // metal within `margin` (mm) of point `p`: a contact ball, the wire or the lead
            let near_metal = |p: Vec3, margin: f64| {
                a.contacts
                    .iter()
                    .any(|c| norm(sub(p, *c)) <= a.radius + margin)
                    || a.wire
                        .windows(2)
                        .any(|w| seg_dist(p, w[0], w[1]) <= WIRE_RADIUS + margin)
                    || a.lead
                        .windows(2)
                        .any(|w| seg_dist(p, w[0], w[1]) <= LEAD_RADIUS + margin)
            };
            // the voxel can only hold metal if its centre lies within a radius plus half a diagonal
            if !near_metal(centre, half_diag) {
                continue;
            }
            let mut inside = 0usize;
            for sk in 0..SUB {
                for sj in 0..SUB {
                    for si in 0..SUB {
                        let f = |s: usize| (s as f64 + 0.5) / SUB as f64 - 0.5;
                        let p = g.index_to_patient(
                            k as f64 + f(sk),
                            j as f64 + f(sj),
                            i as f64 + f(si),
                        );
                        inside += near_metal(p, 0.0) as usize;
                    }
                }
            }
            if 2 * inside >= SUB * SUB * SUB {
                return if a.side == 1 {
                    cbct_class::LEFT_ELECTRODE
                } else {
                    cbct_class::RIGHT_ELECTRODE
                };
            }
        }
        0
    }

    /// Streaks from metal in the axial (acquisition) plane: alternating bright / dark rays that fade
    /// with distance.
    fn streaks(&self, p: Vec3, phase: f64) -> f64 {
        let mut s = 0.0;
        let mut sources: Vec<(Vec3, f64)> = self
            .arrays
            .iter()
            .map(|a| {
                (
                    scale(add(a.contacts[0], a.contacts[a.contacts.len() - 1]), 0.5),
                    260.0,
                )
            })
            .collect();
        if let Some((c, _)) = &self.filling {
            sources.push((*c, 420.0));
        }
        for (c, amp) in sources {
            let dx = p[0] - c[0];
            let dy = p[1] - c[1];
            let dz = p[2] - c[2];
            if dz.abs() > 6.0 {
                continue;
            }
            let r = (dx * dx + dy * dy).sqrt();
            if r < 0.8 || r > 40.0 {
                continue;
            }
            let th = dy.atan2(dx);
            let ray =
                (7.0 * th + phase).cos().powi(9) - 0.6 * (5.0 * th + 0.5 * phase).sin().powi(8);
            s += amp * ray * (-r / 9.0).exp() * (1.0 - dz.abs() / 6.0);
        }
        s
    }
}

/// Sample the phantom on the spec's grid.
pub fn generate_cbct(spec: &CbctSpec) -> CbctPhantom {
    let g = spec.geometry();
    let shape = spec.shape();
    let (model, placed) = Model::new(spec);
    let mut hu = Array3::<i16>::zeros((shape[0], shape[1], shape[2]));
    let mut truth = Array3::<u8>::zeros((shape[0], shape[1], shape[2]));
    let dmax = spec.device_max;
    hu.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(truth.axis_iter_mut(Axis(0)))
        .enumerate()
        .for_each(|(k, (mut hp, mut tp))| {
            let mut rng = Rng::new(spec.seed.wrapping_mul(7_919).wrapping_add(k as u64));
            let phase = (spec.seed % 97) as f64 * 0.1;
            for j in 0..shape[1] {
                for i in 0..shape[2] {
                    let p = g.index_to_patient(k as f64, j as f64, i as f64);
                    let base = model.anatomy(p);
                    let (m, cls) = model.metal(p);
                    let clean = base + m;
                    if cls == cbct_class::FILLING && clean >= dmax {
                        tp[[j, i]] = cls;
                    } else if cls != 0 {
                        tp[[j, i]] = model.physical_metal(&g, k, j, i);
                    }
                    let v = clean + model.streaks(p, phase) + rng.normal() * spec.noise_sd;
                    hp[[j, i]] = v.round().clamp(-1024.0, dmax) as i16;
                }
            }
        });
    CbctPhantom {
        spec: spec.clone(),
        hu,
        geometry: g,
        truth,
        arrays: placed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The electrode truth is the metal at physical size: on a grid much finer than a contact, the
    /// voxels it marks around one contact hold the ball's volume (plus the thin wire through it), and
    /// on the variant's own grid it is far smaller than the saturated bloom the device shows.
    #[test]
    fn electrode_truth_is_the_metal_at_physical_size() {
        let spec = CbctSpec::new(CbctVariant::CoronalLeft, 3);
        let (model, placed) = Model::new(&spec);
        let (c, r) = (placed[0].contacts[3], placed[0].contact_radius);
        let h = 0.04;
        let n = ((r + 0.12) / h).ceil() as i64;
        let g = Geometry {
            origin: [
                c[0] - n as f64 * h,
                c[1] - n as f64 * h,
                c[2] - n as f64 * h,
            ],
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            pixel_spacing: [h, h],
            slice_spacing: h,
        };
        let m = (2 * n + 1) as usize;
        let mut marked = 0usize;
        for k in 0..m {
            for j in 0..m {
                for i in 0..m {
                    marked += (model.physical_metal(&g, k, j, i) != 0) as usize;
                }
            }
        }
        let got = marked as f64 * h * h * h;
        let ball = 4.0 / 3.0 * std::f64::consts::PI * r.powi(3);
        println!("around one contact: {got:.4} mm³ marked, ball {ball:.4} mm³");
        // the wire (0.035 mm radius) through the cube adds a few per cent
        assert!(
            got > 0.9 * ball && got < 1.2 * ball,
            "marked {got:.4} mm³, ball {ball:.4} mm³"
        );

        let ph = generate_cbct(&spec);
        let truth = ph
            .truth
            .iter()
            .filter(|&&t| t == cbct_class::LEFT_ELECTRODE)
            .count();
        let bloom = ph
            .hu
            .iter()
            .filter(|&&v| v as f64 >= spec.device_max)
            .count();
        println!("coronal-left seed 3: truth {truth} voxels, saturated {bloom}");
        assert!(truth > 0, "no truth voxel");
        assert!(bloom > 3 * truth, "bloom {bloom} voxels, truth {truth}");
    }
}
