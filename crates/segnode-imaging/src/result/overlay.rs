//! Overlay images: one CT slice in a display window as 8-bit RGB, each segment's outline in its colour,
//! and a small legend. Pure pixel work, no DICOM: the secondary-capture form wraps these images.
//!
//! What a pixel holds is simple to state and to check: a pixel of segment `s` that touches (4-neighbour,
//! or the image edge) a pixel not of `s` is painted in `s`'s colour; pixels under the legend box (top-left
//! corner, [`Legend::size`]) carry the legend; a pixel outside the reconstructed field of view (padding)
//! is black; every other pixel is the windowed CT value, grey.

use super::options::Window;

/// Legend text geometry, in pixels: 8×8 glyphs on 10-pixel lines inside a 4-pixel margin.
pub const GLYPH: usize = 8;
pub const LINE: usize = 10;
pub const MARGIN: usize = 4;

/// A segment as the overlay draws it.
#[derive(Debug, Clone)]
pub struct OverlaySegment {
    pub number: u8,
    pub rgb: [u8; 3],
}

/// The legend: one line per segment (with its colour swatch) and then plain note lines.
#[derive(Debug, Clone, Default)]
pub struct Legend {
    pub entries: Vec<([u8; 3], String)>,
    pub notes: Vec<String>,
}

impl Legend {
    /// Width and height of the legend box in pixels (0 × 0 when empty).
    pub fn size(&self) -> (usize, usize) {
        let lines = self.entries.len() + self.notes.len();
        if lines == 0 {
            return (0, 0);
        }
        let chars = self
            .entries
            .iter()
            .map(|(_, t)| t.chars().count() + 2)
            .chain(self.notes.iter().map(|t| t.chars().count()))
            .max()
            .unwrap_or(0);
        (
            2 * MARGIN + chars * GLYPH,
            2 * MARGIN + lines * LINE - (LINE - GLYPH),
        )
    }
}

/// One slice to draw: HU and labels row-major `rows × cols`; `outside` the out-of-field bits of the
/// slice (bit `p` = pixel `p`), when the volume has any.
#[derive(Debug, Clone, Copy)]
pub struct SliceImage<'a> {
    pub hu: &'a [i16],
    pub labels: &'a [u8],
    pub outside: Option<&'a [u64]>,
    pub rows: usize,
    pub cols: usize,
}

/// Render a slice with the outlines of `segments` found in its labels.
pub fn render(
    slice: SliceImage,
    window: Window,
    segments: &[OverlaySegment],
    legend: &Legend,
) -> Vec<u8> {
    let SliceImage {
        hu,
        labels,
        outside,
        rows,
        cols,
    } = slice;
    let mut rgb = vec![0u8; rows * cols * 3];
    for (n, &h) in hu.iter().enumerate().take(rows * cols) {
        if outside.is_some_and(|w| w[n / 64] >> (n % 64) & 1 == 1) {
            continue; // black: no data there
        }
        let g = window.grey(h as f64);
        rgb[3 * n..3 * n + 3].copy_from_slice(&[g, g, g]);
    }
    for j in 0..rows {
        for i in 0..cols {
            let l = labels[j * cols + i];
            let Some(s) = segments.iter().find(|s| s.number == l && l != 0) else {
                continue;
            };
            let differs = |jj: isize, ii: isize| {
                jj < 0
                    || ii < 0
                    || jj as usize >= rows
                    || ii as usize >= cols
                    || labels[jj as usize * cols + ii as usize] != l
            };
            let (jj, ii) = (j as isize, i as isize);
            if differs(jj - 1, ii)
                || differs(jj + 1, ii)
                || differs(jj, ii - 1)
                || differs(jj, ii + 1)
            {
                let n = j * cols + i;
                rgb[3 * n..3 * n + 3].copy_from_slice(&s.rgb);
            }
        }
    }
    draw_legend(&mut rgb, rows, cols, legend);
    rgb
}

fn draw_legend(rgb: &mut [u8], rows: usize, cols: usize, legend: &Legend) {
    let (w, h) = legend.size();
    let (w, h) = (w.min(cols), h.min(rows));
    for j in 0..h {
        for i in 0..w {
            let n = j * cols + i;
            rgb[3 * n..3 * n + 3].copy_from_slice(&[0, 0, 0]);
        }
    }
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < w && y < h {
            let n = y * cols + x;
            rgb[3 * n..3 * n + 3].copy_from_slice(&c);
        }
    };
    let white = [255, 255, 255];
    let lines = legend
        .entries
        .iter()
        .map(|(c, t)| (Some(*c), t.as_str()))
        .chain(legend.notes.iter().map(|t| (None, t.as_str())));
    for (row, (swatch, text)) in lines.enumerate() {
        let y0 = MARGIN + row * LINE;
        let mut x0 = MARGIN;
        if let Some(c) = swatch {
            for y in 0..GLYPH {
                for x in 0..GLYPH {
                    put(x0 + x, y0 + y, c);
                }
            }
            x0 += 2 * GLYPH;
        }
        for ch in text.chars() {
            let glyph = font8x8::legacy::BASIC_LEGACY[if ch.is_ascii() {
                ch as usize
            } else {
                b'?' as usize
            }];
            for (y, bits) in glyph.iter().enumerate() {
                for x in 0..GLYPH {
                    if bits >> x & 1 == 1 {
                        put(x0 + x, y0 + y, white);
                    }
                }
            }
            x0 += GLYPH;
        }
    }
}

/// sRGB of a DICOM RecommendedDisplayCIELabValue (L*a*b* scaled to 0..65535, D65 white).
pub fn cielab_to_rgb(lab: [u16; 3]) -> [u8; 3] {
    let l = lab[0] as f64 * 100.0 / 65535.0;
    let a = lab[1] as f64 * 255.0 / 65535.0 - 128.0;
    let b = lab[2] as f64 * 255.0 / 65535.0 - 128.0;
    let fy = (l + 16.0) / 116.0;
    let (fx, fz) = (fy + a / 500.0, fy - b / 200.0);
    let inv = |t: f64| {
        if t > 6.0 / 29.0 {
            t * t * t
        } else {
            3.0 * (6.0f64 / 29.0).powi(2) * (t - 4.0 / 29.0)
        }
    };
    let (x, y, z) = (0.95047 * inv(fx), inv(fy), 1.08883 * inv(fz));
    let lin = [
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    ];
    lin.map(|c| {
        let c = c.clamp(0.0, 1.0);
        let s = if c <= 0.003_130_8 {
            12.92 * c
        } else {
            1.055 * c.powf(1.0 / 2.4) - 0.055
        };
        (s * 255.0).round() as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlines_sit_on_the_boundary_and_the_rest_is_windowed_ct() {
        let (rows, cols): (usize, usize) = (40, 50);
        let hu: Vec<i16> = (0..rows * cols).map(|n| (n as i16 % 700) - 900).collect();
        let labels: Vec<u8> = (0..rows * cols)
            .map(|n| {
                let (j, i) = (n / cols, n % cols);
                u8::from((20..30).contains(&j) && (20..35).contains(&i))
            })
            .collect();
        let seg = [OverlaySegment {
            number: 1,
            rgb: [255, 0, 0],
        }];
        let mut outside = vec![0u64; (rows * cols).div_ceil(64)];
        outside[0] = 1; // pixel (0, 0) lies outside the field of view
        let slice = SliceImage {
            hu: &hu,
            labels: &labels,
            outside: Some(&outside),
            rows,
            cols,
        };
        let img = render(slice, Window::LUNG, &seg, &Legend::default());
        for j in 0..rows {
            for i in 0..cols {
                let n = j * cols + i;
                let boundary = labels[n] == 1 && (j == 20 || j == 29 || i == 20 || i == 34);
                let want = if boundary {
                    [255, 0, 0]
                } else if n == 0 {
                    [0, 0, 0]
                } else {
                    let g = Window::LUNG.grey(hu[n] as f64);
                    [g, g, g]
                };
                assert_eq!(img[3 * n..3 * n + 3], want, "pixel {j},{i}");
            }
        }
    }

    #[test]
    fn the_legend_stays_in_its_box() {
        let legend = Legend {
            entries: vec![([0, 255, 0], "Right lung 2400 mL".into())],
            notes: vec!["not for diagnosis".into()],
        };
        let (w, h) = legend.size();
        assert_eq!((w, h), (2 * MARGIN + 20 * GLYPH, 2 * MARGIN + LINE + GLYPH));
        let (rows, cols) = (64, 256);
        let hu = vec![-1000i16; rows * cols];
        let labels = vec![0; rows * cols];
        let slice = SliceImage {
            hu: &hu,
            labels: &labels,
            outside: None,
            rows,
            cols,
        };
        let img = render(slice, Window::LUNG, &[], &legend);
        let bg = Window::LUNG.grey(-1000.0);
        let mut white = 0;
        for j in 0..rows {
            for i in 0..cols {
                let p = &img[3 * (j * cols + i)..3 * (j * cols + i) + 3];
                if j >= h || i >= w {
                    assert_eq!(p, [bg, bg, bg]);
                } else if p == [255, 255, 255] {
                    white += 1;
                }
            }
        }
        assert!(white > 100, "the text is drawn");
    }

    #[test]
    fn cielab_colours_convert() {
        assert_eq!(cielab_to_rgb([65535, 32896, 32896]), [255, 255, 255]);
        assert_eq!(cielab_to_rgb([0, 32896, 32896]), [0, 0, 0]);
        let yellow = cielab_to_rgb([59_000, 33_000, 52_000]);
        assert!(
            yellow[0] > 180 && yellow[1] > 180 && yellow[2] < 150,
            "{yellow:?}"
        );
    }
}
