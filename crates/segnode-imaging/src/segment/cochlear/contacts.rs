//! Contacts of an ordered chain: how many, where (patient mm), in which order (apical tip → base), and
//! how deep the array is inserted.
//!
//! Contacts are read from the metal profile along the path (`profile.rs`), not from blob counts: the
//! peaks of the metal cross-section that stand out as contacts do (clear prominence and height), then,
//! grown along the path one pitch at a time, the tall peaks of merged contacts that dip little. Each
//! contact is the weighted centre of the metal around its peak. The array is one run at one pitch
//! (`pattern.rs`): peaks off its rhythm (the lead's clipped stretches past the basal contact, a bend of
//! the lead, metal nearby) are dropped and reported; where the array meets the field's edge, a second
//! run at the same pitch reaching the edge is kept (the array re-entering the field) when it turns with
//! the array's spiral (the lead leaving the cochlea runs about straight: not kept). Gaps that do not
//! fit the pitch make the pattern inconsistent: reported, never forced (the pipeline may then take the
//! clipped-blob reading of `blobwise.rs` when that one is regular).
//!
//! Order: from the outermost end, each next contact is the piece nearest to the position predicted from
//! the last step and turn (the next turn of a wide-pitch array near the apex is closer than the next
//! contact, but not where the curve is heading); where that walk still jumped a turn and came back
//! (steps of no pitch, of two, turning round, or turning against the spiral's sense about the normal
//! of the contacts' plane: a hop to another turn and back may keep the pitch at every step, never the
//! sense of turning), stretches of the order are moved back into place (`pattern::untangle`).
//!
//! The modiolar axis is the normal of the best plane through the contacts. In that plane the tangent of a
//! cochlear spiral turns by the same angle as the position around the modiolus, so the insertion angle is
//! the array's total turning (no centre to fit, which a shrinking spiral biases); the apical end is the
//! one that turns faster per mm. The angle is reported when the array turns by more than 60° (else the
//! array length in mm stands alone), the order from the spiral only when its ends also differ clearly
//! in curvature (the total turning does not depend on which end is the tip).

use super::blobs::{dist, mean};
use super::chain::Chain;
use super::lead;
use super::pattern;
use super::profile::{contact_height, Peak, Profile, ProfileParams};
use crate::volume::geometry::{cross, dot, Vec3};
use crate::volume::Volume;

/// Contacts and depth of one array.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayContacts {
    /// Contact centres (LPS mm), apical tip first.
    pub contacts: Vec<Vec3>,
    /// Pitch used to split merged contacts (mm), when known.
    pub pitch_mm: Option<f64>,
    /// Sum of the distances between consecutive contacts (mm).
    pub length_mm: f64,
    /// Angle swept around the modiolar axis from the basal to the apical contact (degrees).
    pub insertion_angle_deg: Option<f64>,
    /// Whether the tip / base order comes from the spiral (else it is a fallback: see notes).
    pub order_from_spiral: bool,
    pub notes: Vec<String>,
    /// Per blob of the chain: whether it is part of the array.
    pub used_blobs: Vec<bool>,
    /// Whether the contacts' spacing is regular (no gap that says a contact is missing or extra).
    pub consistent: bool,
    /// Contacts taken where a step of two pitches puts a missed one (`fill_merged`, `fill_from_peaks`):
    /// the reading was repaired, so a regular clipped-blob reading with more contacts is preferred.
    pub merged_filled: usize,
    /// Linear voxel indices of the electrode at its physical extent (partial-volume boundary).
    pub mask: Vec<usize>,
    /// Whether the mask stands without the chain's cores (clipped metal shrunk from its saturated
    /// bloom: the cores must not be painted over it).
    pub mask_excludes_cores: bool,
    /// Local background and metal level of the boundary.
    pub background: f64,
    pub metal_level: f64,
}

/// Locate the contacts of a chain from its metal profile (`profile.rs`); `metal` is the device maximum
/// when metal clips, `core` the metal's core level (see `Profile::read`), `voxel_mm` the geometric mean
/// voxel size.
pub fn locate(
    volume: &Volume,
    chain: &Chain,
    metal: Option<f64>,
    core: f64,
    voxel_mm: f64,
    touches_edge: bool,
    pp: &ProfileParams,
) -> ArrayContacts {
    let mut notes = Vec::new();
    let nb = chain.blobs.len();
    let prof = Profile::read(volume, chain, metal, core, pp);
    let voxel_mm3 = volume.geometry.voxel_volume_mm3();
    let peaks = prof.peaks(chain, voxel_mm3, voxel_mm, pp);
    let (height, cut) = contact_height(&peaks, pp);
    // the height of a clear contact peak: merged contacts (tight pitch, coarse voxels) dip little between
    // them but stand as tall as the clear ones, a wire's noise does not
    let mut tall: Vec<f64> = peaks
        .iter()
        .filter(|x| cut.is_none_or(|c| x.prominence >= c))
        .map(|x| x.height)
        .collect();
    tall.sort_by(|a, b| a.total_cmp(b));
    let contact_h = tall.get(tall.len() / 2).copied().unwrap_or(0.0);
    let accepted = grow_periodic(&peaks, height, cut, contact_h, pp);
    tracing::debug!(
        prominence = height,
        ?cut,
        contact_h,
        background = prof.background,
        metal = prof.metal,
        ?peaks,
        "metal profile"
    );
    let rejected = peaks.len().saturating_sub(accepted.len());
    if cut.is_some() && rejected > 0 {
        notes.push(format!(
            "{rejected} low peak(s) of the metal profile taken as lead wire, not contacts"
        ));
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut wires = 0usize;
    // each contact's blob, arc coordinate (to measure steps along the metal) and peak height
    let mut along: Vec<(Vec3, usize, f64, f64)> = Vec::new();
    for b in 0..nb {
        let mut mine: Vec<&Peak> = accepted.iter().filter(|x| x.blob == b).collect();
        mine.sort_by(|x, y| x.s.total_cmp(&y.s));
        let mut cs = Vec::new();
        for (n, pk) in mine.iter().enumerate() {
            // half a gap to each neighbour, at most half of the widest real contact spacing's window
            let mut half: f64 = 0.5;
            if n > 0 {
                half = half.min(0.5 * (pk.s - mine[n - 1].s));
            }
            if n + 1 < mine.len() {
                half = half.min(0.5 * (mine[n + 1].s - pk.s));
            }
            if let Some(c) = prof.centre(volume, b, pk.s, half.max(0.5 * voxel_mm)) {
                cs.push(c);
                along.push((c, b, pk.s, pk.height));
            }
        }
        if cs.is_empty() {
            wires += 1;
            continue;
        }
        pieces.push(Piece {
            contacts: cs,
            blob: b,
            speck: false,
        });
    }
    if wires > 0 {
        notes.push(format!(
            "{wires} run(s) of metal without a contact peak taken as lead wire"
        ));
    }
    let (mut contacts, _) = order_pieces(pieces);
    let mut merged = 0usize;
    // the lead past the basal contact: a stretch of lower peaks at one end of the order (`lead.rs`),
    // judged only when there are more peaks than any array carries (with fewer, the contacts' heights
    // may differ more between the stretches of one array, over fluid and over bone, at coarse voxels,
    // than a contact's from the lead's; the run at one pitch then tells them)
    let heights: Vec<f64> = contacts
        .iter()
        .map(|c| along.iter().find(|x| x.0 == *c).map_or(0.0, |x| x.3))
        .collect();
    let lead_span = (contacts.len() > MAX_ARRAY_CONTACTS)
        .then(|| lead::array_span(&heights, pp.pattern.min_run, &pp.lead))
        .flatten();
    // the cut tail (from the boundary outward) and the height for a peak of it to rejoin the array
    let mut cut: Vec<(Vec3, f64)> = Vec::new();
    let mut rejoin_h = f64::INFINITY;
    if let Some((lo, hi)) = lead_span {
        notes.push(format!(
            "{} peak(s) at one end standing clearly lower than the array's (less metal per mm) taken \
             as the lead wire past the basal contact",
            contacts.len() - (hi - lo)
        ));
        (cut, rejoin_h) = lead::cut_tail(&contacts, &heights, (lo, hi), &pp.lead);
        contacts = contacts[lo..hi].to_vec();
    }
    // the array is one run at its pitch (`pattern.rs`): peaks off its rhythm (clipped stretches of the
    // lead past the basal contact, a bend of the lead, metal nearby) are not contacts; reported.
    if contacts.len() >= 3 {
        let all = vec![true; contacts.len()];
        let on: Vec<Option<(usize, f64)>> = contacts
            .iter()
            .map(|c| along.iter().find(|x| x.0 == *c).map(|x| (x.1, x.2)))
            .collect();
        // a step is at least as long as the metal between two contacts of one blob
        let step = |a: usize, b: usize| {
            let straight = dist(contacts[a], contacts[b]);
            match (on[a], on[b]) {
                (Some((ba, sa)), Some((bb, sb))) if ba == bb => straight.max((sa - sb).abs()),
                _ => straight,
            }
        };
        tracing::debug!(?on, "contacts along the metal (blob, arc mm), in order");
        if let Some(run) = pattern::best_run(contacts.len(), &step, &all, &pp.pattern)
            .filter(|r| r.members.len() >= pp.pattern.min_run)
        {
            let mut keep = vec![false; contacts.len()];
            for &m in &run.members {
                keep[m] = true;
            }
            // an array cut by the field may leave and re-enter it: a second run at the same pitch,
            // with a contact at the field's edge, is the array again (a lone peak there is the lead
            // leaving the field)
            if touches_edge {
                let open: Vec<bool> = keep.iter().map(|k| !k).collect();
                if let Some(again) =
                    pattern::run_at(contacts.len(), &step, &open, run.pitch_mm, &pp.pattern)
                {
                    let at_edge = again
                        .members
                        .iter()
                        .any(|&m| edge_distance_mm(volume, contacts[m]) <= pp.edge_mm);
                    // the array goes on along the spiral, turning the same way; the lead leaves the
                    // cochlea and runs about straight out of it (a run too short to turn is taken)
                    let main: Vec<Vec3> = run.members.iter().map(|&m| contacts[m]).collect();
                    let second: Vec<Vec3> = again.members.iter().map(|&m| contacts[m]).collect();
                    let follows_spiral = match plane_normal(&main) {
                        Some(n) => {
                            let sense = main
                                .windows(3)
                                .map(|w| pattern::signed_turn(w[0], w[1], w[2], n))
                                .sum::<f64>()
                                .signum();
                            pattern::median_turn(&second, n, sense)
                                .is_none_or(|t| t >= pattern::WRONG_TURN_MIN_RAD)
                        }
                        None => true,
                    };
                    if !follows_spiral {
                        notes.push(format!(
                            "a second run of {} peak(s) at the pitch reaching the field's edge does not \
                             turn with the array's spiral: taken as the lead leaving the cochlea",
                            again.members.len()
                        ));
                    }
                    if again.members.len() >= 2 && at_edge && follows_spiral {
                        for &m in &again.members {
                            keep[m] = true;
                        }
                    }
                }
            }
            let dropped = keep.iter().filter(|k| !**k).count();
            if dropped > 0 {
                notes.push(format!(
                    "{dropped} peak(s) off the array's rhythm (pitch {:.2} mm) taken as lead wire or \
                     other metal, not contacts",
                    run.pitch_mm
                ));
            }
            // the walk along the pieces may have jumped a turn and come back: steps that fit no
            // pitch are repaired where moving a stretch of the order removes them
            let kept: Vec<usize> = (0..contacts.len()).filter(|&m| keep[m]).collect();
            let sub = |a: usize, b: usize| step(kept[a], kept[b]);
            let pts: Vec<Vec3> = kept.iter().map(|&m| contacts[m]).collect();
            let order = pattern::untangle(
                &pts,
                &sub,
                run.pitch_mm,
                pp.pattern.tolerance,
                spiral_axis(&pts),
            );
            if order.windows(2).any(|w| w[1] != w[0] + 1) {
                notes.push(
                    "the order of the contacts along the array repaired (a walk that jumped a turn)"
                        .into(),
                );
            }
            contacts = order.iter().map(|&o| contacts[kept[o]]).collect();
            let back = lead::rejoin(
                &mut contacts,
                &cut,
                run.pitch_mm,
                pp.pattern.tolerance,
                rejoin_h,
            );
            if back > 0 {
                notes.push(format!(
                    "{back} of the lower peaks next to the array keep its pitch and nearly a contact's \
                     height: taken as contacts"
                ));
            }
            let lower = fill_from_peaks(volume, &prof, &mut contacts, &peaks, run.pitch_mm, pp);
            if lower > 0 {
                notes.push(format!(
                    "{lower} lower peak(s) of the metal profile taken as contacts where a step of two \
                     pitches ({:.2} mm) puts a missed one",
                    run.pitch_mm
                ));
            }
            let m = fill_merged(volume, &prof, &mut contacts, &along, run.pitch_mm, pp);
            if m > 0 {
                notes.push(format!(
                    "{m} contact(s) merged with a neighbour taken where a step of two pitches \
                     ({:.2} mm) along one run of metal carries a contact's metal in its middle",
                    run.pitch_mm
                ));
            }
            merged = lower + m;
        }
    }
    let used = vec![true; nb];
    let length_mm = contacts.windows(2).map(|w| dist(w[0], w[1])).sum();
    // the pitch and whether the pattern is regular (reported, never forced)
    let mut gaps: Vec<f64> = contacts.windows(2).map(|w| dist(w[0], w[1])).collect();
    let pitch = if gaps.len() >= 2 {
        let mut g = gaps.clone();
        g.sort_by(|a, b| a.total_cmp(b));
        Some(g[g.len() / 2])
    } else {
        None
    };
    let mut consistent = true;
    if let Some(p) = pitch {
        let long = gaps.iter().filter(|&&g| g > pp.irregular_gap * p).count();
        let short = gaps.iter().filter(|&&g| g < p / pp.irregular_gap).count();
        if long + short > 0 {
            consistent = false;
            notes.push(format!(
                "contact pattern not consistent: {long} gap(s) longer and {short} shorter than the pitch \
                 {p:.2} mm allows (a contact missing, extra or cut by the field): count reported as seen"
            ));
        }
    }
    gaps.clear();
    let (order_from_spiral, angle) = spiral_order(&mut contacts, &mut notes);
    let mask = prof.mask(&used, pp);
    ArrayContacts {
        used_blobs: used,
        contacts,
        pitch_mm: pitch,
        length_mm,
        insertion_angle_deg: angle,
        order_from_spiral,
        consistent,
        merged_filled: merged,
        notes,
        mask,
        mask_excludes_cores: prof.mask_excludes_cores(pp),
        background: prof.background,
        metal_level: prof.metal,
    }
}

/// Contacts the peak classes left out (a contact that reads low: partial volume, a streak across it)
/// where the rhythm says one is missing: between consecutive contacts a straight step of two pitches
/// apart (± the tolerance of one), a peak of the profile whose metal centre lies one pitch from both
/// and within the tolerance of their midpoint, and not at a contact, is taken. Returns how many.
fn fill_from_peaks(
    volume: &Volume,
    prof: &Profile,
    contacts: &mut Vec<Vec3>,
    peaks: &[Peak],
    pitch: f64,
    pp: &ProfileParams,
) -> usize {
    let tol = pp.pattern.tolerance;
    let half = pp.merged_window * pitch;
    let fits = |d: f64| (d / pitch - 1.0).abs() <= tol;
    let mut centres: Option<Vec<Vec3>> = None;
    let mut out = Vec::with_capacity(contacts.len());
    for (i, &c) in contacts.iter().enumerate() {
        out.push(c);
        let Some(&next) = contacts.get(i + 1) else {
            continue;
        };
        if (dist(c, next) / pitch - 2.0).abs() > tol {
            continue;
        }
        // the peaks' metal centres, taken once and only when a double step asks for them
        let cs = centres.get_or_insert_with(|| {
            peaks
                .iter()
                .filter_map(|pk| prof.centre(volume, pk.blob, pk.s, half))
                .collect()
        });
        let mid = [
            0.5 * (c[0] + next[0]),
            0.5 * (c[1] + next[1]),
            0.5 * (c[2] + next[2]),
        ];
        let best = cs
            .iter()
            .filter(|x| {
                dist(**x, mid) <= tol * pitch
                    && fits(dist(**x, c))
                    && fits(dist(**x, next))
                    && contacts.iter().all(|y| dist(*y, **x) >= 0.5 * pitch)
            })
            .min_by(|a, b| dist(**a, mid).total_cmp(&dist(**b, mid)));
        if let Some(x) = best {
            out.push(*x);
        }
    }
    let added = out.len() - contacts.len();
    *contacts = out;
    added
}

/// Contacts merged with a neighbour (a tight pitch blurred by coarse voxels: the profile shows one
/// peak where two contacts are): a straight step of two pitches (± the tolerance of one) between
/// consecutive contacts on one run of metal whose middle carries about as much metal per mm as the contacts themselves
/// ([`ProfileParams::merged_metal_share`]; the lead between two contacts carries a fraction of it) holds
/// the missed contact, taken at the weighted centre of the metal there. Returns how many were added.
fn fill_merged(
    volume: &Volume,
    prof: &Profile,
    contacts: &mut Vec<Vec3>,
    along: &[(Vec3, usize, f64, f64)],
    pitch: f64,
    pp: &ProfileParams,
) -> usize {
    let voxel_mm3 = volume.geometry.voxel_volume_mm3();
    let find = |c: Vec3| along.iter().find(|x| x.0 == c).map(|x| (x.1, x.2));
    let half = pp.merged_window * pitch;
    let mut out = Vec::with_capacity(contacts.len());
    for (i, &c) in contacts.iter().enumerate() {
        out.push(c);
        let Some(&next) = contacts.get(i + 1) else {
            continue;
        };
        let (Some((ba, sa)), Some((bb, sb))) = (find(c), find(next)) else {
            continue;
        };
        // straight, and held to the tolerance of a single step: the arc along the voxels runs
        // longer than the metal (grid metrication) and a step of 1.4–1.6 pitches is two contacts
        // whose centres drifted apart, not a missed one
        let d = dist(c, next);
        if ba != bb || (d / pitch - 2.0).abs() > pp.pattern.tolerance {
            continue;
        }
        let mid = 0.5 * (sa + sb);
        let here = prof.metal_at(ba, mid, half, voxel_mm3);
        let ends = prof
            .metal_at(ba, sa, half, voxel_mm3)
            .min(prof.metal_at(ba, sb, half, voxel_mm3));
        if here < pp.merged_metal_share * ends {
            continue;
        }
        if let Some(x) = prof.centre(volume, ba, mid, half) {
            out.push(x);
        }
    }
    let added = out.len() - contacts.len();
    *contacts = out;
    added
}

/// Distance (mm) from a patient position to the nearest face of the volume's grid (the field of view).
pub(super) fn edge_distance_mm(volume: &Volume, c: Vec3) -> f64 {
    let idx = volume.geometry.patient_to_index(c);
    let shape = volume.shape();
    let sp = volume.geometry.spacing_kji();
    (0..3)
        .map(|a| idx[a].min(shape[a] as f64 - 1.0 - idx[a]) * sp[a])
        .fold(f64::INFINITY, f64::min)
}

/// The contact peaks: the clear ones (prominence in the contact class; the tallest peak of each blob
/// always is, its valleys reaching the blob's ends), then, grown from them along the path, tall peaks
/// with a shallow dip (merged contacts) that sit about one pitch from an accepted peak of the same blob.
/// The pitch is measured on the clear peaks (or the tall ones when too few): a lead wire's noise is
/// neither tall nor on the array's rhythm.
fn grow_periodic(
    peaks: &[Peak],
    prominence: f64,
    cut: Option<f64>,
    contact_h: f64,
    pp: &ProfileParams,
) -> Vec<Peak> {
    let prominent = |x: &Peak| {
        cut.is_none_or(|c| x.prominence >= c) && x.prominence >= pp.min_prominence * prominence
    };
    let mut hs: Vec<f64> = peaks
        .iter()
        .filter(|x| prominent(x))
        .map(|x| x.height)
        .collect();
    hs.sort_by(|a, b| a.total_cmp(b));
    let median_h = hs.get(hs.len() / 2).copied().unwrap_or(0.0);
    let clear = |x: &Peak| prominent(x) && x.height >= pp.min_height * median_h;
    let tall = |x: &Peak| {
        x.height >= pp.merged_height * contact_h && x.prominence >= pp.merged_dip * prominence
    };
    let mut ok: Vec<bool> = peaks.iter().map(clear).collect();
    // consecutive spacing along the arc within one blob
    let spacing = |sel: &dyn Fn(usize) -> bool| -> Vec<f64> {
        let mut g = Vec::new();
        for (n, x) in peaks.iter().enumerate() {
            if !sel(n) {
                continue;
            }
            let next = peaks
                .iter()
                .enumerate()
                .filter(|(m, y)| sel(*m) && y.blob == x.blob && y.s > x.s)
                .map(|(_, y)| y.s - x.s)
                .fold(f64::INFINITY, f64::min);
            if next.is_finite() {
                g.push(next);
            }
        }
        g.sort_by(|a, b| a.total_cmp(b));
        g
    };
    let okc = ok.clone();
    let mut g = spacing(&|n| okc[n]);
    if g.len() < 2 {
        g = spacing(&|n| okc[n] || tall(&peaks[n]));
    }
    let Some(&pitch) = g.get(g.len() / 2) else {
        return peaks.iter().copied().filter(clear).collect();
    };
    loop {
        let mut grew = false;
        for n in 0..peaks.len() {
            if ok[n] || !tall(&peaks[n]) {
                continue;
            }
            let x = peaks[n];
            let near = peaks.iter().enumerate().any(|(m, y)| {
                ok[m] && y.blob == x.blob && {
                    let d = (y.s - x.s).abs();
                    d >= (1.0 - pp.pitch_tolerance) * pitch
                        && d <= (1.0 + pp.pitch_tolerance) * pitch
                }
            });
            if near {
                ok[n] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    peaks
        .iter()
        .zip(ok)
        .filter(|(_, k)| *k)
        .map(|(x, _)| *x)
        .collect()
}

/// Contacts from one blob: a single contact, the ordered contacts of a merged blob, or a speck (a blob
/// too small to trust: noise or a streak that clips on bright bone, or a contact that barely clips).
#[derive(Debug, Clone)]
pub(super) struct Piece {
    pub(super) contacts: Vec<Vec3>,
    pub(super) blob: usize,
    pub(super) speck: bool,
}

/// Order the contacts of the chain's pieces into one sequence; returns it with the blobs used.
///
/// The sequence starts at the solid piece end farthest from the centroid (the outer, basal end of a
/// spiral) and grows by the piece end nearest to the position predicted from the last step and the last
/// turn: near the apex a contact of the next turn may be nearer than the next contact, but it is not
/// where the curve is heading. A speck joins only when it sits where the next contact is predicted;
/// specks left over are not part of the array.
pub(super) fn order_pieces(mut pieces: Vec<Piece>) -> (Vec<Vec3>, Vec<usize>) {
    let solid: Vec<Vec3> = pieces
        .iter()
        .filter(|p| !p.speck)
        .flat_map(|p| p.contacts.iter().copied())
        .collect();
    if solid.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let c = mean(&solid);
    let mut best = (f64::NEG_INFINITY, 0, false);
    for (n, p) in pieces.iter().enumerate().filter(|(_, p)| !p.speck) {
        let ends = [
            (false, p.contacts[0]),
            (true, p.contacts[p.contacts.len() - 1]),
        ];
        for (rev, q) in ends {
            let d = dist(q, c);
            if d > best.0 {
                best = (d, n, rev);
            }
        }
    }
    let first = pieces.swap_remove(best.1);
    let mut used = vec![first.blob];
    let mut path = first.contacts;
    if best.2 {
        path.reverse();
    }
    while pieces.iter().any(|p| !p.speck) {
        let m = path.len();
        let p = path[m - 1];
        // the next position, and the one after it (in case the next contact is missing)
        let (pred, pred2, step) = if m >= 3 {
            let h0 = sub(path[m - 2], path[m - 3]);
            let h1 = sub(p, path[m - 2]);
            let h2 = rotate_like(h0, h1);
            let q = add(p, h2);
            (q, add(q, rotate_like(h1, h2)), dot(h1, h1).sqrt())
        } else if m == 2 {
            let h = sub(p, path[0]);
            (add(p, h), add(p, add(h, h)), dot(h, h).sqrt())
        } else {
            (p, p, 0.0)
        };
        let mut pick = (f64::INFINITY, 0, false);
        for (n, piece) in pieces.iter().enumerate() {
            let ends = [
                (false, piece.contacts[0]),
                (true, piece.contacts[piece.contacts.len() - 1]),
            ];
            for (rev, q) in ends {
                // first step: the nearest end, preferring the outer turn
                let cost = if m == 1 {
                    dist(q, p) - 0.5 * dist(q, c)
                } else {
                    // a contact where the one after next is expected costs a little more than one
                    // where the next is expected
                    dist(q, pred).min(dist(q, pred2) + 0.25 * step)
                };
                if piece.speck && (m == 1 || cost > 0.4 * step) {
                    continue;
                }
                if cost < pick.0 {
                    pick = (cost, n, rev);
                }
            }
        }
        let next = pieces.swap_remove(pick.1);
        used.push(next.blob);
        let mut more = next.contacts;
        if pick.2 {
            more.reverse();
        }
        path.extend(more);
    }
    (path, used)
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// `h1` turned once more by the rotation that takes the direction of `h0` to that of `h1`.
fn rotate_like(h0: Vec3, h1: Vec3) -> Vec3 {
    let n0 = dot(h0, h0).sqrt();
    let n1 = dot(h1, h1).sqrt();
    if n0 < 1e-9 || n1 < 1e-9 {
        return h1;
    }
    let a = [h0[0] / n0, h0[1] / n0, h0[2] / n0];
    let b = [h1[0] / n1, h1[1] / n1, h1[2] / n1];
    let axis = cross(a, b);
    let s = dot(axis, axis).sqrt();
    let cth = dot(a, b).clamp(-1.0, 1.0);
    if s < 1e-9 {
        return h1;
    }
    let k = [axis[0] / s, axis[1] / s, axis[2] / s];
    // Rodrigues: rotate h1 about k by the angle between h0 and h1
    let kx = cross(k, h1);
    let kd = dot(k, h1);
    [
        h1[0] * cth + kx[0] * s + k[0] * kd * (1.0 - cth),
        h1[1] * cth + kx[1] * s + k[1] * kd * (1.0 - cth),
        h1[2] * cth + kx[2] * s + k[2] * kd * (1.0 - cth),
    ]
}

pub(super) struct SpiralFit {
    /// Whether the first contact is the apical one; `None` when the two ends turn alike (the order is
    /// then not told by the spiral).
    pub(super) first_is_apical: Option<bool>,
    pub(super) angle_deg: Option<f64>,
}

/// Turning of the array in its best plane (at least 4 contacts): the tangent of a cochlear spiral turns
/// by the same angle as the position around the modiolus, so the insertion angle is the total turning,
/// with no need to locate the modiolar axis (nor to know which end is which: the total turning is the
/// same either way); the apical end is the one that turns faster per mm, told only when the ends
/// differ clearly. `None` for fewer than 4 contacts or an array turning by less than 60°.
pub(super) fn spiral_fit(contacts: &[Vec3]) -> Option<SpiralFit> {
    let n = contacts.len();
    if n < 4 {
        return None;
    }
    let c = mean(contacts);
    // axes ascending: the plane is spanned by the two largest
    let vecs = principal_axes(contacts)?;
    let (e1, e2) = (vecs[2], vecs[1]);
    let xy: Vec<[f64; 2]> = contacts
        .iter()
        .map(|p| {
            let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
            [dot(d, e1), dot(d, e2)]
        })
        .collect();
    let heading: Vec<f64> = xy
        .windows(2)
        .map(|w| (w[1][1] - w[0][1]).atan2(w[1][0] - w[0][0]))
        .collect();
    let seg_len: Vec<f64> = xy
        .windows(2)
        .map(|w| ((w[1][0] - w[0][0]).powi(2) + (w[1][1] - w[0][1]).powi(2)).sqrt())
        .collect();
    let turn: Vec<f64> = heading
        .windows(2)
        .map(|w| {
            let mut d = w[1] - w[0];
            while d > std::f64::consts::PI {
                d -= std::f64::consts::TAU;
            }
            while d < -std::f64::consts::PI {
                d += std::f64::consts::TAU;
            }
            d
        })
        .collect();
    let total: f64 = turn.iter().sum();
    // contacts at the ends sit half a segment beyond the first / last turning point
    let angle = total.abs() * (n - 1) as f64 / (n - 2) as f64;
    // turning per mm over the first and last third
    let k = (turn.len() / 3).max(1);
    let rate = |t: &[f64], l: &[f64]| t.iter().sum::<f64>().abs() / l.iter().sum::<f64>().max(1e-6);
    let first = rate(&turn[..k], &seg_len[..k + 1]);
    let last = rate(&turn[turn.len() - k..], &seg_len[seg_len.len() - k - 1..]);
    if angle < 60f64.to_radians() {
        return None;
    }
    Some(SpiralFit {
        first_is_apical: ((first - last).abs() >= 0.15 * first.max(last)).then_some(first > last),
        angle_deg: Some(angle.to_degrees()),
    })
}

/// Put the contacts tip first by the spiral where its ends tell which is apical; returns whether they
/// did and the insertion angle, with a note where the spiral did not tell.
pub(super) fn spiral_order(contacts: &mut [Vec3], notes: &mut Vec<String>) -> (bool, Option<f64>) {
    match spiral_fit(contacts) {
        Some(fit) => {
            if fit.first_is_apical == Some(false) {
                contacts.reverse();
            }
            if fit.first_is_apical.is_none() {
                notes.push(
                    "the array's two ends turn alike: the insertion angle is its total turning, but \
                     tip and base are not told by the spiral (order as found)"
                        .into(),
                );
            }
            (fit.first_is_apical.is_some(), fit.angle_deg)
        }
        None => {
            notes
                .push("array too straight or too short to tell tip from base by the spiral".into());
            (false, None)
        }
    }
}

/// The most contacts any array carries (Cochlear Nucleus 22), with a margin for one split peak.
const MAX_ARRAY_CONTACTS: usize = 24;

/// The axis about which the order repair judges the sense of turning: the contacts' plane normal, or
/// `None` when there are more candidates than any array carries (lead peaks among them, whose path need
/// not follow the spiral: the sense of turning then says nothing, and repairing by it would wind the
/// lead into extra turns).
pub(super) fn spiral_axis(points: &[Vec3]) -> Option<Vec3> {
    if points.len() > MAX_ARRAY_CONTACTS {
        return None;
    }
    plane_normal(points)
}

/// The normal of the best plane through the points (the modiolar axis for the contacts of a spiral), or
/// `None` when they lie about on a line (the second axis under 2 % of the first's variance: no plane).
pub(super) fn plane_normal(points: &[Vec3]) -> Option<Vec3> {
    if points.len() < 3 {
        return None;
    }
    principal_axes(points).map(|axes| axes[0])
}

/// The principal axes of the points, by ascending variance, or `None` when they lie about on a line
/// (the second axis under 2 % of the first's variance: no plane).
fn principal_axes(points: &[Vec3]) -> Option<[Vec3; 3]> {
    let c = mean(points);
    let mut cov = [[0.0; 3]; 3];
    for p in points {
        let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
        for a in 0..3 {
            for b in 0..3 {
                cov[a][b] += d[a] * d[b];
            }
        }
    }
    let (vals, vecs) = jacobi(cov);
    if vals[2] <= 0.0 || vals[1] / vals[2] < 0.02 {
        return None;
    }
    Some(vecs)
}

/// Eigen-decomposition of a symmetric 3×3 matrix (cyclic Jacobi): values ascending, vectors as rows.
fn jacobi(mut a: [[f64; 3]; 3]) -> ([f64; 3], [Vec3; 3]) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _ in 0..50 {
        let off = a[0][1].abs() + a[0][2].abs() + a[1][2].abs();
        if off < 1e-12 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-15 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            let mut b = a;
            for k in 0..3 {
                b[k][p] = c * a[k][p] - s * a[k][q];
                b[k][q] = s * a[k][p] + c * a[k][q];
            }
            let mut d = b;
            for k in 0..3 {
                d[p][k] = c * b[p][k] - s * b[q][k];
                d[q][k] = s * b[p][k] + c * b[q][k];
            }
            a = d;
            for row in v.iter_mut() {
                let (x, y) = (row[p], row[q]);
                row[p] = c * x - s * y;
                row[q] = s * x + c * y;
            }
        }
    }
    let vals = [a[0][0], a[1][1], a[2][2]];
    let mut idx = [0, 1, 2];
    idx.sort_by(|&x, &y| vals[x].total_cmp(&vals[y]));
    let col = |c: usize| [v[0][c], v[1][c], v[2][c]];
    (
        [vals[idx[0]], vals[idx[1]], vals[idx[2]]],
        [col(idx[0]), col(idx[1]), col(idx[2])],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_the_axes_of_a_diagonal_covariance() {
        let (vals, vecs) = jacobi([[4.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 9.0]]);
        assert_eq!(vals, [1.0, 4.0, 9.0]);
        assert!((vecs[2][2].abs() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn spiral_fit_orders_tip_first_and_measures_the_angle() {
        // 1.25 turns, radius shrinking from 4 to 2 mm: apical end is the last point
        let pts: Vec<Vec3> = (0..15)
            .map(|n| {
                let t = n as f64 / 14.0 * 1.25 * std::f64::consts::TAU;
                let r = 4.0 - 2.0 * n as f64 / 14.0;
                [r * t.cos(), r * t.sin(), 0.1 * t]
            })
            .collect();
        let f = spiral_fit(&pts).unwrap();
        assert_eq!(f.first_is_apical, Some(false));
        let a = f.angle_deg.unwrap();
        assert!((a - 450.0).abs() < 40.0, "{a}");
    }
}
