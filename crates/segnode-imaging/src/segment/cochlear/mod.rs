//! Cochlear-implant electrode arrays in CBCT / temporal-bone CT: one segment per implanted side, with the
//! contact positions (apical tip → base), their count and the insertion depth.
//!
//! Pipeline (everything after step 1 works on a sparse list of metal voxels):
//! 1. Metal level from the histogram (`threshold.rs`): metal is usually clipped at the device maximum;
//!    the threshold sits in a narrow band below it and above dense bone.
//! 2. Candidates and their 26-connected blobs (`blobs.rs`); a blob must reach the metal's core level: a
//!    clipped voxel when metal clips (noise on bright bone and streaks reach the band below the
//!    maximum, not the maximum itself), else half-way to the brightest metal (candidates reach lower,
//!    so that contacts blurred by coarse voxels stay whole and linked).
//! 3. Blobs linked into chains by proximity; each chain ordered by geodesic arc length (`chain.rs`).
//! 4. A chain is an electrode array when it is long (≥ 3 mm along the arc), thin (no blob thicker than a
//!    bloomed contact), holds at least [`CochlearParams::min_contacts`] contacts and lies in dense bone
//!    (petrous bone around the cochlea). Dental fillings, clips, screws and other metal fail the shape or
//!    the bone test; streaks never reach the clipped level.
//! 5. Contacts from the metal profile along the path (`profile.rs`, `contacts.rs`: periodic peaks of the
//!    metal cross-section, lead wire told apart), with the clipped-blob reading (`blobwise.rs`) as a
//!    second opinion when the profile's pattern is not consistent; order and insertion depth per array.
//!    Side from patient x (left = +x) only when two arrays lie in the two ears; a single array's side is
//!    `unknown` (the origin need not be on the midline) and its segment carries no laterality.
//! 6. Label map (right array = 1 when present, then left), coded segments, the contact list in
//!    [`Segmentation::details`].

mod blobs;
mod blobwise;
mod chain;
mod contacts;
mod lead;
mod pattern;
mod profile;
mod resolution;
mod threshold;

pub use contacts::ArrayContacts;
pub use lead::LeadParams;
pub use profile::ProfileParams;
pub use resolution::ResolutionParams;
pub use threshold::{metal_level, MetalLevel, NoMetal};

use super::codes::{self, CodedConcept};
use super::{Measurement, Segment, SegmentDescription, SegmentError, Segmentation, Segmenter};
use crate::volume::geometry::Vec3;
use crate::volume::Volume;
use blobs::{kji, mean};
use chain::Chain;
use ndarray::Array3;
use serde_json::json;

/// Tunable parameters (defaults fit CBCT of 0.1–0.4 mm voxels).
#[derive(Debug, Clone)]
pub struct CochlearParams {
    /// Blobs whose closest voxels are this close belong to one chain (mm): above the widest gap between
    /// the blooms of contacts 2.4 mm apart.
    pub link_mm: f64,
    /// Shortest array (arc length, mm).
    pub min_length_mm: f64,
    /// Thickest blob (equivalent diameter, mm): a bloomed contact is < 1.2 mm, a filling several mm.
    pub max_blob_thickness_mm: f64,
    pub min_contacts: usize,
    /// Smaller blobs may be noise or streak specks on bright bone (mm³; one 0.4 mm voxel is 0.064 mm³):
    /// they join an array only where its pitch expects a contact.
    pub min_blob_mm3: f64,
    /// Dense bone (99.5th percentile) closer than this to the clipped maximum makes tiny blobs suspect.
    pub bright_bone_margin: f64,
    /// Share of samples 1.5–3 mm around the contacts that must be bone.
    pub min_bone_fraction: f64,
    /// More metal candidates than this: the volume is not a metal-in-bone problem (mis-scaled data).
    pub max_candidates: usize,
    /// Contacts, lead wire and the electrode boundary from the metal profile (`profile.rs`).
    pub profile: ProfileParams,
    /// Two arrays whose contacts lie farther apart than this along patient x are in the two ears (mm):
    /// the cochleae are ≈ 60–70 mm apart, one cochlea spans < 12 mm.
    pub ears_apart_mm: f64,
    /// The clipped-blob reading replaces an inconsistent profile reading only when all its gaps are
    /// within this factor of its pitch: stricter than the profile's own test, because a lead wire read
    /// as contacts is what the blob reading gets wrong.
    pub blob_regular_gap: f64,
    /// When a contact count is resolved (`resolution.rs`): else it is reported as seen and flagged.
    pub resolution: ResolutionParams,
}

impl Default for CochlearParams {
    fn default() -> Self {
        CochlearParams {
            link_mm: 3.0,
            min_length_mm: 3.0,
            max_blob_thickness_mm: 1.5,
            min_contacts: 4,
            min_blob_mm3: 0.06,
            bright_bone_margin: 400.0,
            min_bone_fraction: 0.3,
            max_candidates: 2_000_000,
            profile: ProfileParams::default(),
            ears_apart_mm: 40.0,
            blob_regular_gap: 1.25,
            resolution: ResolutionParams::default(),
        }
    }
}

/// The `cochlear` pipeline.
#[derive(Debug, Clone, Default)]
pub struct CochlearSegmenter {
    pub params: CochlearParams,
}

/// Segmented property type: SNOMED CT 43252007 "Cochlear prosthesis, device (physical object)", the
/// concept SNOMED CT has for the implanted cochlear device (FHIR implant-type value sets list it beside
/// stents and neurostimulators). SNOMED CT has no narrower concept for the intracochlear electrode array
/// alone, so the segment label names the array and the code names the device it belongs to; the
/// category is "Physical object" (SCT 260787004) as for other implanted devices.
pub const COCHLEAR_PROSTHESIS: CodedConcept =
    CodedConcept::new("43252007", "SCT", "Cochlear prosthesis");

const VERSION: &str = "cochlear-0.2.0";

/// The side of an array, as far as the image tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Right,
    Left,
    /// Neither anatomy nor the field of view tells (a single array in a small field).
    Unknown,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Right => "right",
            Side::Left => "left",
            Side::Unknown => "unknown",
        }
    }
}

/// One accepted array before labelling.
#[derive(Debug, Clone)]
struct Array {
    chain: Chain,
    found: ArrayContacts,
    side: Side,
    bone_fraction: f64,
    touches_edge: bool,
    /// Why the contact count is not resolved (`resolution.rs`), when it is not.
    unresolved: Option<String>,
}

impl Segmenter for CochlearSegmenter {
    fn name(&self) -> &'static str {
        "cochlear"
    }

    fn version(&self) -> &'static str {
        VERSION
    }

    fn display_window(&self) -> crate::result::Window {
        crate::result::Window::TEMPORAL_BONE
    }

    fn nothing_found(&self) -> String {
        "no electrode found".into()
    }

    fn segment(&self, volume: &Volume) -> Result<Segmentation, SegmentError> {
        let shape = volume.shape();
        if shape.iter().any(|&n| n < 3) {
            return Err(SegmentError::VolumeTooSmall(format!("{shape:?}")));
        }
        let mut notes = Vec::new();
        let level = match metal_level(&volume.hu, volume.geometry.voxel_volume_mm3()) {
            Ok(level) => level,
            Err(why) => {
                notes.push(why.to_string());
                return Ok(empty(volume, notes));
            }
        };
        notes.push(format!(
            "metal ≥ {} where a blob reaches {} (device maximum {}, {} saturated voxels, dense bone ≈ {:.0})",
            level.candidate, level.threshold, level.device_max, level.saturated, level.bone_ref
        ));
        let Some(cands) = blobs::candidates(volume, level.candidate, self.params.max_candidates)
        else {
            notes.push("too many metal-level voxels: not a metal-in-bone image".into());
            return Ok(empty(volume, notes));
        };
        let blobs = blobs::blobs(volume, &cands);
        // a blob is metal when it reaches the core level: the clipped maximum (noise on bright bone and
        // streaks reach the band below it, not the maximum itself), or, unclipped, half-way to the
        // brightest metal (candidates reach down to a quarter of the way: contacts and lead blurred by
        // the partial volume of coarse voxels)
        let core = if level.clipped {
            level.device_max
        } else {
            level.threshold
        };
        let (blobs, weak): (Vec<_>, Vec<_>) = blobs.into_iter().partition(|b| {
            b.voxels.iter().any(|&v| {
                let [k, j, i] = kji(v, shape);
                volume.hu[[k, j, i]] >= core
            })
        });
        if !weak.is_empty() {
            notes.push(format!(
                "{} bright spot(s) without a voxel at the metal's core level ignored (unless one sits \
                 where an array's pitch puts a missed contact)",
                weak.len()
            ));
        }
        // the weak spots' centres: a contact the partial volume kept below the core level
        let weak: Vec<Vec3> = weak.iter().map(|b| mean(&b.points)).collect();
        tracing::debug!(?weak, "weak spots");
        let spacing = volume.geometry.spacing_kji();
        let voxel_mm = (spacing[0] * spacing[1] * spacing[2]).cbrt();
        let mut arrays = Vec::new();
        let mut rejected = 0usize;
        // dense bone close to the clip level: noise and streaks on bone can clip too (the blob reading
        // then lets tiny blobs join only where the array's rhythm expects a contact)
        let speck_mm3 = if (level.device_max as f64 - level.bone_ref)
            < self.params.bright_bone_margin
        {
            notes.push(
                "dense bone close to the clip level: contacts told from wire and specks by the metal profile"
                    .into(),
            );
            self.params.min_blob_mm3
        } else {
            0.0
        };
        let metal = level.clipped.then_some(level.device_max as f64);
        for group in chain::link(blobs, self.params.link_mm) {
            let ch = chain::order(group, shape);
            match self.judge(volume, ch, voxel_mm, metal, core as f64, speck_mm3, &weak) {
                Ok(a) => arrays.push(a),
                Err(why) => {
                    rejected += 1;
                    tracing::debug!(%why, "metal rejected");
                }
            }
        }
        if rejected > 0 {
            notes.push(format!(
                "{rejected} metal object(s) rejected (not an electrode array by shape or site)"
            ));
        }
        if arrays.is_empty() {
            return Ok(empty(volume, notes));
        }
        if let Some(why) = assign_sides(&mut arrays, self.params.ears_apart_mm) {
            notes.push(why);
        }
        // one array per side: the one with most contacts in the densest bone
        let mut chosen: Vec<Array> = Vec::new();
        for want in [Side::Right, Side::Left, Side::Unknown] {
            let mut side: Vec<Array> = arrays.iter().filter(|a| a.side == want).cloned().collect();
            side.sort_by(|a, b| {
                let sa = a.found.contacts.len() as f64 * a.bone_fraction;
                let sb = b.found.contacts.len() as f64 * b.bone_fraction;
                sb.total_cmp(&sa)
            });
            if side.len() > 1 {
                notes.push(format!(
                    "{} candidate arrays on the {} side: kept the one with most contacts",
                    side.len(),
                    want.name()
                ));
            }
            if let Some(a) = side.into_iter().next() {
                chosen.push(a);
            }
        }
        Ok(self.result(volume, chosen, notes))
    }
}

impl CochlearSegmenter {
    /// Accept a chain as an electrode array, or say why not.
    fn judge(
        &self,
        volume: &Volume,
        ch: Chain,
        voxel_mm: f64,
        metal: Option<f64>,
        core: f64,
        speck_mm3: f64,
        weak: &[Vec3],
    ) -> Result<Array, String> {
        let p = &self.params;
        if ch.length_mm < p.min_length_mm {
            return Err(format!("short ({:.1} mm)", ch.length_mm));
        }
        let thick = ch.max_blob_thickness_mm(voxel_mm);
        if thick > p.max_blob_thickness_mm {
            return Err(format!("thick ({thick:.1} mm)"));
        }
        let shape = volume.shape();
        let touches_edge = ch.blobs.iter().flat_map(|b| &b.voxels).any(|&v| {
            let x = kji(v, shape);
            (0..3).any(|a| x[a] == 0 || x[a] + 1 == shape[a])
        });
        let mut found =
            contacts::locate(volume, &ch, metal, core, voxel_mm, touches_edge, &p.profile);
        // a second opinion: the clipped-blob reading, taken only when the profile's pattern is not
        // consistent and the blob reading's is (its contacts regular at their pitch), or when the
        // profile's needed merged contacts filled in and the regular blob reading finds more (the
        // repair may stop short of a contact at an end)
        if !found.consistent || found.merged_filled > 0 {
            let b = blobwise::locate(&ch, voxel_mm, speck_mm3);
            let more = found.consistent && b.contacts.len() > found.contacts.len();
            if b.contacts.len() >= p.min_contacts
                && regular(&b.contacts, p.blob_regular_gap)
                && (!found.consistent || more)
            {
                let why = if found.consistent {
                    "needed merged contacts filled in"
                } else {
                    "are not a regular pattern"
                };
                found.notes.push(format!(
                    "the metal profile's {} contacts {why}; the clipped-blob reading's {} are regular, \
                     and are reported",
                    found.contacts.len(),
                    b.contacts.len()
                ));
                found.notes.extend(b.notes);
                found.length_mm = b.contacts.windows(2).map(|w| blobs::dist(w[0], w[1])).sum();
                found.contacts = b.contacts;
                found.pitch_mm = b.pitch_mm;
                found.insertion_angle_deg = b.insertion_angle_deg;
                found.order_from_spiral = b.order_from_spiral;
                found.consistent = true;
            }
        }
        fill_missed(&mut found, weak, &p.profile);
        if found.contacts.len() < p.min_contacts {
            return Err(format!("{} contacts", found.contacts.len()));
        }
        let bone = bone_fraction(volume, &found.contacts);
        if bone < p.min_bone_fraction {
            return Err(format!("not in bone ({bone:.2})"));
        }
        let spacing = volume.geometry.spacing_kji();
        let coarsest_mm = spacing[0].max(spacing[1]).max(spacing[2]);
        let unresolved = resolution::unresolved(
            &found,
            coarsest_mm,
            found
                .contacts
                .iter()
                .map(|c| contacts::edge_distance_mm(volume, *c))
                .fold(f64::INFINITY, f64::min),
            &p.resolution,
        );
        Ok(Array {
            chain: ch,
            found,
            side: Side::Unknown,
            bone_fraction: bone,
            touches_edge,
            unresolved,
        })
    }

    fn result(&self, volume: &Volume, arrays: Vec<Array>, mut notes: Vec<String>) -> Segmentation {
        let shape = volume.shape();
        let mut labels = Array3::<u8>::zeros((shape[0], shape[1], shape[2]));
        let mut segments = Vec::new();
        let mut details = Vec::new();
        let flat = labels
            .as_slice_mut()
            .expect("a freshly allocated array is contiguous");
        for (n, a) in arrays.iter().enumerate() {
            let number = (n + 1) as u8;
            // the metal at its physical extent; saturated cores are metal whatever the boundary says,
            // unless the mask shrank the saturated bloom (clipped) or stands on its own (unclipped: the
            // cores reach down to a quarter of the metal level, wider than the half-way boundary)
            for &v in &a.found.mask {
                if let Some(x) = flat.get_mut(v) {
                    *x = number;
                }
            }
            for (b, used) in a.chain.blobs.iter().zip(&a.found.used_blobs) {
                if *used && !a.found.mask_excludes_cores {
                    for &v in &b.voxels {
                        flat[v] = number;
                    }
                }
            }
            let side = a.side.name();
            let f = &a.found;
            if a.touches_edge {
                notes.push(format!(
                    "{side} array reaches the edge of the field of view: contacts outside it are not counted"
                ));
            }
            for m in &f.notes {
                notes.push(format!("{side}: {m}"));
            }
            if let Some(why) = &a.unresolved {
                notes.push(format!(
                    "{side}: contact count not resolved: {why}; the {} contacts are reported as seen \
                     and may be too few or too many",
                    f.contacts.len()
                ));
            }
            let mut measurements = vec![
                Measurement {
                    name: "contacts",
                    value: f.contacts.len() as f64,
                    unit: "count",
                },
                Measurement {
                    name: "array_length",
                    value: f.length_mm,
                    unit: "mm",
                },
            ];
            if let Some(deg) = f.insertion_angle_deg {
                measurements.push(Measurement {
                    name: "insertion_angle",
                    value: deg,
                    unit: "deg",
                });
            }
            let round = |v: f64| (v * 1000.0).round() / 1000.0;
            details.push(json!({
                "segment": number,
                "side": side,
                "contact_count": f.contacts.len(),
                "contacts_mm": f.contacts.iter().map(|c| [round(c[0]), round(c[1]), round(c[2])]).collect::<Vec<_>>(),
                "order": "apical tip first",
                "order_from_spiral": f.order_from_spiral,
                "insertion_depth": match f.insertion_angle_deg {
                    Some(d) => json!({ "kind": "angle", "degrees": round(d) }),
                    None => json!({ "kind": "length", "mm": round(f.length_mm) }),
                },
                "array_length_mm": round(f.length_mm),
                "pitch_mm": f.pitch_mm.map(round),
                "pattern_consistent": f.consistent,
                "contact_count_resolved": a.unresolved.is_none(),
                "contact_count_unresolved_reason": a.unresolved,
                "electrode_boundary": { "background": round(f.background), "metal": round(f.metal_level) },
                "bone_fraction": round(a.bone_fraction),
                "metal_volume_mm3": round(a.chain.volume_mm3),
                "touches_field_edge": a.touches_edge,
            }));
            segments.push(Segment {
                number,
                description: SegmentDescription {
                    label: match a.side {
                        Side::Right => "Right cochlear implant electrode array".into(),
                        Side::Left => "Left cochlear implant electrode array".into(),
                        Side::Unknown => "Cochlear implant electrode array".into(),
                    },
                    category: codes::PHYSICAL_OBJECT,
                    property_type: COCHLEAR_PROSTHESIS,
                    // no laterality when the image does not tell the side
                    modifier: match a.side {
                        Side::Right => Some(codes::RIGHT),
                        Side::Left => Some(codes::LEFT),
                        Side::Unknown => None,
                    },
                    algorithm_name: "segnode cochlear".into(),
                    algorithm_version: VERSION.into(),
                    algorithm_family: codes::MORPHOLOGICAL_OPERATIONS,
                    // a metallic yellow
                    cielab: Some([59_000, 33_000, 52_000]),
                },
                measurements,
                points: f.contacts.clone(),
            });
        }
        Segmentation {
            labels,
            segments,
            notes,
            details: Some(json!({ "arrays": details })),
        }
    }
}

fn empty(volume: &Volume, mut notes: Vec<String>) -> Segmentation {
    notes.push("no electrode found".into());
    let s = volume.shape();
    Segmentation {
        labels: Array3::zeros((s[0], s[1], s[2])),
        segments: Vec::new(),
        notes,
        details: None,
    }
}

/// Sides from what the image tells: patient x grows towards the patient's left (LPS), whatever the
/// coordinate origin, so of two arrays more than `apart_mm` apart along x the one at larger x is left.
/// One array (or arrays close together) says nothing by itself: the origin need not lie on the midline
/// (a small-field unilateral CBCT), so its side is unknown; returns the reason then.
fn assign_sides(arrays: &mut [Array], apart_mm: f64) -> Option<String> {
    let xs: Vec<f64> = arrays.iter().map(|a| mean(&a.found.contacts)[0]).collect();
    let mut sorted = xs.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let (mut best, mut at) = (0.0, 0.0);
    for w in sorted.windows(2) {
        if w[1] - w[0] > best {
            best = w[1] - w[0];
            at = 0.5 * (w[0] + w[1]);
        }
    }
    if best <= apart_mm {
        for a in arrays.iter_mut() {
            a.side = Side::Unknown;
        }
        return Some(
            "side unknown: one implanted ear in the field, and neither the other ear nor the midline is \
             seen (patient x alone does not tell left from right when the origin is not on the midline)"
                .into(),
        );
    }
    for (a, x) in arrays.iter_mut().zip(xs) {
        a.side = if x > at { Side::Left } else { Side::Right };
    }
    None
}

/// Contacts the reading missed where the array's pitch says one is: a weak spot (metal below the core
/// level) in the middle of two contacts two pitches apart, one pitch from both and not at an accepted
/// contact, is taken as a contact; the order is then repaired (`pattern::untangle`: a missed contact
/// may have sent the walk along the pieces astray) and the length and angle taken again. Nothing is
/// added past the ends (beyond the basal contact the lead runs on, and its fragments are weak spots
/// too).
fn fill_missed(found: &mut ArrayContacts, weak: &[Vec3], pp: &ProfileParams) {
    let Some(pitch) = found.pitch_mm else {
        return;
    };
    let tol = pp.pattern.tolerance;
    let fits = |d: f64, k: f64| (d / pitch - k).abs() <= k * tol;
    let c = &found.contacts;
    let mut add: Vec<Vec3> = Vec::new();
    for w in weak {
        if c.iter()
            .chain(&add)
            .any(|x| blobs::dist(*x, *w) < 0.5 * pitch)
        {
            continue;
        }
        let between = c.iter().enumerate().any(|(i, a)| {
            c.iter().skip(i + 1).any(|b| {
                let mid = [
                    0.5 * (a[0] + b[0]),
                    0.5 * (a[1] + b[1]),
                    0.5 * (a[2] + b[2]),
                ];
                fits(blobs::dist(*a, *b), 2.0)
                    && fits(blobs::dist(*a, *w), 1.0)
                    && fits(blobs::dist(*w, *b), 1.0)
                    && blobs::dist(mid, *w) <= tol * pitch
            })
        });
        if between {
            add.push(*w);
        }
    }
    if add.is_empty() {
        return;
    }
    found.notes.push(format!(
        "{} contact(s) below the metal's core level taken where the pitch ({pitch:.2} mm) puts a \
         missed one",
        add.len()
    ));
    let mut all = found.contacts.clone();
    all.extend(add);
    let d = |a: usize, b: usize| blobs::dist(all[a], all[b]);
    let order = pattern::untangle(&all, &d, pitch, tol, contacts::spiral_axis(&all));
    found.contacts = order.iter().map(|&o| all[o]).collect();
    found.length_mm = found
        .contacts
        .windows(2)
        .map(|w| blobs::dist(w[0], w[1]))
        .sum();
    found.consistent = regular(&found.contacts, pp.irregular_gap);
    let mut said = Vec::new();
    let (order_from_spiral, angle) = contacts::spiral_order(&mut found.contacts, &mut said);
    found.order_from_spiral = order_from_spiral;
    found.insertion_angle_deg = angle;
    for n in said {
        if !found.notes.contains(&n) {
            found.notes.push(n);
        }
    }
}

/// Whether consecutive contacts are spaced regularly: no gap beyond `factor` times the median pitch
/// either way.
fn regular(contacts: &[[f64; 3]], factor: f64) -> bool {
    let gaps: Vec<f64> = contacts
        .windows(2)
        .map(|w| blobs::dist(w[0], w[1]))
        .collect();
    let mut g = gaps.clone();
    g.sort_by(|a, b| a.total_cmp(b));
    let Some(&pitch) = g.get(g.len() / 2) else {
        return false;
    };
    gaps.iter()
        .all(|&x| x <= factor * pitch && x >= pitch / factor)
}

/// Share of bone-level samples on shells of 1.5, 2.25 and 3 mm around the contacts (26 directions).
fn bone_fraction(volume: &Volume, contacts: &[[f64; 3]]) -> f64 {
    let g = &volume.geometry;
    let shape = volume.shape();
    let (mut bone, mut all) = (0usize, 0usize);
    for c in contacts {
        for dk in -1i32..=1 {
            for dj in -1i32..=1 {
                for di in -1i32..=1 {
                    if dk == 0 && dj == 0 && di == 0 {
                        continue;
                    }
                    let d = [dk as f64, dj as f64, di as f64];
                    let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                    for r in [1.5, 2.25, 3.0] {
                        let p = [
                            c[0] + r * d[2] / n,
                            c[1] + r * d[1] / n,
                            c[2] + r * d[0] / n,
                        ];
                        let idx = g.patient_to_index(p);
                        let q = idx.map(|x| x.round());
                        if (0..3).any(|a| q[a] < 0.0 || q[a] >= shape[a] as f64) {
                            continue;
                        }
                        let (k, j, i) = (q[0] as usize, q[1] as usize, q[2] as usize);
                        if volume.is_out_of_field(k, j, i) {
                            continue;
                        }
                        all += 1;
                        if volume.hu[[k, j, i]] >= threshold::BONE_HU {
                            bone += 1;
                        }
                    }
                }
            }
        }
    }
    if all == 0 {
        return 0.0;
    }
    bone as f64 / all as f64
}
