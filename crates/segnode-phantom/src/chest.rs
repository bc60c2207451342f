//! The analytic chest/abdomen model: every structure is a function of the patient position (LPS mm;
//! +x = patient left, +y = posterior, +z = superior), so any grid, orientation or slice thickness samples
//! the same anatomy and the ground truth comes from the same functions as the image.

use crate::rng::Rng;

/// Ground-truth classes of the phantom label map.
pub mod class {
    pub const BACKGROUND: u8 = 0;
    pub const RIGHT_LUNG: u8 = 1;
    pub const LEFT_LUNG: u8 = 2;
    /// Lumen of the trachea and main bronchi outside the lungs.
    pub const AIRWAY: u8 = 3;
    /// Stomach and bowel gas.
    pub const GAS: u8 = 4;
    /// Dense disease inside the right pleural cavity (mass, consolidation, collapse): part of the right
    /// lung, kept apart so tests can measure how much of it a lung mask covers.
    pub const RIGHT_LESION: u8 = 5;
    /// Dense disease inside the left pleural cavity: part of the left lung.
    pub const LEFT_LESION: u8 = 6;
    /// Pleural effusion: fluid in the pleural space, not lung.
    pub const EFFUSION: u8 = 7;
}

/// Pathology built into a phantom (issue 19). Its shape comes from anatomy (lobes, pleura, gravity), never
/// from how a segmenter looks for it; nothing of it draws from the seeded random stream, so a phantom
/// without disease is voxel for voxel what it was before diseases existed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Disease {
    /// Solid mass with a broad base on the posterolateral costal pleura of the lower lobe; `diameter_mm`
    /// of the sphere it is cut from (the part inside the pleural cavity is the lesion), mean `hu`.
    JuxtapleuralMass { side: u8, diameter_mm: f64, hu: f64 },
    /// Solid mass at the hilum, against the mediastinal pleura, around the main bronchus.
    HilarMass { side: u8, diameter_mm: f64, hu: f64 },
    /// The whole lower lobe (behind the oblique fissure) consolidated, with air bronchograms.
    ConsolidatedLobe { side: u8, hu: f64 },
    /// The medial basal segment of the lower lobe consolidated (no air bronchograms): the part of the
    /// lower lobe within 65 mm of the midline and below 165 mm, against the heart and the mediastinum.
    ConsolidatedMedialBasal { side: u8, hu: f64 },
    /// Lower-lobe collapse: a dense triangle against the spine and the posterior mediastinum.
    CollapsedLobe { side: u8, hu: f64 },
    /// Free pleural effusion: dependent (posterior in a supine patient) fluid crescent between the lung
    /// and the chest wall, deepest at the base, `depth_mm` at its deepest.
    Effusion { side: u8, depth_mm: f64, hu: f64 },
}

impl Disease {
    /// Lung side (0 right, 1 left).
    pub fn side(&self) -> u8 {
        match *self {
            Disease::JuxtapleuralMass { side, .. }
            | Disease::HilarMass { side, .. }
            | Disease::ConsolidatedLobe { side, .. }
            | Disease::ConsolidatedMedialBasal { side, .. }
            | Disease::CollapsedLobe { side, .. }
            | Disease::Effusion { side, .. } => side,
        }
    }

    /// What the disease makes of a point of pleural cavity `side` (`None`: untouched lung).
    fn at(&self, side: usize, p: [f64; 3]) -> Option<(f64, u8)> {
        if side as u8 != self.side() {
            return None;
        }
        let [x, y, z] = p;
        let sx = if side == 0 { -1.0 } else { 1.0 };
        let lesion = if side == 0 {
            class::RIGHT_LESION
        } else {
            class::LEFT_LESION
        };
        // oblique fissure: the lower lobe lies below a plane that rises posteriorly
        let lower_lobe = z < 175.0 + 0.8 * y;
        match *self {
            Disease::JuxtapleuralMass {
                diameter_mm, hu, ..
            } => {
                // centred on the posterolateral pleura at 75°, 170 mm: a broad base on the chest wall
                let a = 75f64.to_radians();
                let r = diameter_mm / 2.0;
                let c = [
                    sx * (LUNG_CX + (LUNG_RX - 0.25 * r) * a.cos()),
                    LUNG_CY + (LUNG_RY - 0.25 * r) * a.sin(),
                    170.0,
                ];
                Ball { c, r }.inside(p).then_some((hu, lesion))
            }
            Disease::HilarMass {
                diameter_mm, hu, ..
            } => {
                let h = HILUM[side];
                let c = [h[0] + sx * 6.0, h[1], h[2] - 5.0];
                Ball {
                    c,
                    r: diameter_mm / 2.0,
                }
                .inside(p)
                .then_some((hu, lesion))
            }
            Disease::ConsolidatedLobe { hu, .. } => {
                if !lower_lobe {
                    return None;
                }
                // air bronchograms: lower-lobe bronchi fanning out from below the hilum
                let h = HILUM[side];
                let root = [h[0], h[1] + 10.0, h[2] - 25.0];
                let bronchogram = [
                    [sx * 95.0, 60.0, 120.0],
                    [sx * 70.0, 80.0, 140.0],
                    [sx * 110.0, 30.0, 130.0],
                    [sx * 60.0, 40.0, 115.0],
                ]
                .iter()
                .any(|t| Tube::new(root, *t, 2.5, 1.2).sdf(p) < 0.0);
                Some((if bronchogram { -900.0 } else { hu }, lesion))
            }
            Disease::ConsolidatedMedialBasal { hu, .. } => {
                (lower_lobe && x.abs() < 65.0 && z < 165.0).then_some((hu, lesion))
            }
            Disease::CollapsedLobe { hu, .. } => {
                // the lobe shrunk to a wedge against the spine and the posterior mediastinum
                (z < 200.0 && (y - 20.0) > 1.5 * (x.abs() - 24.0)).then_some((hu, lesion))
            }
            Disease::Effusion { depth_mm, hu, .. } => {
                // the lung floats on the fluid: its posterior surface moves anteriorly by the local depth
                // (deepest at the base, none above 220 mm), leaving a crescent against the chest wall
                let t = ((220.0 - z) / (220.0 - BASE_Z[side])).clamp(0.0, 1.0);
                let d = depth_mm * t.sqrt();
                if d <= 0.0 {
                    return None;
                }
                let cx = sx * LUNG_CX;
                let e = ((x - cx) / LUNG_RX).powi(2) + ((y + d - LUNG_CY) / LUNG_RY).powi(2);
                (e >= 1.0).then_some((hu, class::EFFUSION))
            }
        }
    }
}

/// Anatomical options of a phantom.
#[derive(Debug, Clone)]
pub struct Anatomy {
    pub contrast: bool,
    pub emphysema: bool,
    /// Lungs meet at the anterior junction with no visible tissue between them.
    pub fused: bool,
    /// Pathology inside one pleural cavity (none in the original variants).
    pub disease: Option<Disease>,
}

#[derive(Debug, Clone)]
struct Tube {
    a: [f64; 3],
    b: [f64; 3],
    r0: f64,
    r1: f64,
    lo: [f64; 3],
    hi: [f64; 3],
}

impl Tube {
    fn new(a: [f64; 3], b: [f64; 3], r0: f64, r1: f64) -> Self {
        let m = r0.max(r1);
        let lo = [a[0].min(b[0]) - m, a[1].min(b[1]) - m, a[2].min(b[2]) - m];
        let hi = [a[0].max(b[0]) + m, a[1].max(b[1]) + m, a[2].max(b[2]) + m];
        Tube {
            a,
            b,
            r0,
            r1,
            lo,
            hi,
        }
    }

    /// Distance from the axis minus the local radius (< 0 inside).
    fn sdf(&self, p: [f64; 3]) -> f64 {
        if (0..3).any(|i| p[i] < self.lo[i] || p[i] > self.hi[i]) {
            return f64::INFINITY;
        }
        let ab = [
            self.b[0] - self.a[0],
            self.b[1] - self.a[1],
            self.b[2] - self.a[2],
        ];
        let ap = [p[0] - self.a[0], p[1] - self.a[1], p[2] - self.a[2]];
        let l2 = ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2];
        let t = ((ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / l2).clamp(0.0, 1.0);
        let d = [ap[0] - t * ab[0], ap[1] - t * ab[1], ap[2] - t * ab[2]];
        (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt() - (self.r0 + t * (self.r1 - self.r0))
    }
}

#[derive(Debug, Clone)]
struct Ball {
    c: [f64; 3],
    r: f64,
}

impl Ball {
    fn inside(&self, p: [f64; 3]) -> bool {
        let d = [p[0] - self.c[0], p[1] - self.c[1], p[2] - self.c[2]];
        d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < self.r * self.r
    }
}

/// The model with its random parts (vessels, nodules, gas pockets, emphysema) drawn from a seed.
#[derive(Debug, Clone)]
pub struct Chest {
    pub anatomy: Anatomy,
    vessels: [Vec<Tube>; 2],
    nodules: Vec<Ball>,
    bullae: Vec<Ball>,
    bowel: Vec<Ball>,
    trachea: Tube,
    bronchi: [Tube; 2],
}

/// Lung geometry constants (mm).
const LUNG_CX: f64 = 80.0;
const LUNG_CY: f64 = 5.0;
const LUNG_RX: f64 = 55.0;
const LUNG_RY: f64 = 85.0;
const APEX_Z: [f64; 2] = [300.0, 295.0];
const BASE_Z: [f64; 2] = [105.0, 95.0];
const DOME_H: f64 = 45.0;
const BODY_RX: f64 = 165.0;
const BODY_RY: f64 = 115.0;
const CARINA: [f64; 3] = [0.0, 0.0, 230.0];
const HILUM: [[f64; 3]; 2] = [[-62.0, 5.0, 200.0], [66.0, 5.0, 195.0]];

impl Chest {
    pub fn new(anatomy: Anatomy, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut vessels: [Vec<Tube>; 2] = [Vec::new(), Vec::new()];
        for (side, list) in vessels.iter_mut().enumerate() {
            let sx = if side == 0 { -1.0 } else { 1.0 };
            let h = HILUM[side];
            for _ in 0..40 {
                // a random target inside the lung
                let mut t = [0.0; 3];
                for _ in 0..50 {
                    t = [
                        sx * LUNG_CX + rng.range(-LUNG_RX, LUNG_RX),
                        LUNG_CY + rng.range(-LUNG_RY, LUNG_RY),
                        rng.range(BASE_Z[side] + 20.0, APEX_Z[side] - 15.0),
                    ];
                    if lung_shape(side, t, false) > 0.85 {
                        break;
                    }
                }
                let start = [
                    h[0] + sx * 8.0,
                    h[1] + rng.range(-15.0, 15.0),
                    h[2] + rng.range(-20.0, 20.0),
                ];
                list.push(Tube::new(
                    start,
                    t,
                    rng.range(2.5, 4.5),
                    rng.range(0.8, 1.5),
                ));
            }
        }
        // juxtapleural nodules: on the lateral and posterior pleura
        let mut nodules = Vec::new();
        for side in 0..2 {
            let sx = if side == 0 { -1.0 } else { 1.0 };
            for (ang, z) in [(0.0f64, 170.0), (1.2, 230.0)] {
                let x = sx * (LUNG_CX + LUNG_RX * ang.cos());
                let y = LUNG_CY + LUNG_RY * ang.sin();
                nodules.push(Ball {
                    c: [x, y, z],
                    r: rng.range(5.0, 7.0),
                });
            }
        }
        let mut bullae = Vec::new();
        if anatomy.emphysema {
            for _ in 0..260 {
                let side = (rng.next_u64() % 2) as usize;
                let sx = if side == 0 { -1.0 } else { 1.0 };
                let c = [
                    sx * LUNG_CX + rng.range(-LUNG_RX, LUNG_RX),
                    LUNG_CY + rng.range(-LUNG_RY, LUNG_RY),
                    rng.range(BASE_Z[side], APEX_Z[side]),
                ];
                if lung_shape(side, c, false) > 0.0 {
                    bullae.push(Ball {
                        c,
                        r: rng.range(5.0, 14.0),
                    });
                }
            }
        }
        let mut bowel = Vec::new();
        for _ in 0..7 {
            bowel.push(Ball {
                c: [
                    rng.range(-90.0, 90.0),
                    rng.range(-50.0, 40.0),
                    rng.range(25.0, 75.0),
                ],
                r: rng.range(8.0, 16.0),
            });
        }
        Chest {
            anatomy,
            vessels,
            nodules,
            bullae,
            bowel,
            trachea: Tube::new([0.0, -5.0, 360.0], CARINA, 9.0, 9.0),
            bronchi: [
                Tube::new(CARINA, HILUM[0], 6.5, 6.0),
                Tube::new(CARINA, HILUM[1], 6.5, 6.0),
            ],
        }
    }

    /// HU and ground-truth class at a point.
    pub fn sample(&self, p: [f64; 3]) -> (f64, u8) {
        let [x, y, z] = p;
        let contrast = self.anatomy.contrast;
        // table: carbon shell with a foam core, under the body
        if (125.0..=140.0).contains(&y) && x.abs() < 230.0 {
            let shell = y < 128.0 || y > 137.0 || x.abs() > 226.0;
            return (if shell { 350.0 } else { -870.0 }, class::BACKGROUND);
        }
        let (brx, bry, bcy) = body_ellipse(z);
        let rb = ((x / brx).powi(2) + ((y - bcy) / bry).powi(2)).sqrt();
        if rb > 1.0 {
            return (-1000.0, class::BACKGROUND);
        }
        // airway (lumen and wall), checked before the lungs: the lumen outside the lungs is AIRWAY
        let in_lung = self.lung_side(p);
        let tr = self
            .trachea
            .sdf(p)
            .min(self.bronchi[0].sdf(p))
            .min(self.bronchi[1].sdf(p));
        if tr < 0.0 {
            return match in_lung {
                Some(s) => (-1000.0, s),
                None => (-1000.0, class::AIRWAY),
            };
        }
        if tr < 2.0 {
            return (60.0, in_lung.unwrap_or(class::BACKGROUND));
        }
        if let Some(side_class) = in_lung {
            let side = (side_class - 1) as usize;
            if let Some(hit) = self.anatomy.disease.and_then(|d| d.at(side, p)) {
                return hit;
            }
            if self.nodules.iter().any(|b| b.inside(p)) {
                return (35.0, side_class);
            }
            if self.vessels[side].iter().any(|t| t.sdf(p) < 0.0) {
                return (if contrast { 280.0 } else { 40.0 }, side_class);
            }
            let mut hu = if self.anatomy.emphysema {
                -880.0
            } else {
                -860.0
            };
            // gravity-dependent density gradient (posterior denser)
            hu += 25.0 * ((y - LUNG_CY) / LUNG_RY).clamp(-1.0, 1.0);
            if self.bullae.iter().any(|b| b.inside(p)) {
                hu = -985.0;
            }
            return (hu, side_class);
        }
        // stomach (under the left dome): wall, gas anteriorly, fluid posteriorly
        let st =
            ((x - 65.0) / 55.0).powi(2) + ((y + 20.0) / 45.0).powi(2) + ((z - 68.0) / 28.0).powi(2);
        if st < 1.0 {
            let inner = ((x - 65.0) / 50.0).powi(2)
                + ((y + 20.0) / 40.0).powi(2)
                + ((z - 68.0) / 24.0).powi(2);
            if inner < 1.0 {
                return if y < -12.0 {
                    (-1000.0, class::GAS)
                } else {
                    (15.0, class::BACKGROUND)
                };
            }
            return (45.0, class::BACKGROUND);
        }
        for b in &self.bowel {
            if b.inside(p) {
                let inner = Ball {
                    c: b.c,
                    r: b.r - 2.5,
                };
                return if inner.inside(p) {
                    (-1000.0, class::GAS)
                } else {
                    (45.0, class::BACKGROUND)
                };
            }
        }
        // bones
        if rb > 0.86 && rb < 0.93 && z > 105.0 && z < 295.0 {
            let phase = (z + 0.25 * y - 100.0).rem_euclid(22.0);
            if phase < 9.0 && !(x.abs() < 30.0 && y < 0.0) {
                return (700.0, class::BACKGROUND);
            }
        }
        if x.abs() < 15.0 && (-112.0..-98.0).contains(&y) && z > 140.0 && z < 280.0 {
            return (500.0, class::BACKGROUND);
        }
        let d_spine = (x * x + (y - 75.0).powi(2)).sqrt();
        if d_spine < 18.0 {
            return (
                if d_spine > 15.0 { 900.0 } else { 300.0 },
                class::BACKGROUND,
            );
        }
        // heart and aorta
        if heart(p) < 1.0 || ((x - 20.0).powi(2) + (y - 50.0).powi(2)).sqrt() < 13.0 {
            return (if contrast { 300.0 } else { 40.0 }, class::BACKGROUND);
        }
        // liver under the right dome
        if z < dome(0, x, y) && x < 40.0 && z > 40.0 {
            return (if contrast { 110.0 } else { 60.0 }, class::BACKGROUND);
        }
        // subcutaneous fat and muscle
        if rb > 0.93 {
            return (-100.0, class::BACKGROUND);
        }
        (40.0, class::BACKGROUND)
    }

    /// Which lung a point belongs to (ground truth shape, including vessels and nodules inside it).
    pub fn lung_side(&self, p: [f64; 3]) -> Option<u8> {
        for side in 0..2 {
            if lung_shape(side, p, self.anatomy.fused) > 0.0 {
                return Some(side as u8 + 1);
            }
        }
        None
    }
}

/// Body cross-section (rx, ry, centre y) at height z: chest/abdomen, narrowing to the neck above 300 mm.
fn body_ellipse(z: f64) -> (f64, f64, f64) {
    if z < 295.0 {
        (BODY_RX, BODY_RY, 0.0)
    } else {
        let t = ((z - 295.0) / 20.0).clamp(0.0, 1.0);
        (
            BODY_RX + t * (65.0 - BODY_RX),
            BODY_RY + t * (60.0 - BODY_RY),
            5.0 * t,
        )
    }
}

/// Height of the diaphragm dome under lung `side` at (x, y).
fn dome(side: usize, x: f64, y: f64) -> f64 {
    let sx = if side == 0 { -1.0 } else { 1.0 };
    let u = (x - sx * LUNG_CX) / 100.0;
    let v = (y - LUNG_CY) / 110.0;
    BASE_Z[side] + DOME_H * (1.0 - u * u - v * v).max(0.0)
}

/// Heart: ellipsoid-ish value (< 1 inside).
fn heart(p: [f64; 3]) -> f64 {
    let [x, y, z] = p;
    let dz = (z - 150.0) / 42.0;
    if dz.abs() >= 1.0 {
        return 2.0;
    }
    let s = (1.0 - dz * dz).sqrt();
    ((x - 22.0) / (62.0 * s)).powi(2) + ((y + 28.0) / (52.0 * s)).powi(2)
}

/// Positive inside lung `side` (0 right, 1 left).
fn lung_shape(side: usize, p: [f64; 3], fused: bool) -> f64 {
    let [x, y, z] = p;
    let sx = if side == 0 { -1.0 } else { 1.0 };
    if z > APEX_Z[side] || z < BASE_Z[side] || z < dome(side, x, y) {
        return -1.0;
    }
    // apex taper
    let s = if z > 220.0 {
        ((APEX_Z[side] - z) / (APEX_Z[side] - 220.0))
            .max(0.0)
            .sqrt()
    } else {
        1.0
    };
    if s <= 0.05 {
        return -1.0;
    }
    // the lateral wall follows the ellipse; the taper shrinks towards an apex point above the lung centre
    let cx = sx * (LUNG_CX + 10.0 * (1.0 - s));
    let e = ((x - cx) / (LUNG_RX * s)).powi(2) + ((y - LUNG_CY) / (LUNG_RY * s)).powi(2);
    let mut inside = 1.0 - e;
    // anterior junction: a tongue of each lung reaches the midline in front of the mediastinum, thinning
    // to ~12 mm (antero-posterior) where the two lungs touch with no visible tissue between them
    let junction = fused && (175.0..250.0).contains(&z) && x * sx >= 0.0 && x.abs() < 50.0 && {
        let half = 6.0 + 0.5 * x.abs();
        (y + 69.0).abs() < half
    };
    if junction {
        inside = inside.max(0.5);
    }
    if inside <= 0.0 {
        return inside;
    }
    // mediastinum: heart, great vessels, spine, keep lungs off the midline
    if heart(p) < 1.15 {
        return -1.0;
    }
    if !junction && x.abs() < 24.0 {
        return -1.0;
    }
    if (x * x + (y - 75.0).powi(2)).sqrt() < 24.0
        || ((x - 20.0).powi(2) + (y - 50.0).powi(2)).sqrt() < 17.0
    {
        return -1.0;
    }
    inside
}
