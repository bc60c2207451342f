//! Voxel operations the segmenters share, written for speed and safety on large grids: block-mean
//! downsampling, 6-connected component labelling (no component-count limit), binary dilation / erosion
//! with a 6-neighbourhood, label dilation, 2D hole filling, and multi-seed geodesic growth.
//!
//! Masks are `ndarray` arrays in standard (C) layout indexed `[k, j, i]`; functions work on the flat
//! slices with precomputed strides and run in parallel over slices where that pays.

use ndarray::{Array3, ArrayView3, Axis};
use rayon::prelude::*;
use std::collections::VecDeque;

/// Shape as `[nk, nj, ni]`.
pub fn dims<T>(a: &Array3<T>) -> [usize; 3] {
    let s = a.shape();
    [s[0], s[1], s[2]]
}

/// The up-to-6 face neighbours of a flat index.
#[inline]
pub fn neighbours6(idx: usize, d: [usize; 3], mut f: impl FnMut(usize)) {
    let (nk, nj, ni) = (d[0], d[1], d[2]);
    let plane = nj * ni;
    let k = idx / plane;
    let r = idx % plane;
    let j = r / ni;
    let i = r % ni;
    if i > 0 {
        f(idx - 1);
    }
    if i + 1 < ni {
        f(idx + 1);
    }
    if j > 0 {
        f(idx - ni);
    }
    if j + 1 < nj {
        f(idx + ni);
    }
    if k > 0 {
        f(idx - plane);
    }
    if k + 1 < nk {
        f(idx + plane);
    }
}

/// Block means of `hu` over `f = [fk, fj, fi]` blocks (the last block of an axis may be partial), ignoring
/// voxels flagged in `excluded`; a block is flagged when more than half of its voxels are.
pub fn downsample_mean(
    hu: ArrayView3<i16>,
    excluded: Option<&(dyn Fn(usize, usize, usize) -> bool + Sync)>,
    f: [usize; 3],
) -> (Array3<i16>, Array3<bool>) {
    let s = hu.shape();
    let (nk, nj, ni) = (s[0], s[1], s[2]);
    let cd = [nk.div_ceil(f[0]), nj.div_ceil(f[1]), ni.div_ceil(f[2])];
    let mut out = Array3::<i16>::zeros(cd);
    let mut flag = Array3::<bool>::from_elem(cd, false);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(flag.axis_iter_mut(Axis(0)))
        .enumerate()
        .for_each(|(ck, (mut o, mut fl))| {
            let mut sum = vec![0i64; cd[1] * cd[2]];
            let mut cnt = vec![0u32; cd[1] * cd[2]];
            let mut exc = vec![0u32; cd[1] * cd[2]];
            for k in ck * f[0]..((ck + 1) * f[0]).min(nk) {
                let plane = hu.index_axis(Axis(0), k);
                for j in 0..nj {
                    let row = plane.index_axis(Axis(0), j);
                    let cj = j / f[1];
                    for (i, &v) in row.iter().enumerate() {
                        let c = cj * cd[2] + i / f[2];
                        if excluded.is_some_and(|e| e(k, j, i)) {
                            exc[c] += 1;
                        } else {
                            sum[c] += v as i64;
                            cnt[c] += 1;
                        }
                    }
                }
            }
            for (c, (ov, fv)) in o.iter_mut().zip(fl.iter_mut()).enumerate() {
                *ov = if cnt[c] > 0 {
                    (sum[c] / cnt[c] as i64) as i16
                } else {
                    -1024
                };
                *fv = exc[c] > cnt[c];
            }
        });
    (out, flag)
}

/// 6-connected components of `mask`: labels (0 = background, 1.. = component) and the size of each
/// component (`sizes[l - 1]`).
pub fn label6(mask: &Array3<bool>) -> (Array3<u32>, Vec<usize>) {
    let d = dims(mask);
    let m = mask.as_slice().expect("standard layout");
    let mut lab = vec![0u32; m.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..m.len() {
        if !m[start] || lab[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32 + 1;
        lab[start] = id;
        stack.push(start);
        let mut n = 0usize;
        while let Some(p) = stack.pop() {
            n += 1;
            neighbours6(p, d, |q| {
                if m[q] && lab[q] == 0 {
                    lab[q] = id;
                    stack.push(q);
                }
            });
        }
        sizes.push(n);
    }
    (Array3::from_shape_vec(d, lab).expect("shape"), sizes)
}

/// One step of 6-neighbourhood dilation, repeated `r` times; voxels where `block` is true are never added.
pub fn dilate6(mask: &Array3<bool>, r: usize, block: Option<&Array3<bool>>) -> Array3<bool> {
    let mut cur = mask.clone();
    let d = dims(mask);
    for _ in 0..r {
        let src = cur.as_slice().expect("standard layout");
        let blk = block.map(|b| b.as_slice().expect("standard layout"));
        let next: Vec<bool> = (0..src.len())
            .into_par_iter()
            .map(|p| {
                if src[p] {
                    return true;
                }
                if blk.is_some_and(|b| b[p]) {
                    return false;
                }
                let mut any = false;
                neighbours6(p, d, |q| any |= src[q]);
                any
            })
            .collect();
        cur = Array3::from_shape_vec(d, next).expect("shape");
    }
    cur
}

/// 6-neighbourhood erosion repeated `r` times (voxels on the grid edge erode only through in-grid
/// neighbours, so masks cut by the field of view are not eaten from the edge).
pub fn erode6(mask: &Array3<bool>, r: usize) -> Array3<bool> {
    let mut cur = mask.clone();
    let d = dims(mask);
    for _ in 0..r {
        let src = cur.as_slice().expect("standard layout");
        let next: Vec<bool> = (0..src.len())
            .into_par_iter()
            .map(|p| {
                if !src[p] {
                    return false;
                }
                let mut all = true;
                neighbours6(p, d, |q| all &= src[q]);
                all
            })
            .collect();
        cur = Array3::from_shape_vec(d, next).expect("shape");
    }
    cur
}

/// In-plane (per slice) closing with a disc of radius `r` voxels (approximated by `r` 4-neighbour steps
/// and diagonal steps alternating, i.e. an octagon).
pub fn close2d(mask: &Array3<bool>, r: usize) -> Array3<bool> {
    let mut out = mask.clone();
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut plane| {
            let (nj, ni) = (plane.shape()[0], plane.shape()[1]);
            let mut cur: Vec<bool> = plane.iter().copied().collect();
            // pad-free: dilation r times, erosion r times, with the grid edge treated as "inside" for the
            // erosion (so a lung cut by the field of view is not eroded from the cut)
            for step in 0..r {
                cur = step2d(&cur, nj, ni, step % 2 == 1, true);
            }
            for step in 0..r {
                cur = step2d(&cur, nj, ni, step % 2 == 1, false);
            }
            for (d, s) in plane.iter_mut().zip(cur) {
                *d |= s;
            }
        });
    out
}

fn step2d(src: &[bool], nj: usize, ni: usize, diagonal: bool, dilate: bool) -> Vec<bool> {
    let mut out = vec![false; src.len()];
    for j in 0..nj {
        for i in 0..ni {
            let p = j * ni + i;
            let mut acc = src[p];
            let mut visit = |dj: isize, di: isize| {
                let (jj, ii) = (j as isize + dj, i as isize + di);
                if jj < 0 || ii < 0 || jj >= nj as isize || ii >= ni as isize {
                    return; // outside the grid: neutral
                }
                let v = src[jj as usize * ni + ii as usize];
                if dilate {
                    acc |= v;
                } else {
                    acc &= v;
                }
            };
            visit(-1, 0);
            visit(1, 0);
            visit(0, -1);
            visit(0, 1);
            if diagonal {
                visit(-1, -1);
                visit(-1, 1);
                visit(1, -1);
                visit(1, 1);
            }
            out[p] = acc;
        }
    }
    out
}

/// Fill, slice by slice, the background regions of `labels == value` that do not reach the edge of the
/// slice's bounding box (+1 margin) and hold at most `max_area` pixels, writing `value` only where
/// `labels` is 0. The size limit keeps vessels and nodules but not, e.g., the diaphragm dome that a ring of
/// lung base encloses in an axial slice.
pub fn fill_holes_2d(labels: &mut Array3<u8>, value: u8, max_area: usize) {
    labels
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut plane| {
            let (nj, ni) = (plane.shape()[0], plane.shape()[1]);
            // bounding box of the label in this slice
            let (mut j0, mut j1, mut i0, mut i1) = (usize::MAX, 0, usize::MAX, 0);
            for ((j, i), &l) in plane.indexed_iter() {
                if l == value {
                    j0 = j0.min(j);
                    j1 = j1.max(j);
                    i0 = i0.min(i);
                    i1 = i1.max(i);
                }
            }
            if j0 == usize::MAX {
                return;
            }
            // work in the box grown by one voxel; voxels outside the grid count as "outside"
            let (bj0, bi0) = (j0.saturating_sub(1), i0.saturating_sub(1));
            let (bj1, bi1) = ((j1 + 1).min(nj - 1), (i1 + 1).min(ni - 1));
            let (bh, bw) = (bj1 - bj0 + 1, bi1 - bi0 + 1);
            let mut reached = vec![false; bh * bw];
            let mut queue = VecDeque::new();
            let is_fg = |j: usize, i: usize| plane[[bj0 + j, bi0 + i]] == value;
            for j in 0..bh {
                for i in 0..bw {
                    if (j == 0 || i == 0 || j == bh - 1 || i == bw - 1) && !is_fg(j, i) {
                        reached[j * bw + i] = true;
                        queue.push_back((j, i));
                    }
                }
            }
            while let Some((j, i)) = queue.pop_front() {
                let mut go = |jj: usize, ii: usize| {
                    let p = jj * bw + ii;
                    if !reached[p] && !is_fg(jj, ii) {
                        reached[p] = true;
                        queue.push_back((jj, ii));
                    }
                };
                if j > 0 {
                    go(j - 1, i);
                }
                if j + 1 < bh {
                    go(j + 1, i);
                }
                if i > 0 {
                    go(j, i - 1);
                }
                if i + 1 < bw {
                    go(j, i + 1);
                }
            }
            // each remaining background region is a hole: fill it when small enough
            let mut hole = Vec::new();
            let mut to_fill = Vec::new();
            for start in 0..bh * bw {
                if reached[start] {
                    continue;
                }
                hole.clear();
                reached[start] = true;
                hole.push(start);
                let mut q = 0;
                while q < hole.len() {
                    let p = hole[q];
                    q += 1;
                    let (j, i) = (p / bw, p % bw);
                    let mut go = |jj: usize, ii: usize| {
                        let r = jj * bw + ii;
                        if !reached[r] && !is_fg(jj, ii) {
                            reached[r] = true;
                            hole.push(r);
                        }
                    };
                    if j > 0 {
                        go(j - 1, i);
                    }
                    if j + 1 < bh {
                        go(j + 1, i);
                    }
                    if i > 0 {
                        go(j, i - 1);
                    }
                    if i + 1 < bw {
                        go(j, i + 1);
                    }
                }
                if hole.len() <= max_area {
                    to_fill.extend_from_slice(&hole);
                }
            }
            for p in to_fill {
                let v = &mut plane[[bj0 + p / bw, bi0 + p % bw]];
                if *v == 0 {
                    *v = value;
                }
            }
        });
}

/// Multi-seed breadth-first growth inside `allowed`: every allowed voxel connected to a seed gets the
/// label of the seed that reaches it first (seeds: `labels > 0`). Returns the grown labels.
pub fn grow_labels(seeds: &Array3<u8>, allowed: &Array3<bool>) -> Array3<u8> {
    let d = dims(seeds);
    let mut lab: Vec<u8> = seeds.iter().copied().collect();
    let a = allowed.as_slice().expect("standard layout");
    let mut queue: VecDeque<usize> = (0..lab.len()).filter(|&p| lab[p] > 0).collect();
    while let Some(p) = queue.pop_front() {
        let l = lab[p];
        neighbours6(p, d, |q| {
            if lab[q] == 0 && a[q] {
                lab[q] = l;
                queue.push_back(q);
            }
        });
    }
    Array3::from_shape_vec(d, lab).expect("shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(n: usize, lo: usize, hi: usize) -> Array3<bool> {
        Array3::from_shape_fn((n, n, n), |(k, j, i)| {
            (lo..hi).contains(&k) && (lo..hi).contains(&j) && (lo..hi).contains(&i)
        })
    }

    #[test]
    fn labelling_counts_components_and_sizes() {
        let mut m = cube(10, 1, 4);
        m[[8, 8, 8]] = true;
        m[[8, 8, 7]] = true;
        m[[8, 7, 7]] = false;
        let (lab, sizes) = label6(&m);
        assert_eq!(sizes, vec![27, 2]);
        assert_eq!(lab[[2, 2, 2]], 1);
        assert_eq!(lab[[8, 8, 8]], 2);
        // diagonal contact is not 6-connected
        let mut d = Array3::from_elem((3, 3, 3), false);
        d[[0, 0, 0]] = true;
        d[[1, 1, 1]] = true;
        assert_eq!(label6(&d).1.len(), 2);
    }

    #[test]
    fn labelling_has_no_component_limit() {
        // 70,000+ isolated voxels (a checkerboard) label fine
        let m = Array3::from_shape_fn((8, 200, 200), |(k, j, i)| (k + j + i) % 2 == 0);
        let (_, sizes) = label6(&m);
        assert_eq!(sizes.len(), 8 * 200 * 200 / 2);
    }

    #[test]
    fn dilate_and_erode_are_inverse_on_a_cube() {
        let m = cube(12, 4, 8);
        let d = dilate6(&m, 1, None);
        assert_eq!(d.iter().filter(|&&v| v).count(), 64 + 6 * 16);
        assert_eq!(erode6(&d, 1), m);
        let e = erode6(&m, 1);
        assert_eq!(e.iter().filter(|&&v| v).count(), 8);
    }

    #[test]
    fn erosion_does_not_eat_from_the_grid_edge() {
        let m = Array3::from_elem((3, 4, 4), true);
        assert!(erode6(&m, 1).iter().all(|&v| v));
    }

    #[test]
    fn holes_are_filled_but_open_bays_are_not() {
        let mut l = Array3::<u8>::zeros((1, 9, 9));
        for j in 1..8 {
            for i in 1..8 {
                l[[0, j, i]] = 1;
            }
        }
        l[[0, 4, 4]] = 0; // hole
        l[[0, 4, 7]] = 0; // bay open to the outside
        l[[0, 4, 6]] = 0;
        l[[0, 2, 2]] = 2; // another label inside: kept
        let mut big = l.clone();
        fill_holes_2d(&mut l, 1, 10);
        assert_eq!(l[[0, 4, 4]], 1);
        assert_eq!(l[[0, 4, 7]], 0);
        assert_eq!(l[[0, 4, 6]], 0);
        assert_eq!(l[[0, 2, 2]], 2);
        // a hole larger than the limit stays open
        big[[0, 4, 5]] = 0;
        big[[0, 4, 6]] = 1;
        big[[0, 4, 7]] = 1;
        fill_holes_2d(&mut big, 1, 1);
        assert_eq!(big[[0, 4, 4]], 0);
        assert_eq!(big[[0, 4, 5]], 0);
    }

    #[test]
    fn growth_splits_a_dumbbell_between_seeds() {
        let allowed = Array3::from_elem((1, 1, 11), true);
        let mut seeds = Array3::<u8>::zeros((1, 1, 11));
        seeds[[0, 0, 0]] = 1;
        seeds[[0, 0, 10]] = 2;
        let g = grow_labels(&seeds, &allowed);
        assert_eq!(g.iter().filter(|&&l| l == 1).count(), 6);
        assert_eq!(g.iter().filter(|&&l| l == 2).count(), 5);
    }

    #[test]
    fn block_means_and_exclusion() {
        let hu = Array3::from_shape_fn((2, 4, 4), |(_, j, _)| if j < 2 { -1000i16 } else { 0 });
        let (c, f) = downsample_mean(hu.view(), None, [1, 2, 2]);
        assert_eq!(c.shape(), &[2, 2, 2]);
        assert_eq!(c[[0, 0, 0]], -1000);
        assert_eq!(c[[0, 1, 1]], 0);
        assert!(!f.iter().any(|&v| v));
        let ex = |_k: usize, j: usize, _i: usize| j == 0;
        let (c, _) = downsample_mean(hu.view(), Some(&ex), [1, 2, 2]);
        assert_eq!(c[[0, 0, 0]], -1000);
        // partial last block
        let (c, _) = downsample_mean(hu.view(), None, [1, 3, 3]);
        assert_eq!(c.shape(), &[2, 2, 2]);
    }

    #[test]
    fn closing_fills_a_notch() {
        let mut m = Array3::from_elem((1, 13, 13), false);
        for j in 3..10 {
            for i in 3..10 {
                m[[0, j, i]] = true;
            }
        }
        m[[0, 3, 6]] = false; // a notch on the edge
        let c = close2d(&m, 2);
        assert!(c[[0, 3, 6]]);
        assert!(!c[[0, 2, 6]] && !c[[0, 1, 6]]);
        assert_eq!(c.iter().filter(|&&v| v).count(), 49);
    }
}
