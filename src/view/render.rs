//! One plane of a volume as a PNG: HU through a window preset to grey, the chosen segments drawn as
//! coloured outlines. Planes are those of the volume grid: `axial` is the acquired slice plane (index k),
//! `coronal` a row plane (j), `sagittal` a column plane (i); the two reformatted planes are stretched to
//! their physical aspect ratio and shown with the last slice on top (superior up for an axial stack).

use ndarray::{Array3, ArrayView2};
use segnode_imaging::volume::Volume;

/// Bad request parameters, named for the API's answer.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("plane must be axial, coronal or sagittal, not `{0}`")]
    Plane(String),
    #[error("window must be lung, mediastinum, bone or brain, not `{0}`")]
    Window(String),
    #[error("index {index} is outside 0…{last} for the {plane} plane")]
    Index {
        index: usize,
        last: usize,
        plane: &'static str,
    },
    #[error("PNG encoding: {0}")]
    Png(String),
}

/// A plane of the volume grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    pub fn parse(s: &str) -> Result<Plane, RenderError> {
        match s {
            "axial" => Ok(Plane::Axial),
            "coronal" => Ok(Plane::Coronal),
            "sagittal" => Ok(Plane::Sagittal),
            other => Err(RenderError::Plane(other.chars().take(32).collect())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Plane::Axial => "axial",
            Plane::Coronal => "coronal",
            Plane::Sagittal => "sagittal",
        }
    }

    /// How many images this plane has in a volume of `shape` (`[k, j, i]`).
    pub fn count(self, shape: [usize; 3]) -> usize {
        match self {
            Plane::Axial => shape[0],
            Plane::Coronal => shape[1],
            Plane::Sagittal => shape[2],
        }
    }
}

/// A grey-level window: (centre, width) in HU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f32,
    pub width: f32,
}

/// The window presets by name.
pub const WINDOWS: [(&str, Window); 4] = [
    (
        "lung",
        Window {
            center: -600.0,
            width: 1500.0,
        },
    ),
    (
        "mediastinum",
        Window {
            center: 50.0,
            width: 350.0,
        },
    ),
    (
        "bone",
        Window {
            center: 400.0,
            width: 1800.0,
        },
    ),
    (
        "brain",
        Window {
            center: 40.0,
            width: 80.0,
        },
    ),
];

impl Window {
    pub fn parse(s: &str) -> Result<Window, RenderError> {
        WINDOWS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, w)| *w)
            .ok_or_else(|| RenderError::Window(s.chars().take(32).collect()))
    }
}

/// Outline colour of segment `n` (a fixed palette, repeated).
pub fn segment_color(n: u8) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 6] = [
        [255, 64, 64],
        [64, 220, 64],
        [64, 160, 255],
        [255, 210, 0],
        [230, 80, 230],
        [0, 220, 220],
    ];
    PALETTE[(n.max(1) as usize - 1) % PALETTE.len()]
}

/// A grey image with outlines, before encoding.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Render `plane` at `index` of `volume` with the outlines of `segments` (label numbers) of `labels`.
pub fn render(
    volume: &Volume,
    labels: Option<&Array3<u8>>,
    plane: Plane,
    index: usize,
    window: Window,
    segments: &[u8],
) -> Result<Image, RenderError> {
    let shape = volume.shape();
    let count = plane.count(shape);
    if index >= count {
        return Err(RenderError::Index {
            index,
            last: count.saturating_sub(1),
            plane: plane.name(),
        });
    }
    let [dk, dj, di] = volume.geometry.spacing_kji();
    let axis = match plane {
        Plane::Axial => 0,
        Plane::Coronal => 1,
        Plane::Sagittal => 2,
    };
    let hu: ArrayView2<i16> = volume.hu.index_axis(ndarray::Axis(axis), index);
    let lab: Option<ArrayView2<u8>> = labels.map(|l| l.index_axis(ndarray::Axis(axis), index));
    // source rows / columns of the plane, and the display height (physical aspect)
    let (src_rows, src_cols) = hu.dim();
    let (row_mm, col_mm) = match plane {
        Plane::Axial => (dj, di),
        Plane::Coronal => (dk, di),
        Plane::Sagittal => (dk, dj),
    };
    let flip = plane != Plane::Axial;
    let width = src_cols;
    let height = if row_mm > 0.0 && col_mm > 0.0 {
        ((src_rows as f64 * row_mm / col_mm).round() as usize).clamp(1, 4 * src_rows.max(1))
    } else {
        src_rows
    };
    let src_row = |y: usize| {
        let r = ((y as f64 + 0.5) * src_rows as f64 / height as f64) as usize;
        let r = r.min(src_rows - 1);
        if flip {
            src_rows - 1 - r
        } else {
            r
        }
    };
    let lo = window.center - window.width / 2.0;
    let scale = 255.0 / window.width.max(1.0);
    let mut rgb = vec![0u8; width * height * 3];
    let mut shown = vec![0u8; width * height];
    for y in 0..height {
        let r = src_row(y);
        for x in 0..width {
            let v = ((hu[(r, x)] as f32 - lo) * scale).clamp(0.0, 255.0) as u8;
            let o = (y * width + x) * 3;
            rgb[o..o + 3].copy_from_slice(&[v, v, v]);
            if let Some(l) = &lab {
                let s = l[(r, x)];
                if s != 0 && segments.contains(&s) {
                    shown[y * width + x] = s;
                }
            }
        }
    }
    // outlines: a labelled pixel with another label (or the border) within `t` pixels along a row or
    // column; `t` grows with the image so that the outline stays visible when a 512² plane is shown small
    let t = (width.max(height) / 256).max(1);
    for y in 0..height {
        for x in 0..width {
            let s = shown[y * width + x];
            if s == 0 {
                continue;
            }
            let edge = x < t
                || y < t
                || x + t >= width
                || y + t >= height
                || (1..=t).any(|d| {
                    shown[y * width + x - d] != s
                        || shown[y * width + x + d] != s
                        || shown[(y - d) * width + x] != s
                        || shown[(y + d) * width + x] != s
                });
            if edge {
                let o = (y * width + x) * 3;
                rgb[o..o + 3].copy_from_slice(&segment_color(s));
            }
        }
    }
    Ok(Image { width, height, rgb })
}

impl Image {
    /// PNG (RGB, 8 bit, fast compression).
    pub fn png(&self) -> Result<Vec<u8>, RenderError> {
        let mut out = Vec::with_capacity(self.rgb.len() / 2);
        let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc
            .write_header()
            .map_err(|e| RenderError::Png(e.to_string()))?;
        w.write_image_data(&self.rgb)
            .map_err(|e| RenderError::Png(e.to_string()))?;
        w.finish().map_err(|e| RenderError::Png(e.to_string()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segnode_imaging::volume::{Geometry, SeriesInfo};

    fn volume(shape: [usize; 3], slice_mm: f64) -> Volume {
        Volume {
            hu: Array3::from_elem((shape[0], shape[1], shape[2]), -1000i16),
            geometry: Geometry {
                origin: [0.0; 3],
                row_dir: [1.0, 0.0, 0.0],
                col_dir: [0.0, 1.0, 0.0],
                normal: [0.0, 0.0, 1.0],
                pixel_spacing: [1.0, 1.0],
                slice_spacing: slice_mm,
            },
            slices: Vec::new(),
            series: SeriesInfo::default(),
            out_of_field: None,
            dropped: Vec::new(),
        }
    }

    #[test]
    fn outlines_only_where_the_mask_is_and_only_chosen_segments() {
        let v = volume([4, 16, 16], 1.0);
        let mut labels = Array3::<u8>::zeros((4, 16, 16));
        for j in 4..12 {
            for i in 4..12 {
                labels[(2, j, i)] = 1;
            }
        }
        let lung = Window::parse("lung").unwrap();
        let plain = render(&v, Some(&labels), Plane::Axial, 2, lung, &[]).unwrap();
        let drawn = render(&v, Some(&labels), Plane::Axial, 2, lung, &[1]).unwrap();
        let other = render(&v, Some(&labels), Plane::Axial, 2, lung, &[2]).unwrap();
        assert_eq!(plain.rgb, other.rgb, "segment 2 is not in the mask");
        let changed: Vec<usize> = (0..256)
            .filter(|p| plain.rgb[p * 3..p * 3 + 3] != drawn.rgb[p * 3..p * 3 + 3])
            .collect();
        // the 8×8 square's border: 28 pixels, each inside the square and coloured
        assert_eq!(changed.len(), 28);
        for p in changed {
            let (y, x) = (p / 16, p % 16);
            assert!((4..12).contains(&y) && (4..12).contains(&x));
            assert_eq!(drawn.rgb[p * 3..p * 3 + 3], segment_color(1));
        }
        assert!(drawn.png().unwrap().starts_with(b"\x89PNG"));
    }

    #[test]
    fn reformatted_planes_keep_the_physical_aspect_and_bad_requests_are_named() {
        let v = volume([10, 20, 30], 3.0);
        let lung = Window::parse("lung").unwrap();
        let cor = render(&v, None, Plane::Coronal, 0, lung, &[]).unwrap();
        assert_eq!(
            (cor.width, cor.height),
            (30, 30),
            "10 slices × 3 mm over 1 mm pixels"
        );
        let sag = render(&v, None, Plane::Sagittal, 29, lung, &[]).unwrap();
        assert_eq!((sag.width, sag.height), (20, 30));
        assert!(matches!(
            render(&v, None, Plane::Axial, 10, lung, &[]),
            Err(RenderError::Index { last: 9, .. })
        ));
        assert!(Plane::parse("oblique").is_err());
        assert!(Window::parse("soft").is_err());
        assert_eq!(Plane::Sagittal.count(v.shape()), 30);
    }
}
