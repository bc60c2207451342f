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
/// voxels flagged in `excluded` (out of field); a block is flagged when
/// more than half of its voxels are.
pub fn downsample_mean(
    hu: ArrayView3<i16>,
    excluded: Option<&crate::volume::FieldMask>,
    f: [usize; 3],
) -> (Array3<i16>, Array3<bool>) {
    let s = hu.shape();
    let (nk, nj, ni) = (s[0], s[1], s[2]);
    let cd = [nk.div_ceil(f[0]), nj.div_ceil(f[1]), ni.div_ceil(f[2])];
    let ci: Vec<usize> = (0..ni).map(|i| i / f[2]).collect();
    let hu = hu.as_standard_layout();
    let flat = hu.as_slice().expect("standard layout");
    let plane_len = nj * ni;
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
                let plane = &flat[k * plane_len..(k + 1) * plane_len];
                let words = excluded.map(|e| e.slice_words(k));
                for j in 0..nj {
                    let crow = (j / f[1]) * cd[2];
                    let row = &plane[j * ni..(j + 1) * ni];
                    match words {
                        None => {
                            for (i, &v) in row.iter().enumerate() {
                                let c = crow + ci[i];
                                sum[c] += v as i64;
                                cnt[c] += 1;
                            }
                        }
                        Some(w) => {
                            for (i, &v) in row.iter().enumerate() {
                                let c = crow + ci[i];
                                let p = j * ni + i;
                                if (w[p / 64] >> (p % 64)) & 1 == 1 {
                                    exc[c] += 1;
                                } else {
                                    sum[c] += v as i64;
                                    cnt[c] += 1;
                                }
                            }
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

/// In-plane (per slice) closing with a disc of radius `r` voxels (approximated by alternating 4- and
/// 8-neighbour steps, i.e. an octagon), computed in the bounding box of each slice's mask. The grid edge
/// counts as inside for the erosion, so a mask cut by the field of view is not eaten from the cut.
pub fn close2d(mask: &Array3<bool>, r: usize) -> Array3<bool> {
    let mut out = mask.clone();
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut plane| {
            let (nj, ni) = (plane.shape()[0], plane.shape()[1]);
            let (mut j0, mut j1, mut i0, mut i1) = (usize::MAX, 0, usize::MAX, 0);
            for ((j, i), &v) in plane.indexed_iter() {
                if v {
                    j0 = j0.min(j);
                    j1 = j1.max(j);
                    i0 = i0.min(i);
                    i1 = i1.max(i);
                }
            }
            if j0 == usize::MAX {
                return;
            }
            let (wj0, wi0) = (j0.saturating_sub(r + 1), i0.saturating_sub(r + 1));
            let (wj1, wi1) = ((j1 + r + 1).min(nj - 1), (i1 + r + 1).min(ni - 1));
            let (h, w) = (wj1 - wj0 + 1, wi1 - wi0 + 1);
            let mut cur = vec![false; h * w];
            for j in 0..h {
                for i in 0..w {
                    cur[j * w + i] = plane[[wj0 + j, wi0 + i]];
                }
            }
            for step in 0..r {
                cur = step2d(&cur, h, w, step % 2 == 1, true);
            }
            for step in 0..r {
                cur = step2d(&cur, h, w, step % 2 == 1, false);
            }
            for j in 0..h {
                for i in 0..w {
                    if cur[j * w + i] {
                        plane[[wj0 + j, wi0 + i]] = true;
                    }
                }
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
    let s = labels.shape();
    let (nj, ni) = (s[1], s[2]);
    let flat = labels.as_slice_mut().expect("standard layout");
    flat.par_chunks_mut(nj * ni).for_each(|plane| {
        let (mut j0, mut j1, mut i0, mut i1) = (usize::MAX, 0, usize::MAX, 0);
        for j in 0..nj {
            let row = &plane[j * ni..(j + 1) * ni];
            if let Some(a) = row.iter().position(|&l| l == value) {
                let b = row.iter().rposition(|&l| l == value).unwrap_or(a);
                j0 = j0.min(j);
                j1 = j1.max(j);
                i0 = i0.min(a);
                i1 = i1.max(b);
            }
        }
        if j0 == usize::MAX {
            return;
        }
        // the box grown by one pixel (clamped): its border pixels that are not the label are "outside"
        let (bj0, bi0) = (j0.saturating_sub(1), i0.saturating_sub(1));
        let (bj1, bi1) = ((j1 + 1).min(nj - 1), (i1 + 1).min(ni - 1));
        let (bh, bw) = (bj1 - bj0 + 1, bi1 - bi0 + 1);
        // 0 = unvisited background, 1 = label, 2 = visited
        let mut st = vec![0u8; bh * bw];
        for j in 0..bh {
            let src = &plane[(bj0 + j) * ni + bi0..(bj0 + j) * ni + bi0 + bw];
            for (d, &l) in st[j * bw..(j + 1) * bw].iter_mut().zip(src) {
                *d = (l == value) as u8;
            }
        }
        let mut stack = Vec::new();
        let flood =
            |st: &mut Vec<u8>, stack: &mut Vec<usize>, start: usize, out: &mut Vec<usize>| {
                st[start] = 2;
                stack.push(start);
                while let Some(p) = stack.pop() {
                    out.push(p);
                    let (j, i) = (p / bw, p % bw);
                    if i > 0 && st[p - 1] == 0 {
                        st[p - 1] = 2;
                        stack.push(p - 1);
                    }
                    if i + 1 < bw && st[p + 1] == 0 {
                        st[p + 1] = 2;
                        stack.push(p + 1);
                    }
                    if j > 0 && st[p - bw] == 0 {
                        st[p - bw] = 2;
                        stack.push(p - bw);
                    }
                    if j + 1 < bh && st[p + bw] == 0 {
                        st[p + bw] = 2;
                        stack.push(p + bw);
                    }
                }
            };
        let mut region = Vec::new();
        // outside: everything reachable from the box border
        for j in 0..bh {
            for i in 0..bw {
                let p = j * bw + i;
                if (j == 0 || i == 0 || j == bh - 1 || i == bw - 1) && st[p] == 0 {
                    flood(&mut st, &mut stack, p, &mut region);
                }
            }
        }
        region.clear();
        // holes
        for start in 0..bh * bw {
            if st[start] != 0 {
                continue;
            }
            region.clear();
            flood(&mut st, &mut stack, start, &mut region);
            if region.len() <= max_area {
                for &p in &region {
                    let v = &mut plane[(bj0 + p / bw) * ni + bi0 + p % bw];
                    if *v == 0 {
                        *v = value;
                    }
                }
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
        // row 0 excluded
        let mut ex = crate::volume::FieldMask::new([2, 4, 4]);
        for k in 0..2 {
            for i in 0..4 {
                ex.set(k, 0, i);
            }
        }
        let (c, f2) = downsample_mean(hu.view(), Some(&ex), [1, 2, 2]);
        assert!(!f2.iter().any(|&v| v)); // 2 of 4 excluded is not a majority
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
