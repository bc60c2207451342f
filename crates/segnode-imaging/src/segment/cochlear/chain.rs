//! Chains: metal blobs linked by proximity (the contacts of one array bloom into separate blobs or merge,
//! depending on pitch and voxel size), ordered along the array by geodesic arc length.
//!
//! Within a blob, voxels are joined to their 26-neighbours; between blobs, the closest voxel pairs of a
//! minimum spanning tree of the blobs bridge the gaps. A double Dijkstra sweep finds one end of the chain
//! and gives every voxel its arc coordinate `s` (mm) from that end.

use super::blobs::{dist, for_each_neighbour, union_groups, Blob};
use crate::volume::geometry::Vec3;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Blobs of one chain with arc coordinates.
#[derive(Debug, Clone)]
pub struct Chain {
    pub blobs: Vec<Blob>,
    /// Arc coordinate (mm) of every voxel, per blob, same order as `Blob::voxels`.
    pub s: Vec<Vec<f64>>,
    /// Arc length from end to end (mm).
    pub length_mm: f64,
    pub volume_mm3: f64,
}

/// Group blobs whose closest voxels are within `link_mm` into chains.
pub fn link(blobs: Vec<Blob>, link_mm: f64) -> Vec<Vec<Blob>> {
    let n = blobs.len();
    let boxes: Vec<(Vec3, Vec3)> = blobs.iter().map(bbox).collect();
    let mut pairs = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if box_gap(&boxes[a], &boxes[b]) <= link_mm
                && min_gap(&blobs[a], &blobs[b]).0 <= link_mm
            {
                pairs.push((a, b));
            }
        }
    }
    let roots = union_groups(n, pairs);
    let mut groups: std::collections::BTreeMap<usize, Vec<Blob>> = Default::default();
    for (b, r) in blobs.into_iter().zip(roots) {
        groups.entry(r).or_default().push(b);
    }
    groups.into_values().collect()
}

fn bbox(b: &Blob) -> (Vec3, Vec3) {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in &b.points {
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    (lo, hi)
}

fn box_gap(a: &(Vec3, Vec3), b: &(Vec3, Vec3)) -> f64 {
    let mut d2 = 0.0;
    for x in 0..3 {
        let g = (a.0[x] - b.1[x]).max(b.0[x] - a.1[x]).max(0.0);
        d2 += g * g;
    }
    d2.sqrt()
}

/// Closest voxel pair of two blobs: (distance, index in a, index in b).
fn min_gap(a: &Blob, b: &Blob) -> (f64, usize, usize) {
    let mut best = (f64::INFINITY, 0, 0);
    for (i, p) in a.points.iter().enumerate() {
        for (j, q) in b.points.iter().enumerate() {
            let d = dist(*p, *q);
            if d < best.0 {
                best = (d, i, j);
            }
        }
    }
    best
}

#[derive(PartialEq)]
struct Item(f64, usize);
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.partial_cmp(&self.0).unwrap_or(Ordering::Equal)
    }
}

/// Order a group of blobs along its arc: build the voxel graph and sweep twice.
pub fn order(blobs: Vec<Blob>, shape: [usize; 3]) -> Chain {
    // flatten: node = (blob, voxel)
    let mut offset = Vec::with_capacity(blobs.len());
    let mut total = 0;
    for b in &blobs {
        offset.push(total);
        total += b.voxels.len();
    }
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); total];
    for (bi, b) in blobs.iter().enumerate() {
        for (vi, &idx) in b.voxels.iter().enumerate() {
            let a = offset[bi] + vi;
            for_each_neighbour(idx, shape, &b.voxels, |pos, _| {
                let n = offset[bi] + pos;
                adj[a].push((n, dist(b.points[vi], b.points[pos])));
            });
        }
    }
    // minimum spanning tree of the blobs by gap, bridged at the closest voxels
    let nb = blobs.len();
    let mut edges = Vec::new();
    for a in 0..nb {
        for c in a + 1..nb {
            let (d, i, j) = min_gap(&blobs[a], &blobs[c]);
            edges.push((d, a, c, i, j));
        }
    }
    edges.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(Ordering::Equal));
    let mut comp: Vec<usize> = (0..nb).collect();
    for (d, a, c, i, j) in edges {
        let (ra, rc) = (comp[a], comp[c]);
        if ra == rc {
            continue;
        }
        for x in comp.iter_mut() {
            if *x == rc {
                *x = ra;
            }
        }
        let (na, nc) = (offset[a] + i, offset[c] + j);
        adj[na].push((nc, d));
        adj[nc].push((na, d));
    }
    let sweep = |start: usize| -> Vec<f64> {
        let mut d = vec![f64::INFINITY; total];
        let mut heap = BinaryHeap::new();
        d[start] = 0.0;
        heap.push(Item(0.0, start));
        while let Some(Item(du, u)) = heap.pop() {
            if du > d[u] {
                continue;
            }
            for &(v, w) in &adj[u] {
                if du + w < d[v] {
                    d[v] = du + w;
                    heap.push(Item(d[v], v));
                }
            }
        }
        d
    };
    let far = |d: &[f64]| {
        d.iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(Ordering::Equal))
            .map(|(n, _)| n)
            .unwrap_or(0)
    };
    let (s, length_mm) = if total == 0 {
        (Vec::new(), 0.0)
    } else {
        let d0 = sweep(0);
        let e1 = far(&d0);
        let d1 = sweep(e1);
        let e2 = far(&d1);
        let l = d1[e2];
        (d1, l)
    };
    let volume_mm3 = blobs.iter().map(|b| b.volume_mm3).sum();
    let s = blobs
        .iter()
        .enumerate()
        .map(|(bi, b)| (0..b.voxels.len()).map(|vi| s[offset[bi] + vi]).collect())
        .collect();
    let mut ch = Chain {
        blobs,
        s,
        length_mm,
        volume_mm3,
    };
    sort_blobs(&mut ch);
    ch
}

/// Sort blobs (with their arc coordinates) by mean arc coordinate.
fn sort_blobs(ch: &mut Chain) {
    let mut idx: Vec<usize> = (0..ch.blobs.len()).collect();
    let mean_s = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    idx.sort_by(|&a, &b| {
        mean_s(&ch.s[a])
            .partial_cmp(&mean_s(&ch.s[b]))
            .unwrap_or(Ordering::Equal)
    });
    ch.blobs = idx.iter().map(|&i| ch.blobs[i].clone()).collect();
    ch.s = idx.iter().map(|&i| ch.s[i].clone()).collect();
}

impl Chain {
    /// Arc extent of blob `b` (mm), plus one voxel.
    pub fn extent(&self, b: usize, voxel_mm: f64) -> f64 {
        let (lo, hi) = self.s[b]
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        hi - lo + voxel_mm
    }

    /// The thickest blob, as the equivalent diameter over its own arc extent (mm).
    pub fn max_blob_thickness_mm(&self, voxel_mm: f64) -> f64 {
        (0..self.blobs.len())
            .map(|b| {
                let e = self.extent(b, voxel_mm);
                (4.0 * self.blobs[b].volume_mm3 / (std::f64::consts::PI * e)).sqrt()
            })
            .fold(0.0, f64::max)
    }
}
