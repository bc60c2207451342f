//! Metal candidates as a sparse voxel list and their 26-connected components ("blobs").
//!
//! Metal is a tiny share of a CBCT volume (thousands of voxels in tens of millions), so everything after
//! the threshold pass works on sorted linear indices instead of full-size masks.

use crate::volume::geometry::Vec3;
use crate::volume::Volume;
use ndarray::Axis;
use rayon::prelude::*;

/// One connected component of metal candidates.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Sorted linear indices `k·rows·cols + j·cols + i`.
    pub voxels: Vec<usize>,
    /// Patient positions (LPS mm) of the voxels, same order.
    pub points: Vec<Vec3>,
    pub volume_mm3: f64,
}

/// Linear indices of the voxels at or above `threshold`, sorted; `None` when there are more than `cap`.
pub fn candidates(volume: &Volume, threshold: i16, cap: usize) -> Option<Vec<usize>> {
    let [_, rows, cols] = volume.shape();
    let plane = rows * cols;
    let per: Vec<Vec<usize>> = volume
        .hu
        .axis_iter(Axis(0))
        .into_par_iter()
        .enumerate()
        .map(|(k, p)| {
            p.iter()
                .enumerate()
                .filter(|(_, &v)| v >= threshold)
                .map(|(n, _)| k * plane + n)
                .collect()
        })
        .collect();
    let total: usize = per.iter().map(Vec::len).sum();
    if total > cap {
        return None;
    }
    Some(per.into_iter().flatten().collect())
}

/// `[k, j, i]` of a linear index.
pub fn kji(idx: usize, shape: [usize; 3]) -> [usize; 3] {
    let plane = shape[1] * shape[2];
    [idx / plane, (idx % plane) / shape[2], idx % shape[2]]
}

/// Calls `f(position in sorted, neighbour index)` for each 26-neighbour of `idx` present in `sorted`.
pub fn for_each_neighbour(
    idx: usize,
    shape: [usize; 3],
    sorted: &[usize],
    mut f: impl FnMut(usize, usize),
) {
    let [k, j, i] = kji(idx, shape);
    for dk in -1i64..=1 {
        for dj in -1i64..=1 {
            for di in -1i64..=1 {
                if dk == 0 && dj == 0 && di == 0 {
                    continue;
                }
                let (nk, nj, ni) = (k as i64 + dk, j as i64 + dj, i as i64 + di);
                if nk < 0
                    || nj < 0
                    || ni < 0
                    || nk >= shape[0] as i64
                    || nj >= shape[1] as i64
                    || ni >= shape[2] as i64
                {
                    continue;
                }
                let n = (nk as usize * shape[1] + nj as usize) * shape[2] + ni as usize;
                if let Ok(pos) = sorted.binary_search(&n) {
                    f(pos, n);
                }
            }
        }
    }
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Union-find over a set; returns the group id (root) of every element.
pub fn union_groups(n: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..n).collect();
    for (a, b) in pairs {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    (0..n).map(|x| find(&mut parent, x)).collect()
}

/// 26-connected components of the sorted candidate list.
pub fn blobs(volume: &Volume, sorted: &[usize]) -> Vec<Blob> {
    let shape = volume.shape();
    let mut pairs = Vec::new();
    for (a, &idx) in sorted.iter().enumerate() {
        for_each_neighbour(idx, shape, sorted, |b, _| {
            if b > a {
                pairs.push((a, b));
            }
        });
    }
    let roots = union_groups(sorted.len(), pairs);
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (pos, r) in roots.iter().enumerate() {
        groups.entry(*r).or_default().push(sorted[pos]);
    }
    let g = &volume.geometry;
    let vv = g.voxel_volume_mm3();
    groups
        .into_values()
        .map(|voxels| {
            let points: Vec<Vec3> = voxels
                .iter()
                .map(|&v| {
                    let [k, j, i] = kji(v, shape);
                    g.index_to_patient(k as f64, j as f64, i as f64)
                })
                .collect();
            Blob {
                volume_mm3: vv * voxels.len() as f64,
                voxels,
                points,
            }
        })
        .collect()
}

pub fn mean(points: &[Vec3]) -> Vec3 {
    let n = points.len().max(1) as f64;
    let mut c = [0.0; 3];
    for p in points {
        for a in 0..3 {
            c[a] += p[a] / n;
        }
    }
    c
}

pub fn dist(a: Vec3, b: Vec3) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}
