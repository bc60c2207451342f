//! Ray casting of the disease step (issue 19): from every solid voxel, the class of the first non-solid
//! voxel along a direction, found by dynamic programming along that direction (each voxel looks one step
//! ahead and takes over the answer of its neighbour).
//!
//! Written for speed (issue 16): one byte per voxel comes back — the class, with [`BEYOND`] set when the
//! hit lies farther than a nearer reach — and the step counts live in one or two slice-sized buffers, not
//! in a volume. One cast runs on one thread: the caller runs several casts side by side (coarse tasks, no
//! barrier per slice, which a busy machine punishes).

/// Voxel classes of the ray casting (side codes 1 and 2 are the lungs).
pub(super) const OPEN: u8 = 0;
pub(super) const WALL: u8 = 3;
pub(super) const SOLID: u8 = 4;
/// The airway exclusion: never a candidate, but where the bronchus enters the lung it bounds the cavity.
pub(super) const AIRWAY: u8 = 5;
/// Flag on a cast result: the hit lies beyond the nearer reach (`near`) of [`cast`].
pub(super) const BEYOND: u8 = 0x80;
/// The class bits of a cast result.
pub(super) const CLASS: u8 = 0x7f;

/// One voxel of the recurrence: `ql` is the class of the voxel one step ahead, `qh` / `qs` its answer
/// and steps (meaningful when it is solid). Returns this voxel's class (with [`BEYOND`]) and steps.
#[inline(always)]
fn step(ql: u8, qh: u8, qs: u16, max_steps: u16, near: u16) -> (u8, u16) {
    if ql == SOLID {
        if qs >= max_steps {
            (OPEN, max_steps)
        } else {
            let s = qs + 1;
            let h = qh & CLASS;
            (if s > near && h != OPEN { h | BEYOND } else { h }, s)
        }
    } else {
        (ql, 1)
    }
}

/// First non-solid voxel along `dir` from every solid voxel of `lab` (`d` = [nk, nj, ni], row-major):
/// its class, `OPEN` when the run of solid voxels is longer than `max_steps` or leaves the grid, with
/// [`BEYOND`] set when the hit is more than `near` steps away. Non-solid voxels get `OPEN`.
pub(super) fn cast(
    lab: &[u8],
    d: [usize; 3],
    dir: [isize; 3],
    max_steps: u16,
    near: u16,
) -> Vec<u8> {
    let [nk, nj, ni] = d;
    let plane = nj * ni;
    let mut hit = vec![OPEN; lab.len()];
    // rows j (and columns i) in the order the recurrence needs: the voxel ahead is done first
    let order = |n: usize, s: isize| -> Vec<usize> {
        if s > 0 {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        }
    };
    let is = order(ni, dir[2]);
    let inside = |j: usize, i: usize| -> Option<usize> {
        let (jn, inn) = (j as isize + dir[1], i as isize + dir[2]);
        (jn >= 0 && jn < nj as isize && inn >= 0 && inn < ni as isize)
            .then(|| jn as usize * ni + inn as usize)
    };
    let js = order(nj, dir[1]);
    let mut steps = vec![0u16; plane];
    if dir[0] == 0 {
        for (hp, lp) in hit.chunks_mut(plane).zip(lab.chunks(plane)) {
            for &j in &js {
                for &i in &is {
                    let p = j * ni + i;
                    if lp[p] != SOLID {
                        continue;
                    }
                    let (h, s) = match inside(j, i) {
                        None => (OPEN, 1),
                        Some(q) => step(lp[q], hp[q], steps[q], max_steps, near),
                    };
                    hp[p] = h;
                    steps[p] = s;
                }
            }
        }
        return hit;
    }
    // along k: slices in order, every voxel looks into the slice done before it only
    let mut prev_steps = vec![0u16; plane];
    let ks = order(nk, dir[0]);
    for (n, &k) in ks.iter().enumerate() {
        let lp = &lab[k * plane..(k + 1) * plane];
        if n == 0 {
            // the step leaves the grid
            let hp = &mut hit[k * plane..(k + 1) * plane];
            for (p, (h, s)) in hp.iter_mut().zip(steps.iter_mut()).enumerate() {
                if lp[p] == SOLID {
                    *h = OPEN;
                    *s = 1;
                }
            }
        } else {
            let kn = ks[n - 1];
            // split so the slice looked into is read while slice k is written
            let (hp, np) = if kn < k {
                let (lo, hi) = hit.split_at_mut(k * plane);
                (&mut hi[..plane], &lo[kn * plane..(kn + 1) * plane])
            } else {
                let (lo, hi) = hit.split_at_mut(kn * plane);
                (&mut lo[k * plane..(k + 1) * plane], &hi[..plane])
            };
            let nl = &lab[kn * plane..(kn + 1) * plane];
            for j in 0..nj {
                for i in 0..ni {
                    let p = j * ni + i;
                    if lp[p] != SOLID {
                        continue;
                    }
                    let (h, s) = match inside(j, i) {
                        None => (OPEN, 1),
                        Some(q) => step(nl[q], np[q], prev_steps[q], max_steps, near),
                    };
                    hp[p] = h;
                    steps[p] = s;
                }
            }
        }
        std::mem::swap(&mut prev_steps, &mut steps);
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rays_stop_at_the_first_non_solid_voxel() {
        // one row of 8 along each axis: lung(1) solid solid wall(3) solid solid solid lung(2)
        let row = [1u8, SOLID, SOLID, WALL, SOLID, SOLID, SOLID, 2];
        for axis in 0..3 {
            let mut d = [1usize; 3];
            d[axis] = 8;
            let lab: Vec<u8> = row.to_vec();
            let mut dir = [0isize; 3];
            dir[axis] = 1;
            let h = cast(&lab, d, dir, 100, 100);
            assert_eq!(h[1], WALL, "axis {axis}");
            assert_eq!(h[4], 2);
            // the nearer reach flags hits farther than it
            let h = cast(&lab, d, dir, 100, 2);
            assert_eq!(h[1], WALL, "axis {axis}");
            assert_eq!(h[4], 2 | BEYOND);
            assert_eq!(h[5], 2);
            dir[axis] = -1;
            let h = cast(&lab, d, dir, 100, 100);
            assert_eq!(h[2], 1, "axis {axis}");
            assert_eq!(h[6], WALL);
            // reach
            let h = cast(&lab, d, dir, 1, 1);
            assert_eq!(h[6], OPEN);
        }
    }

    #[test]
    fn diagonal_rays_match_a_direct_walk() {
        let d = [6usize, 7, 9];
        let mut x: u64 = 99;
        let lab: Vec<u8> = (0..d.iter().product::<usize>())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                [SOLID, SOLID, SOLID, WALL, 1, 2, AIRWAY][(x % 7) as usize]
            })
            .collect();
        for dir in [[1, 1, 0], [-1, 0, 1], [0, 1, -1], [1, -1, 0]] {
            let h = cast(&lab, d, dir, 3, 2);
            for k in 0..d[0] {
                for j in 0..d[1] {
                    for i in 0..d[2] {
                        let p = (k * d[1] + j) * d[2] + i;
                        if lab[p] != SOLID {
                            continue;
                        }
                        // walk
                        let (mut pos, mut n, mut want) = ([k, j, i].map(|v| v as isize), 0, OPEN);
                        loop {
                            pos = [0, 1, 2].map(|a| pos[a] + dir[a]);
                            n += 1;
                            if (0..3).any(|a| pos[a] < 0 || pos[a] >= d[a] as isize) || n > 3 {
                                break;
                            }
                            let q =
                                (pos[0] as usize * d[1] + pos[1] as usize) * d[2] + pos[2] as usize;
                            if lab[q] != SOLID {
                                want = lab[q] | if n > 2 { BEYOND } else { 0 };
                                break;
                            }
                        }
                        assert_eq!(h[p], want, "{dir:?} at {k} {j} {i}");
                    }
                }
            }
        }
    }
}
