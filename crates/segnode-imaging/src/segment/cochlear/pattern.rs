//! The array's run of contacts: of the ordered contact candidates, the longest sequence spaced at one
//! pitch.
//!
//! Real arrays carry their contacts at one pitch along the carrier (Cochlear Nucleus 0.75–0.9 mm, AB
//! ≈ 1 mm, MED-EL 1.9–2.4 mm; some designs taper a little), from the tip to the most basal contact; past
//! it the lead wire runs on without contacts. Where the wire crosses dense otic-capsule bone it may clip
//! as a contact does and its metal profile then shows peaks too, but they do not keep the array's rhythm:
//! spaced a fraction of the pitch, or several pitches away from the run. So the array is the longest
//! sequence of candidates in which each step is about one pitch (or two: one contact missed by the
//! reading; not at the run's ends, where nothing past the gap confirms it), a few off-rhythm candidates
//! skipped between members. Steps are measured along the metal
//! where two candidates lie on one run of it (the lead may come back close to the array in space, not
//! along the wire), else straight. The pitch is not assumed: every gap
//! between consecutive candidates is tried, the one that explains most candidates wins. Candidates left
//! out are reported, never counted.

use crate::volume::geometry::Vec3;

/// Thresholds of the run selection.
#[derive(Debug, Clone)]
pub struct PatternParams {
    /// No real array has a tighter pitch (mm): the tightest designs sit at ≈ 0.6 mm; a wire's clipped
    /// stretch read as peaks is spaced by the profile's minimum peak separation (≈ 0.45 mm) and less.
    pub min_pitch_mm: f64,
    /// A step fits the pitch within this share of it (chord vs arc on a curved array, a taper, the
    /// contact centres' error).
    pub tolerance: f64,
    /// Candidates that may be skipped between two members (a wire peak between contacts).
    pub max_skip: usize,
    /// A double step (a contact missed) costs this share of a member: a run at half the pitch would
    /// explain every contact with double steps, and pick up wire peaks between them.
    pub double_cost: f64,
    /// A candidate skipped inside the run costs this share of a member: a stray peak between two
    /// contacts costs one, but a run cannot pick its way at the pitch through a wire's dense peaks
    /// (each member bought by skipping two or three of them).
    pub skip_cost: f64,
    /// A run shorter than this says nothing about the array (the candidates are left as they are and
    /// the pattern check reports them): the smallest array in view has 4 contacts.
    pub min_run: usize,
}

impl Default for PatternParams {
    fn default() -> Self {
        PatternParams {
            min_pitch_mm: 0.55,
            tolerance: 0.3,
            max_skip: 2,
            double_cost: 0.75,
            skip_cost: 1.0,
            min_run: 4,
        }
    }
}

/// The selected run: members as indices into the candidates (in order) and the pitch.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub members: Vec<usize>,
    pub pitch_mm: f64,
    /// Steps of about two pitches inside the run (a contact missed by the reading).
    pub double_steps: usize,
    /// Candidates skipped between members.
    pub skipped: usize,
}

impl Run {
    fn score(&self, pp: &PatternParams) -> f64 {
        score(self.members.len(), self.double_steps, self.skipped, pp)
    }
}

fn score(members: usize, doubles: usize, skipped: usize, pp: &PatternParams) -> f64 {
    members as f64 - pp.double_cost * doubles as f64 - pp.skip_cost * skipped as f64
}

/// How many pitches a step of `d` mm is at pitch `p`: 1 or 2 when it fits, else `None`.
fn steps(d: f64, p: f64, tol: f64) -> Option<usize> {
    let r = d / p;
    if (r - 1.0).abs() <= tol {
        Some(1)
    } else if (r - 2.0).abs() <= 2.0 * tol {
        Some(2)
    } else {
        None
    }
}

/// The longest run at pitch `p` among the candidates allowed by `open` (dynamic programming over the
/// order, a member's predecessor at most `max_skip + 1` candidates back).
pub fn run_at(
    n: usize,
    dist: &dyn Fn(usize, usize) -> f64,
    open: &[bool],
    p: f64,
    pp: &PatternParams,
) -> Option<Run> {
    // (members, double steps, skipped, predecessor) of the best run ending at each candidate
    let mut best: Vec<(usize, usize, usize, Option<usize>)> = vec![(0, 0, 0, None); n];
    let sc = |b: &(usize, usize, usize, Option<usize>)| score(b.0, b.1, b.2, pp);
    for i in 0..n {
        if !open[i] {
            continue;
        }
        best[i] = (1, 0, 0, None);
        for j in i.saturating_sub(pp.max_skip + 1)..i {
            if !open[j] || best[j].0 == 0 {
                continue;
            }
            if let Some(k) = steps(dist(j, i), p, pp.tolerance) {
                let skipped = (j + 1..i).filter(|&m| open[m]).count();
                let cand = (
                    best[j].0 + 1,
                    best[j].1 + (k - 1),
                    best[j].2 + skipped,
                    Some(j),
                );
                if sc(&cand) > sc(&best[i]) {
                    best[i] = cand;
                }
            }
        }
    }
    let end = (0..n)
        .filter(|&i| best[i].0 > 0)
        .max_by(|&a, &b| sc(&best[a]).total_cmp(&sc(&best[b])))?;
    let mut members = vec![end];
    let mut at = end;
    while let Some(j) = best[at].3 {
        members.push(j);
        at = j;
    }
    members.reverse();
    Some(Run {
        members,
        pitch_mm: p,
        double_steps: best[end].1,
        skipped: best[end].2,
    })
}

/// The median single step of a run (its pitch, measured).
fn measured_pitch(dist: &dyn Fn(usize, usize) -> f64, run: &Run, tol: f64) -> f64 {
    let mut g: Vec<f64> = run
        .members
        .windows(2)
        .map(|w| dist(w[0], w[1]))
        .filter(|&d| steps(d, run.pitch_mm, tol) == Some(1))
        .collect();
    g.sort_by(|a, b| a.total_cmp(b));
    g.get(g.len() / 2).copied().unwrap_or(run.pitch_mm)
}

/// The best run among the candidates allowed by `open`: every consecutive gap tried as the pitch, the
/// run with most members kept (a missed contact costing most of a member), its pitch then measured on its own
/// steps and the run taken again at that pitch.
pub fn best_run(
    n: usize,
    dist: &dyn Fn(usize, usize) -> f64,
    open: &[bool],
    pp: &PatternParams,
) -> Option<Run> {
    let mut tried: Vec<f64> = Vec::new();
    let mut best: Option<Run> = None;
    for i in 0..n {
        for j in i + 1..(i + 2 + pp.max_skip).min(n) {
            if !open[i] || !open[j] {
                continue;
            }
            let p = dist(i, j);
            if p < pp.min_pitch_mm || tried.iter().any(|&t| (t - p).abs() < 0.01) {
                continue;
            }
            tried.push(p);
            let Some(r) = run_at(n, dist, open, p, pp) else {
                continue;
            };
            let better = best.as_ref().is_none_or(|b| r.score(pp) > b.score(pp));
            if better {
                best = Some(r);
            }
        }
    }
    let b = best?;
    let p = measured_pitch(dist, &b, pp.tolerance);
    let r = match run_at(n, dist, open, p, pp) {
        Some(r) if r.score(pp) >= b.score(pp) => r,
        _ => b,
    };
    Some(trim_lone_ends(r, dist, pp))
}

/// A missed contact leaves a gap of two pitches or a little less (the chord of a curve, the centres'
/// error); a gap at the run's end longer than this many pitches is not a missed contact.
const LONE_END_MIN_PITCHES: f64 = 2.2;

/// A member at an end of the run reached only by a double step longer than `LONE_END_MIN_PITCHES` is a
/// lone peak past a gap that no missed contact explains, with nothing beyond it to confirm the rhythm:
/// the lead's peaks past the basal contact land there (a double step spans 1.4–2.6 pitches). When it is
/// the run's only double step it is left out (reported with the other off-rhythm peaks); a run is never
/// trimmed below `min_run`.
fn trim_lone_ends(mut r: Run, dist: &dyn Fn(usize, usize) -> f64, pp: &PatternParams) -> Run {
    let m = r.members.len();
    if r.double_steps != 1 || m <= pp.min_run {
        return r;
    }
    let double = |a: usize, b: usize| {
        let d = dist(a, b);
        steps(d, r.pitch_mm, pp.tolerance) == Some(2) && d > LONE_END_MIN_PITCHES * r.pitch_mm
    };
    if double(r.members[m - 2], r.members[m - 1]) {
        r.members.pop();
        r.double_steps = 0;
    } else if double(r.members[0], r.members[1]) {
        r.members.remove(0);
        r.double_steps = 0;
    }
    r
}

/// How badly a step of `d` mm fails the pitch: 0 for one pitch, 1 for none, and half for two (a
/// contact missed, or a walk that skipped contacts it comes back for).
fn misfit(d: f64, p: f64, tol: f64) -> f64 {
    match steps(d, p, tol) {
        Some(1) => 0.0,
        Some(_) => 0.5,
        None => 1.0,
    }
}

/// Along an array the path turns gradually; a walk that hops to the next turn and back turns round.
/// A turn sharper than this between consecutive steps (rad) is such a hop: a spiral turns by pitch /
/// radius per step, < 2 rad for real pitches at the apical radius (≥ 1.2 mm).
const REVERSAL_RAD: f64 = 2.1;

fn reverses(a: Vec3, b: Vec3, c: Vec3) -> bool {
    let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let v = [c[0] - b[0], c[1] - b[1], c[2] - b[2]];
    let nu = (u[0] * u[0] + u[1] * u[1] + u[2] * u[2]).sqrt();
    let nv = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if nu < 1e-9 || nv < 1e-9 {
        return false;
    }
    let cos = (u[0] * v[0] + u[1] * v[1] + u[2] * v[2]) / (nu * nv);
    cos.clamp(-1.0, 1.0).acos() > REVERSAL_RAD
}

/// A spiral turns one way round its modiolus at every contact; a walk that hopped to another turn and
/// runs back along it turns the other way. Turns (rad) smaller than this are not judged: the contact
/// centres' error (≈ 0.05 mm each) turns a 0.75 mm step by up to ≈ 0.1 rad, while a real array turns by
/// pitch / radius ≥ 0.15 rad per step (0.75 mm at the basal radius ≤ 5 mm).
pub(super) const WRONG_TURN_MIN_RAD: f64 = 0.12;

/// What a turn against the spiral's sense costs, as a share of a step of no pitch: a hop that comes
/// back along another turn leaves a stretch of them, one odd turn (a centre's error, the basal contact
/// where the array enters the cochlea) must not outweigh a step that fits no pitch.
const WRONG_TURN_COST: f64 = 0.5;

/// Signed turn (rad) at `b` about the axis `n`.
pub(super) fn signed_turn(a: Vec3, b: Vec3, c: Vec3, n: Vec3) -> f64 {
    let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let v = [c[0] - b[0], c[1] - b[1], c[2] - b[2]];
    let x = [
        u[1] * v[2] - u[2] * v[1],
        u[2] * v[0] - u[0] * v[2],
        u[0] * v[1] - u[1] * v[0],
    ];
    let sin = x[0] * n[0] + x[1] * n[1] + x[2] * n[2];
    let cos = u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
    sin.atan2(cos)
}

/// How many of the order's turns go against its dominant sense about the axis `n` (turns under
/// `WRONG_TURN_MIN_RAD` not counted).
fn wrong_turns(points: &[Vec3], o: &[usize], n: Vec3) -> usize {
    let (mut pos, mut neg) = (0usize, 0usize);
    for w in o.windows(3) {
        let t = signed_turn(points[w[0]], points[w[1]], points[w[2]], n);
        if t > WRONG_TURN_MIN_RAD {
            pos += 1;
        } else if t < -WRONG_TURN_MIN_RAD {
            neg += 1;
        }
    }
    pos.min(neg)
}

/// The order of the contacts repaired: a greedy walk along a spiral may jump to the next turn or to a
/// later piece and come back for the rest, which leaves steps that fit no pitch or span two, or that
/// turn round (a reversal costs as much as a step of no pitch), or that turn against the spiral's sense
/// about the axis `axis` (the normal of the contacts' plane; a walk that hopped a turn and came back
/// along it may keep the pitch at every step, but not the sense of turning). Segments
/// of the order are moved (either way round) to wherever the misfit (a step of no pitch 1, of two
/// pitches ½) drops, until no move helps; an order whose every step is one pitch is left as it is.
/// Returns the new order as indices.
pub fn untangle(
    points: &[Vec3],
    dist: &dyn Fn(usize, usize) -> f64,
    pitch: f64,
    tol: f64,
    axis: Option<Vec3>,
) -> Vec<usize> {
    let n = points.len();
    let cost = |o: &[usize]| {
        let against = axis.map_or(0, |a| wrong_turns(points, o, a));
        let bad: f64 = WRONG_TURN_COST * against as f64
            + o.windows(2)
                .map(|w| misfit(dist(w[0], w[1]), pitch, tol))
                .sum::<f64>()
            + o.windows(3)
                .filter(|w| reverses(points[w[0]], points[w[1]], points[w[2]]))
                .count() as f64;
        let len: f64 = o.windows(2).map(|w| dist(w[0], w[1])).sum();
        (bad, len)
    };
    let mut order: Vec<usize> = (0..n).collect();
    let mut now = cost(&order);
    // a bounded number of moves: each removes at least half a misfit
    for _ in 0..n {
        if now.0 == 0.0 {
            break;
        }
        let mut best: Option<(Vec<usize>, (f64, f64))> = None;
        for i in 0..n {
            for j in i..n {
                let seg: Vec<usize> = order[i..=j].to_vec();
                let rest: Vec<usize> = order[..i].iter().chain(&order[j + 1..]).copied().collect();
                for k in 0..=rest.len() {
                    for rev in [false, true] {
                        let mut s = seg.clone();
                        if rev {
                            s.reverse();
                        }
                        let mut cand = rest[..k].to_vec();
                        cand.extend(s);
                        cand.extend_from_slice(&rest[k..]);
                        let c = cost(&cand);
                        let better = c.0 < now.0
                            && best
                                .as_ref()
                                .is_none_or(|(_, b)| c.0 < b.0 || (c.0 == b.0 && c.1 < b.1));
                        if better {
                            best = Some((cand, c));
                        }
                    }
                }
            }
        }
        match best {
            Some((o, c)) => {
                order = o;
                now = c;
            }
            None => break,
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_a_line(xs: &[f64]) -> Option<Run> {
        let d = |a: usize, b: usize| (xs[a] - xs[b]).abs();
        best_run(
            xs.len(),
            &d,
            &vec![true; xs.len()],
            &PatternParams::default(),
        )
    }

    #[test]
    fn wire_peaks_past_the_basal_contact_are_left_out() {
        // 8 contacts at 1.9 mm, then the lead's clipped stretch read as peaks every 0.5 mm
        let mut xs: Vec<f64> = (0..8).map(|n| n as f64 * 1.9).collect();
        for n in 1..=10 {
            xs.push(7.0 * 1.9 + n as f64 * 0.5);
        }
        let r = on_a_line(&xs).unwrap();
        assert_eq!(r.members, (0..8).collect::<Vec<_>>());
        assert!((r.pitch_mm - 1.9).abs() < 0.01);
    }

    #[test]
    fn a_scrambled_order_is_put_back_along_the_array() {
        // contacts 0..9 at 1 mm on a line, visited as 4 5 0 1 2 3 9 8 7 6
        let xs: [f64; 10] = [4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 9.0, 8.0, 7.0, 6.0];
        let pts: Vec<Vec3> = xs.iter().map(|&x| [x, 0.0, 0.0]).collect();
        let d = |a: usize, b: usize| (xs[a] - xs[b]).abs();
        let o = untangle(&pts, &d, 1.0, 0.3, None);
        let pos: Vec<f64> = o.iter().map(|&i| xs[i]).collect();
        let ascending: Vec<f64> = (0..10).map(|x| x as f64).collect();
        let descending: Vec<f64> = ascending.iter().rev().copied().collect();
        assert!(pos == ascending || pos == descending, "{pos:?}");
    }

    #[test]
    fn a_walk_that_hopped_a_turn_at_the_pitch_is_put_back_by_the_sense_of_turning() {
        // 14 contacts 1.5 mm apart on a spiral (radius 3.5 mm at the base to 1.4 mm at the tip):
        // the tip's third contact lies one pitch from the basal one, so a walk 0 1 2 13 12 … 3 keeps the
        // pitch at every step, but runs back along the outer turn turning the other way
        let n = 14;
        let mut th: f64 = 0.0;
        let mut pts: Vec<Vec3> = Vec::new();
        for k in 0..n {
            let r = 3.5 + (1.4 - 3.5) * k as f64 / (n - 1) as f64;
            pts.push([r * th.cos(), r * th.sin(), 0.1 * th]);
            th += 1.5 / r;
        }
        pts.reverse();
        let visit: Vec<usize> = [0, 1, 2].into_iter().chain((3..n).rev()).collect();
        let walked: Vec<Vec3> = visit.iter().map(|&v| pts[v]).collect();
        let d = |a: usize, b: usize| {
            let (p, q) = (walked[a], walked[b]);
            ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt()
        };
        let o = untangle(&walked, &d, 1.5, 0.3, Some([0.0, 0.0, 1.0]));
        let back: Vec<usize> = o.iter().map(|&i| visit[i]).collect();
        let ascending: Vec<usize> = (0..n).collect();
        let descending: Vec<usize> = (0..n).rev().collect();
        assert!(back == ascending || back == descending, "{back:?}");
    }

    #[test]
    fn a_lone_peak_two_pitches_past_the_end_is_left_out() {
        // 8 contacts at 1.9 mm, then the lead's peak 4.8 mm past the basal one (2.5 pitches)
        let mut xs: Vec<f64> = (0..8).map(|n| n as f64 * 1.9).collect();
        xs.push(7.0 * 1.9 + 4.8);
        let r = on_a_line(&xs).unwrap();
        assert_eq!(r.members, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_missed_contact_keeps_the_run_whole_and_a_stray_peak_is_skipped() {
        let xs = [0.0, 1.0, 2.0, 4.0, 4.45, 5.0, 6.0, 12.0];
        let r = on_a_line(&xs).unwrap();
        assert_eq!(r.members, vec![0, 1, 2, 3, 5, 6]);
        assert_eq!(r.double_steps, 1);
    }
}

/// The median turn (rad) of the ordered points about the axis `n`, signed so that the sense `sense`
/// (+1 or -1) is positive; `None` with fewer than 4 points (fewer than two turns say nothing).
pub(super) fn median_turn(points: &[Vec3], n: Vec3, sense: f64) -> Option<f64> {
    if points.len() < 4 {
        return None;
    }
    let mut t: Vec<f64> = points
        .windows(3)
        .map(|w| sense * signed_turn(w[0], w[1], w[2], n))
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    Some(t[t.len() / 2])
}
