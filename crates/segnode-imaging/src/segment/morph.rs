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
pub fn neighbours6(idx: usize, d: [usize; 3], f: impl FnMut(usize)) {
    let plane = d[1] * d[2];
    let r = idx % plane;
    neighbours6_at(idx, [idx / plane, r / d[2], r % d[2]], d, f);
}

/// The 4 in-plane neighbours of pixel `p` of a `nj × ni` plane (`None` past an edge): left, right, up,
/// down.
#[inline]
pub fn neighbours4(p: usize, [nj, ni]: [usize; 2]) -> [Option<usize>; 4] {
    let (j, i) = (p / ni, p % ni);
    [
        (i > 0).then(|| p - 1),
        (i + 1 < ni).then(|| p + 1),
        (j > 0).then(|| p - ni),
        (j + 1 < nj).then(|| p + ni),
    ]
}

/// [`neighbours6`] of a voxel whose `[k, j, i]` the caller already knows (no division per voxel).
#[inline]
pub fn neighbours6_at(idx: usize, [k, j, i]: [usize; 3], d: [usize; 3], mut f: impl FnMut(usize)) {
    let (nk, nj, ni) = (d[0], d[1], d[2]);
    let plane = nj * ni;
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
            if excluded.is_none() {
                // no exclusion: the rows of a block row added up first (vectorised), then split by block
                let mut acc = vec![0i32; ni];
                for cj in 0..cd[1] {
                    acc.fill(0);
                    let mut rows = 0;
                    for k in ck * f[0]..((ck + 1) * f[0]).min(nk) {
                        for j in cj * f[1]..((cj + 1) * f[1]).min(nj) {
                            let row = &flat[k * plane_len + j * ni..k * plane_len + (j + 1) * ni];
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a += v as i32;
                            }
                            rows += 1;
                        }
                    }
                    for (cq, blk) in acc.chunks(f[2]).enumerate() {
                        let c = cj * cd[2] + cq;
                        sum[c] = blk.iter().map(|&v| v as i64).sum::<i64>();
                        cnt[c] = (blk.len() * rows) as u32;
                    }
                }
            }
            // with exclusion: voxel by voxel
            for k in ck * f[0]..((ck + 1) * f[0]).min(nk) {
                let Some(w) = excluded.map(|e| e.slice_words(k)) else {
                    break;
                };
                let plane = &flat[k * plane_len..(k + 1) * plane_len];
                for j in 0..nj {
                    let crow = (j / f[1]) * cd[2];
                    let row = &plane[j * ni..(j + 1) * ni];
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

/// 6-connected components of `mask`: labels (0 = background, 1.. = component, numbered in scan order)
/// and the size of each component (`sizes[l - 1]`). Runs along rows are joined with a union-find to the
/// overlapping runs of the row above and of the same row in the slice before; no component-count limit.
pub fn label6(mask: &Array3<bool>) -> (Array3<u32>, Vec<usize>) {
    let d = dims(mask);
    let (nk, nj, ni) = (d[0], d[1], d[2]);
    let m = mask.as_slice().expect("standard layout");
    // runs per row: (start, end exclusive); row_start[r] = index of the first run of row r
    let nrows = nk * nj;
    let mut runs: Vec<(u32, u32)> = Vec::new();
    let mut row_start = Vec::with_capacity(nrows + 1);
    for r in 0..nrows {
        row_start.push(runs.len());
        let row = &m[r * ni..(r + 1) * ni];
        let mut i = 0;
        while i < ni {
            if row[i] {
                let a = i;
                while i < ni && row[i] {
                    i += 1;
                }
                runs.push((a as u32, i as u32));
            } else {
                i += 1;
            }
        }
    }
    row_start.push(runs.len());
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let p = parent[x as usize];
            parent[x as usize] = parent[p as usize];
            x = p;
        }
        x
    }
    let union_rows = |parent: &mut Vec<u32>, a: usize, b: usize| {
        // join overlapping runs of rows a and b (both sorted by start)
        let (mut x, xe) = (row_start[a], row_start[a + 1]);
        let (mut y, ye) = (row_start[b], row_start[b + 1]);
        while x < xe && y < ye {
            let (ra, rb) = (runs[x], runs[y]);
            if ra.0 < rb.1 && rb.0 < ra.1 {
                let (fa, fb) = (find(parent, x as u32), find(parent, y as u32));
                if fa != fb {
                    let (lo, hi) = if fa < fb { (fa, fb) } else { (fb, fa) };
                    parent[hi as usize] = lo;
                }
            }
            if ra.1 < rb.1 {
                x += 1;
            } else {
                y += 1;
            }
        }
    };
    for k in 0..nk {
        for j in 0..nj {
            let r = k * nj + j;
            if row_start[r] == row_start[r + 1] {
                continue;
            }
            if j > 0 {
                union_rows(&mut parent, r, r - 1);
            }
            if k > 0 {
                union_rows(&mut parent, r, r - nj);
            }
        }
    }
    // compact labels in scan order and sizes
    let mut id_of_root = vec![0u32; runs.len()];
    let mut sizes: Vec<usize> = Vec::new();
    let mut run_label = vec![0u32; runs.len()];
    for x in 0..runs.len() {
        let root = find(&mut parent, x as u32) as usize;
        if id_of_root[root] == 0 {
            sizes.push(0);
            id_of_root[root] = sizes.len() as u32;
        }
        let id = id_of_root[root];
        run_label[x] = id;
        sizes[id as usize - 1] += (runs[x].1 - runs[x].0) as usize;
    }
    let mut lab = vec![0u32; m.len()];
    lab.par_chunks_mut(ni).enumerate().for_each(|(r, row)| {
        for x in row_start[r]..row_start[r + 1] {
            let (a, b) = runs[x];
            row[a as usize..b as usize].fill(run_label[x]);
        }
    });
    (Array3::from_shape_vec(d, lab).expect("shape"), sizes)
}

/// A `[lo, hi)` box grown by `m` voxels on every side, within a grid of shape `d`.
pub fn pad_box(b: [[usize; 2]; 3], m: usize, d: [usize; 3]) -> [[usize; 2]; 3] {
    [0, 1, 2].map(|a| [b[a][0].saturating_sub(m), (b[a][1] + m).min(d[a])])
}

/// Bounding box `[lo, hi)` per axis of the voxels (flat `[k, j, i]` index in a grid of shape `d`) where
/// `hit` holds (`None`: nowhere); slices in parallel.
pub fn bbox_where(d: [usize; 3], hit: impl Fn(usize) -> bool + Sync) -> Option<[[usize; 2]; 3]> {
    let [_, nj, ni] = d;
    (0..d[0])
        .into_par_iter()
        .filter_map(|k| {
            let mut b: Option<[[usize; 2]; 3]> = None;
            for j in 0..nj {
                let row = (k * nj + j) * ni;
                let Some(a) = (0..ni).find(|&i| hit(row + i)) else {
                    continue;
                };
                let e = (0..ni).rev().find(|&i| hit(row + i)).unwrap_or(a) + 1;
                let x = b.get_or_insert([[k, k + 1], [j, j + 1], [a, e]]);
                x[1][1] = j + 1;
                x[2] = [x[2][0].min(a), x[2][1].max(e)];
            }
            b
        })
        .reduce_with(|a, b| [0, 1, 2].map(|x| [a[x][0].min(b[x][0]), a[x][1].max(b[x][1])]))
}

/// One 6-neighbourhood step over the box `bx` of `src` into `dst` (voxels outside the box are left as
/// they are): dilation (`dilate`, never into `block`) or erosion (through in-grid neighbours only).
fn step6(
    src: &[bool],
    dst: &mut [bool],
    d: [usize; 3],
    bx: [[usize; 2]; 3],
    dilate: bool,
    block: Option<&[bool]>,
) {
    let [nk, nj, ni] = d;
    let plane = nj * ni;
    dst.par_chunks_mut(plane)
        .enumerate()
        .filter(|(k, _)| (bx[0][0]..bx[0][1]).contains(k))
        .for_each(|(k, dp)| {
            for j in bx[1][0]..bx[1][1] {
                for i in bx[2][0]..bx[2][1] {
                    let p = (k * nj + j) * ni + i;
                    let v = src[p];
                    let out = if dilate {
                        v || (!block.is_some_and(|b| b[p])
                            && ((i > 0 && src[p - 1])
                                || (i + 1 < ni && src[p + 1])
                                || (j > 0 && src[p - ni])
                                || (j + 1 < nj && src[p + ni])
                                || (k > 0 && src[p - plane])
                                || (k + 1 < nk && src[p + plane])))
                    } else {
                        v && (i == 0 || src[p - 1])
                            && (i + 1 == ni || src[p + 1])
                            && (j == 0 || src[p - ni])
                            && (j + 1 == nj || src[p + ni])
                            && (k == 0 || src[p - plane])
                            && (k + 1 == nk || src[p + plane])
                    };
                    dp[j * ni + i] = out;
                }
            }
        });
}

/// `r` 6-neighbourhood steps (dilation or erosion), each over the bounding box of the mask (grown by one
/// voxel for a dilation): nothing outside it can change.
fn repeat6(
    mask: &Array3<bool>,
    r: usize,
    dilate: bool,
    block: Option<&Array3<bool>>,
) -> Array3<bool> {
    let d = dims(mask);
    let mut cur: Vec<bool> = mask.iter().copied().collect();
    let Some(mut bx) = bbox_where(d, |q| cur[q]) else {
        return mask.clone();
    };
    let blk = block.map(|b| b.as_slice().expect("standard layout"));
    let mut next = cur.clone();
    for _ in 0..r {
        if dilate {
            bx = pad_box(bx, 1, d);
        }
        // `next` equals `cur` outside the box: neither changed there in earlier steps
        step6(&cur, &mut next, d, bx, dilate, blk);
        std::mem::swap(&mut cur, &mut next);
    }
    Array3::from_shape_vec(d, cur).expect("shape")
}

/// One step of 6-neighbourhood dilation, repeated `r` times; voxels where `block` is true are never added.
pub fn dilate6(mask: &Array3<bool>, r: usize, block: Option<&Array3<bool>>) -> Array3<bool> {
    repeat6(mask, r, true, block)
}

/// 6-neighbourhood erosion repeated `r` times (voxels on the grid edge erode only through in-grid
/// neighbours, so masks cut by the field of view are not eaten from the edge).
pub fn erode6(mask: &Array3<bool>, r: usize) -> Array3<bool> {
    repeat6(mask, r, false, None)
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
    // outside the grid: neutral
    let edge = |j: usize, i: usize| -> bool {
        let p = j * ni + i;
        let mut acc = src[p];
        let mut visit = |dj: isize, di: isize| {
            let (jj, ii) = (j as isize + dj, i as isize + di);
            if jj < 0 || ii < 0 || jj >= nj as isize || ii >= ni as isize {
                return;
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
        acc
    };
    for j in 0..nj {
        if j == 0 || j + 1 == nj || ni < 3 {
            for i in 0..ni {
                out[j * ni + i] = edge(j, i);
            }
            continue;
        }
        out[j * ni] = edge(j, 0);
        out[j * ni + ni - 1] = edge(j, ni - 1);
        // interior: all 8 neighbours exist
        let (up, row, down) = (
            &src[(j - 1) * ni..j * ni],
            &src[j * ni..(j + 1) * ni],
            &src[(j + 1) * ni..(j + 2) * ni],
        );
        let o = &mut out[j * ni..(j + 1) * ni];
        for i in 1..ni - 1 {
            let cross = [row[i], up[i], down[i], row[i - 1], row[i + 1]];
            let diag = [up[i - 1], up[i + 1], down[i - 1], down[i + 1]];
            o[i] = if dilate {
                cross.iter().any(|&v| v) || (diagonal && diag.iter().any(|&v| v))
            } else {
                cross.iter().all(|&v| v) && (!diagonal || diag.iter().all(|&v| v))
            };
        }
    }
    out
}

/// Fill, slice by slice, the holes of the labels in `codes`: background regions that do not reach the
/// edge of the labels' bounding box (+1 margin), hold at most `max_area` pixels and border on one label
/// only (a region enclosed by two lungs together, like the mediastinum between them, is not a hole of
/// either). Only pixels that are 0 are written. The size limit keeps vessels and nodules but not, e.g.,
/// the diaphragm dome that a ring of lung base encloses in an axial slice.
pub fn fill_holes_2d(labels: &mut Array3<u8>, codes: &[u8], max_area: usize) {
    let s = labels.shape();
    let (nj, ni) = (s[1], s[2]);
    let flat = labels.as_slice_mut().expect("standard layout");
    let is_code = |l: u8| l != 0 && codes.contains(&l);
    flat.par_chunks_mut(nj * ni).for_each(|plane| {
        let (mut j0, mut j1, mut i0, mut i1) = (usize::MAX, 0, usize::MAX, 0);
        for j in 0..nj {
            let row = &plane[j * ni..(j + 1) * ni];
            if let Some(a) = row.iter().position(|&l| is_code(l)) {
                let b = row.iter().rposition(|&l| is_code(l)).unwrap_or(a);
                j0 = j0.min(j);
                j1 = j1.max(j);
                i0 = i0.min(a);
                i1 = i1.max(b);
            }
        }
        if j0 == usize::MAX {
            return;
        }
        let (bj0, bi0) = (j0.saturating_sub(1), i0.saturating_sub(1));
        let (bj1, bi1) = ((j1 + 1).min(nj - 1), (i1 + 1).min(ni - 1));
        let (bh, bw) = (bj1 - bj0 + 1, bi1 - bi0 + 1);
        // st: 0 = unvisited background, 1 = label, 2 = visited
        let mut st = vec![0u8; bh * bw];
        for j in 0..bh {
            let src = &plane[(bj0 + j) * ni + bi0..(bj0 + j) * ni + bi0 + bw];
            for (d, &l) in st[j * bw..(j + 1) * bw].iter_mut().zip(src) {
                *d = is_code(l) as u8;
            }
        }
        let mut stack = Vec::new();
        let mut region = Vec::new();
        // flood a background region; returns the label codes it borders (bit per code index)
        let flood = |st: &mut Vec<u8>,
                     stack: &mut Vec<usize>,
                     start: usize,
                     out: &mut Vec<usize>,
                     plane: &[u8]| {
            let mut border: u32 = 0;
            st[start] = 2;
            stack.push(start);
            while let Some(p) = stack.pop() {
                out.push(p);
                let (j, i) = (p / bw, p % bw);
                let mut visit = |q: usize| match st[q] {
                    0 => {
                        st[q] = 2;
                        stack.push(q);
                    }
                    1 => {
                        let l = plane[(bj0 + q / bw) * ni + bi0 + q % bw];
                        if let Some(c) = codes.iter().position(|&c| c == l) {
                            border |= 1 << c;
                        }
                    }
                    _ => {}
                };
                if i > 0 {
                    visit(p - 1);
                }
                if i + 1 < bw {
                    visit(p + 1);
                }
                if j > 0 {
                    visit(p - bw);
                }
                if j + 1 < bh {
                    visit(p + bw);
                }
            }
            border
        };
        // outside: everything reachable from the box border
        for j in 0..bh {
            for i in 0..bw {
                let p = j * bw + i;
                if (j == 0 || i == 0 || j == bh - 1 || i == bw - 1) && st[p] == 0 {
                    flood(&mut st, &mut stack, p, &mut region, plane);
                }
            }
        }
        let mut fills: Vec<(usize, u8)> = Vec::new();
        for start in 0..bh * bw {
            if st[start] != 0 {
                continue;
            }
            region.clear();
            let border = flood(&mut st, &mut stack, start, &mut region, plane);
            if region.len() <= max_area && border.count_ones() == 1 {
                let code = codes[border.trailing_zeros() as usize];
                fills.extend(region.iter().map(|&p| (p, code)));
            }
        }
        for (p, code) in fills {
            let v = &mut plane[(bj0 + p / bw) * ni + bi0 + p % bw];
            if *v == 0 {
                *v = code;
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
    fn run_labelling_matches_a_flood_fill_reference() {
        let mut x: u64 = 12345;
        let m = Array3::from_shape_fn((7, 23, 31), |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 100 < 55
        });
        let (lab, sizes) = label6(&m);
        // reference: flood fill from each voxel, compare partitions
        let d = dims(&m);
        let ms = m.as_slice().unwrap();
        let ls = lab.as_slice().unwrap();
        let mut seen = vec![false; ms.len()];
        let mut count = 0;
        for s0 in 0..ms.len() {
            if !ms[s0] || seen[s0] {
                continue;
            }
            count += 1;
            let mut st = vec![s0];
            seen[s0] = true;
            let mut n = 0;
            while let Some(p) = st.pop() {
                n += 1;
                assert_eq!(ls[p], ls[s0]);
                neighbours6(p, d, |q| {
                    if ms[q] && !seen[q] {
                        seen[q] = true;
                        st.push(q);
                    }
                });
            }
            assert_eq!(sizes[ls[s0] as usize - 1], n);
        }
        assert_eq!(count, sizes.len());
        assert!(ls.iter().zip(ms).all(|(&l, &v)| (l > 0) == v));
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
    fn boxed_dilation_and_erosion_match_the_definition() {
        let mut x: u64 = 3;
        let mut rnd = |pct: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 100 < pct
        };
        let d = [5usize, 9, 13];
        let mut m = Array3::from_elem(d, false);
        // a sparse mask away from the edges, and a blocked region
        for k in 1..4 {
            for j in 2..7 {
                for i in 3..9 {
                    m[[k, j, i]] = rnd(40);
                }
            }
        }
        let block = Array3::from_shape_fn(d, |_| rnd(20));
        let dd = dims(&m);
        let reference = |src: &Array3<bool>, dilate: bool, blk: Option<&Array3<bool>>| {
            let s = src.as_slice().unwrap();
            let v: Vec<bool> = (0..s.len())
                .map(|p| {
                    if dilate {
                        if s[p] {
                            return true;
                        }
                        if blk.is_some_and(|b| b.as_slice().unwrap()[p]) {
                            return false;
                        }
                        let mut any = false;
                        neighbours6(p, dd, |q| any |= s[q]);
                        any
                    } else {
                        let mut all = s[p];
                        neighbours6(p, dd, |q| all &= s[q]);
                        all
                    }
                })
                .collect();
            Array3::from_shape_vec(dd, v).unwrap()
        };
        for r in 1..4 {
            let (mut a, mut b, mut e) = (m.clone(), m.clone(), m.clone());
            for _ in 0..r {
                a = reference(&a, true, None);
                b = reference(&b, true, Some(&block));
                e = reference(&e, false, None);
            }
            assert_eq!(dilate6(&m, r, None), a, "r {r}");
            assert_eq!(dilate6(&m, r, Some(&block)), b, "r {r} blocked");
            assert_eq!(erode6(&m, r), e, "r {r} erosion");
        }
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
        fill_holes_2d(&mut l, &[1], 10);
        assert_eq!(l[[0, 4, 4]], 1);
        assert_eq!(l[[0, 4, 7]], 0);
        assert_eq!(l[[0, 4, 6]], 0);
        assert_eq!(l[[0, 2, 2]], 2);
        // a hole larger than the limit stays open
        big[[0, 4, 5]] = 0;
        big[[0, 4, 6]] = 1;
        big[[0, 4, 7]] = 1;
        fill_holes_2d(&mut big, &[1], 1);
        assert_eq!(big[[0, 4, 4]], 0);
        assert_eq!(big[[0, 4, 5]], 0);
    }

    #[test]
    fn a_region_enclosed_by_two_labels_is_not_a_hole() {
        // two C shapes facing each other enclose a gap between them: not a hole of either
        let mut l = Array3::<u8>::zeros((1, 7, 9));
        for j in 1..6 {
            l[[0, j, 1]] = 1;
            l[[0, j, 7]] = 2;
        }
        for i in 1..4 {
            l[[0, 1, i]] = 1;
            l[[0, 5, i]] = 1;
        }
        for i in 4..8 {
            l[[0, 1, i]] = 2;
            l[[0, 5, i]] = 2;
        }
        let before = l.clone();
        fill_holes_2d(&mut l, &[1, 2], 100);
        assert_eq!(l, before);
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
