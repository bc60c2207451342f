//! Geometry of a volume: the index → patient (LPS, millimetres) affine of a stack of parallel slices.
//!
//! Index order everywhere in segnode is `[k, j, i]` = `[slice, row, column]`; the affine maps the
//! continuous index `(i, j, k)` to the patient position `origin + i·dc·Δc + j·dr·Δr + k·n·Δk`, where
//! `dr` is the direction along a row (first ImageOrientationPatient triplet), `dc` the direction down a
//! column (second triplet), `n = dr × dc` the slice normal and `Δk` the signed distance between slices
//! (positive: slices are sorted along `n`).

/// A 3-vector in patient coordinates (LPS, mm).
pub type Vec3 = [f64; 3];

pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// Index → patient affine of a regular stack of slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Patient position of the centre of voxel `[0, 0, 0]` (ImagePositionPatient of the first slice).
    pub origin: Vec3,
    /// Unit direction of increasing column index (along a row): first triplet of IOP.
    pub row_dir: Vec3,
    /// Unit direction of increasing row index (down a column): second triplet of IOP.
    pub col_dir: Vec3,
    /// Unit slice normal `row_dir × col_dir`; slice index increases along it.
    pub normal: Vec3,
    /// Pixel spacing: (between rows, between columns) = (Δr, Δc) as in PixelSpacing.
    pub pixel_spacing: [f64; 2],
    /// Distance between consecutive slice centres along `normal` (> 0).
    pub slice_spacing: f64,
}

impl Geometry {
    /// Patient position (LPS mm) of the continuous index `(k, j, i)`.
    pub fn index_to_patient(&self, k: f64, j: f64, i: f64) -> Vec3 {
        let mut p = self.origin;
        for (a, pa) in p.iter_mut().enumerate() {
            *pa += i * self.pixel_spacing[1] * self.row_dir[a]
                + j * self.pixel_spacing[0] * self.col_dir[a]
                + k * self.slice_spacing * self.normal[a];
        }
        p
    }

    /// Continuous index `(k, j, i)` of a patient position (inverse of [`Self::index_to_patient`]).
    pub fn patient_to_index(&self, p: Vec3) -> [f64; 3] {
        let d = [
            p[0] - self.origin[0],
            p[1] - self.origin[1],
            p[2] - self.origin[2],
        ];
        [
            dot(d, self.normal) / self.slice_spacing,
            dot(d, self.col_dir) / self.pixel_spacing[0],
            dot(d, self.row_dir) / self.pixel_spacing[1],
        ]
    }

    /// The 4×4 affine (row-major) mapping homogeneous `(i, j, k, 1)` to LPS mm.
    pub fn affine(&self) -> [[f64; 4]; 4] {
        let mut m = [[0.0; 4]; 4];
        for a in 0..3 {
            m[a][0] = self.row_dir[a] * self.pixel_spacing[1];
            m[a][1] = self.col_dir[a] * self.pixel_spacing[0];
            m[a][2] = self.normal[a] * self.slice_spacing;
            m[a][3] = self.origin[a];
        }
        m[3][3] = 1.0;
        m
    }

    /// Volume of one voxel in mm³.
    pub fn voxel_volume_mm3(&self) -> f64 {
        self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing
    }

    /// Patient-space direction (LPS) of increasing index along each array axis `[k, j, i]`, scaled by the
    /// spacing: how far one step along that axis moves the patient point.
    pub fn axis_steps(&self) -> [Vec3; 3] {
        let s = |v: Vec3, f: f64| [v[0] * f, v[1] * f, v[2] * f];
        [
            s(self.normal, self.slice_spacing),
            s(self.col_dir, self.pixel_spacing[0]),
            s(self.row_dir, self.pixel_spacing[1]),
        ]
    }

    /// Spacing in mm along each array axis `[k, j, i]`.
    pub fn spacing_kji(&self) -> [f64; 3] {
        [
            self.slice_spacing,
            self.pixel_spacing[0],
            self.pixel_spacing[1],
        ]
    }
}

/// Parse ImageOrientationPatient into two unit direction cosines; `None` when degenerate.
pub fn orientation_from_iop(iop: &[f64]) -> Option<(Vec3, Vec3)> {
    if iop.len() != 6 || iop.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let r = [iop[0], iop[1], iop[2]];
    let c = [iop[3], iop[4], iop[5]];
    let (nr, nc) = (norm(r), norm(c));
    if (nr - 1.0).abs() > 0.01 || (nc - 1.0).abs() > 0.01 || dot(r, c).abs() > 0.01 {
        return None;
    }
    Some((
        [r[0] / nr, r[1] / nr, r[2] / nr],
        [c[0] / nc, c[1] / nc, c[2] / nc],
    ))
}

/// Whether two orientations are the same within `tol` (cosine difference per component).
pub fn same_orientation(a: (Vec3, Vec3), b: (Vec3, Vec3), tol: f64) -> bool {
    (0..3).all(|i| (a.0[i] - b.0[i]).abs() <= tol && (a.1[i] - b.1[i]).abs() <= tol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(iop: [f64; 6]) -> Geometry {
        let (r, c) = orientation_from_iop(&iop).unwrap();
        Geometry {
            origin: [-100.0, -50.0, 20.0],
            row_dir: r,
            col_dir: c,
            normal: cross(r, c),
            pixel_spacing: [0.5, 0.7],
            slice_spacing: 2.5,
        }
    }

    #[test]
    fn index_to_patient_round_trips() {
        for iop in [
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0],
        ] {
            let g = geo(iop);
            let p = g.index_to_patient(3.0, 7.0, 11.0);
            let idx = g.patient_to_index(p);
            assert!(
                (idx[0] - 3.0).abs() < 1e-9
                    && (idx[1] - 7.0).abs() < 1e-9
                    && (idx[2] - 11.0).abs() < 1e-9
            );
        }
    }

    #[test]
    fn flipped_axial_orientation_moves_columns_to_minus_x() {
        let g = geo([-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]);
        let p0 = g.index_to_patient(0.0, 0.0, 0.0);
        let p1 = g.index_to_patient(0.0, 0.0, 1.0);
        assert!((p1[0] - p0[0] + 0.7).abs() < 1e-12);
        // the normal of (-x) × (-y) is +z
        assert_eq!(g.normal, [0.0, 0.0, 1.0]);
        let p2 = g.index_to_patient(1.0, 0.0, 0.0);
        assert!((p2[2] - p0[2] - 2.5).abs() < 1e-12);
        let a = g.affine();
        assert_eq!(a[0][0], -0.7);
        assert_eq!(a[1][1], -0.5);
        assert_eq!(a[2][2], 2.5);
    }

    #[test]
    fn degenerate_orientation_is_rejected() {
        assert!(orientation_from_iop(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).is_none());
        assert!(orientation_from_iop(&[1.0, 0.0, 0.0]).is_none());
        assert!(orientation_from_iop(&[2.0, 0.0, 0.0, 0.0, 1.0, 0.0]).is_none());
    }
}
