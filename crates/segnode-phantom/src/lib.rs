//! Deterministic (seeded) chest CT phantoms with ground truth, for tests, benchmarks and peers.
//!
//! [`generate`] samples the analytic model of `chest.rs` (body, fat, ribs, sternum, spine, heart, aorta,
//! liver, two lungs with vessels and juxtapleural nodules, trachea and main bronchi, stomach gas with a
//! fluid level and bowel gas below the diaphragm, a table with a foam core, noise, out-of-field padding)
//! on the grid of a [`Variant`] (orientation, slice order, field of view, coverage, slice thickness,
//! contrast, emphysema, fused lungs; the pathology variants of issue 19 — masses, a consolidated and a
//! collapsed lobe, pleural effusions — see [`Disease`]) and returns the HU volume with its geometry and the ground-truth
//! label map. [`write_series`] writes it as a folder of CT Image Storage files,
//! [`write_series_multiframe`] as one Enhanced CT / X-Ray 3D Craniofacial object.

pub mod cbct;
mod cbct_write;
pub mod chest;
pub mod cli;
mod multiframe;
mod rng;
mod slices;
mod write;

pub use cbct_write::{write_cbct_multiframe, write_cbct_series};
pub use chest::class;
pub use multiframe::MultiFrame;
pub use slices::{PhantomWriteError, WrittenSeries};
pub use write::{write_series, write_series_multiframe};

pub use chest::Disease;
use chest::{Anatomy, Chest};
use ndarray::{Array3, Axis};
use rayon::prelude::*;
use segnode_imaging::volume::geometry::{cross, Geometry};

/// Phantom variants named in issue 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Head-first supine, IOP 1\0\0\0\1\0, 2.5 mm slices, full chest and upper abdomen.
    Standard,
    /// IOP −1\0\0\0\−1\0 (image rotated 180°), Pixel Padding Value outside the field of view.
    Flipped,
    /// Feet-first supine (IOP −1\0\0\0\1\0), instances numbered from the feet.
    FeetFirst,
    /// Small reconstruction field of view: the lungs touch the edge, −3024 outside the circle.
    Cropped,
    /// Abdominal coverage: only the lung bases, with stomach gas larger than the lungs.
    Bases,
    /// Only the apices and the trachea.
    Apices,
    /// Lungs fused at the anterior junction.
    Fused,
    /// 0.6 mm slices.
    Thin,
    /// 5 mm slices (partial volume along z).
    Thick,
    /// Contrast-enhanced vessels, heart and aorta.
    Contrast,
    /// Emphysema: low-attenuation regions below −950 HU in both lungs.
    Emphysema,
    /// Issue 19: a 60 mm solid mass (+8 HU) on the posterolateral pleura of the left lower lobe.
    JuxtapleuralMass,
    /// Issue 19: a 50 mm solid mass (+35 HU) at the right hilum, against the mediastinum.
    HilarMass,
    /// Issue 19: right lower lobe consolidated (+40 HU) with air bronchograms.
    ConsolidatedLobe,
    /// Issue 19: left lower lobe collapsed into a dense wedge (+45 HU) beside the spine.
    CollapsedLobe,
    /// Issue 19: left pleural effusion, a dependent crescent (+10 HU) up to 35 mm deep.
    EffusionLeft,
    /// Issue 19: right pleural effusion, a dependent crescent (+10 HU) up to 35 mm deep.
    EffusionRight,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Standard,
        Variant::Flipped,
        Variant::FeetFirst,
        Variant::Cropped,
        Variant::Bases,
        Variant::Apices,
        Variant::Fused,
        Variant::Thin,
        Variant::Thick,
        Variant::Contrast,
        Variant::Emphysema,
    ];

    /// The pathology variants of issue 19 (not in [`Variant::ALL`], whose Dice table they leave alone).
    pub const DISEASE: [Variant; 6] = [
        Variant::JuxtapleuralMass,
        Variant::HilarMass,
        Variant::ConsolidatedLobe,
        Variant::CollapsedLobe,
        Variant::EffusionLeft,
        Variant::EffusionRight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Standard => "standard",
            Variant::Flipped => "flipped",
            Variant::FeetFirst => "feet-first",
            Variant::Cropped => "cropped",
            Variant::Bases => "bases",
            Variant::Apices => "apices",
            Variant::Fused => "fused",
            Variant::Thin => "thin",
            Variant::Thick => "thick",
            Variant::Contrast => "contrast",
            Variant::Emphysema => "emphysema",
            Variant::JuxtapleuralMass => "juxtapleural-mass",
            Variant::HilarMass => "hilar-mass",
            Variant::ConsolidatedLobe => "consolidated-lobe",
            Variant::CollapsedLobe => "collapsed-lobe",
            Variant::EffusionLeft => "effusion-left",
            Variant::EffusionRight => "effusion-right",
        }
    }
}

/// How pixel values are stored and what lies outside the reconstruction circle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Unsigned, RescaleIntercept −1024; outside the circle stored 0 (−1024 HU).
    Unsigned,
    /// Signed, PixelPaddingValue −2000 outside the circle.
    SignedPadding,
    /// Signed, −3024 HU outside the circle (no padding attribute).
    SignedOutOfField,
}

/// Grid and acquisition of a phantom.
#[derive(Debug, Clone)]
pub struct Spec {
    pub variant: Variant,
    pub seed: u64,
    /// Rows = columns.
    pub matrix: usize,
    /// Reconstruction diameter (mm).
    pub fov_mm: f64,
    /// Centre of the field of view (x, y) in mm.
    pub fov_center: [f64; 2],
    pub slice_spacing: f64,
    /// Covered range (inferior, superior) in mm.
    pub z_range: [f64; 2],
    pub iop: [f64; 6],
    pub patient_position: &'static str,
    /// Instances numbered from the feet.
    pub number_from_feet: bool,
    pub noise_sd: f64,
    pub storage: Storage,
    pub anatomy: Anatomy,
}

impl Spec {
    /// The variant's spec at a given matrix size (256 for tests, 512 for benchmarks).
    pub fn new(variant: Variant, seed: u64, matrix: usize) -> Spec {
        let mut s = Spec {
            variant,
            seed,
            matrix,
            fov_mm: 380.0,
            fov_center: [0.0, 5.0],
            slice_spacing: 2.5,
            z_range: [40.0, 330.0],
            iop: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            patient_position: "HFS",
            number_from_feet: false,
            noise_sd: 20.0,
            storage: Storage::Unsigned,
            anatomy: Anatomy {
                contrast: false,
                emphysema: false,
                fused: false,
                disease: None,
            },
        };
        match variant {
            Variant::Standard => {}
            Variant::Flipped => {
                s.iop = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0];
                s.storage = Storage::SignedPadding;
            }
            Variant::FeetFirst => {
                s.iop = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
                s.patient_position = "FFS";
                s.number_from_feet = true;
            }
            Variant::Cropped => {
                s.fov_mm = 250.0;
                s.fov_center = [-10.0, 0.0];
                s.storage = Storage::SignedOutOfField;
            }
            Variant::Bases => s.z_range = [20.0, 150.0],
            Variant::Apices => s.z_range = [215.0, 340.0],
            Variant::Fused => s.anatomy.fused = true,
            Variant::Thin => {
                s.slice_spacing = 0.6;
                s.z_range = [90.0, 310.0];
                s.noise_sd = 35.0;
            }
            Variant::Thick => {
                s.slice_spacing = 5.0;
                s.noise_sd = 12.0;
            }
            Variant::Contrast => s.anatomy.contrast = true,
            Variant::Emphysema => s.anatomy.emphysema = true,
            Variant::JuxtapleuralMass => {
                s.anatomy.disease = Some(Disease::JuxtapleuralMass {
                    side: 1,
                    diameter_mm: 60.0,
                    hu: 8.0,
                })
            }
            Variant::HilarMass => {
                s.anatomy.disease = Some(Disease::HilarMass {
                    side: 0,
                    diameter_mm: 50.0,
                    hu: 35.0,
                })
            }
            Variant::ConsolidatedLobe => {
                s.anatomy.disease = Some(Disease::ConsolidatedLobe { side: 0, hu: 40.0 })
            }
            Variant::CollapsedLobe => {
                s.anatomy.disease = Some(Disease::CollapsedLobe { side: 1, hu: 45.0 })
            }
            Variant::EffusionLeft | Variant::EffusionRight => {
                s.anatomy.disease = Some(Disease::Effusion {
                    side: (variant == Variant::EffusionLeft) as u8,
                    depth_mm: 35.0,
                    hu: 10.0,
                })
            }
        }
        s
    }

    /// Number of slices.
    pub fn slices(&self) -> usize {
        ((self.z_range[1] - self.z_range[0]) / self.slice_spacing).floor() as usize + 1
    }

    /// The index → patient geometry of the grid.
    pub fn geometry(&self) -> Geometry {
        let r = [self.iop[0], self.iop[1], self.iop[2]];
        let c = [self.iop[3], self.iop[4], self.iop[5]];
        let n = cross(r, c);
        let px = self.fov_mm / self.matrix as f64;
        let half = (self.matrix as f64 - 1.0) / 2.0 * px;
        // first slice: the end of the z range the normal points away from
        let z0 = if n[2] > 0.0 {
            self.z_range[0]
        } else {
            self.z_range[1]
        };
        let centre = [self.fov_center[0], self.fov_center[1], z0];
        Geometry {
            origin: [
                centre[0] - half * r[0] - half * c[0],
                centre[1] - half * r[1] - half * c[1],
                centre[2] - half * r[2] - half * c[2],
            ],
            row_dir: r,
            col_dir: c,
            normal: n,
            pixel_spacing: [px, px],
            slice_spacing: self.slice_spacing,
        }
    }
}

/// A generated phantom: image, geometry and ground truth on the same `[k, j, i]` grid.
#[derive(Debug, Clone)]
pub struct Phantom {
    pub spec: Spec,
    pub hu: Array3<i16>,
    pub geometry: Geometry,
    /// Ground truth per voxel: [`class`] values.
    pub truth: Array3<u8>,
    /// Voxels outside the reconstruction circle.
    pub out_of_field: Array3<bool>,
}

/// Sample the model on the spec's grid.
pub fn generate(spec: &Spec) -> Phantom {
    let g = spec.geometry();
    let model = Chest::new(spec.anatomy.clone(), spec.seed);
    let shape = (spec.slices(), spec.matrix, spec.matrix);
    let mut hu = Array3::<i16>::zeros(shape);
    let mut truth = Array3::<u8>::zeros(shape);
    let mut oof = Array3::<bool>::from_elem(shape, false);
    let radius = spec.fov_mm / 2.0;
    // thick slices average sub-samples along z (partial volume); thin ones sample the centre
    let sub: Vec<f64> = if spec.slice_spacing >= 3.0 {
        (0..5)
            .map(|s| (s as f64 - 2.0) / 5.0 * spec.slice_spacing)
            .collect()
    } else {
        vec![0.0]
    };
    hu.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(truth.axis_iter_mut(Axis(0)))
        .zip(oof.axis_iter_mut(Axis(0)))
        .enumerate()
        .for_each(|(k, ((mut hp, mut tp), mut op))| {
            let mut rng = rng::Rng::new(spec.seed.wrapping_mul(1_000_003).wrapping_add(k as u64));
            for j in 0..spec.matrix {
                for i in 0..spec.matrix {
                    let p = g.index_to_patient(k as f64, j as f64, i as f64);
                    let dx = p[0] - spec.fov_center[0];
                    let dy = p[1] - spec.fov_center[1];
                    let noise = rng.normal() * spec.noise_sd;
                    if dx * dx + dy * dy > radius * radius {
                        op[[j, i]] = true;
                        hp[[j, i]] = -1024;
                        continue;
                    }
                    let (v, cls) = model.sample(p);
                    let v = if sub.len() > 1 {
                        sub.iter()
                            .map(|dz| model.sample([p[0], p[1], p[2] + dz]).0)
                            .sum::<f64>()
                            / sub.len() as f64
                    } else {
                        v
                    };
                    tp[[j, i]] = cls;
                    hp[[j, i]] = (v + noise).round().clamp(-1024.0, 3071.0) as i16;
                }
            }
        });
    Phantom {
        spec: spec.clone(),
        hu,
        geometry: g,
        truth,
        out_of_field: oof,
    }
}
