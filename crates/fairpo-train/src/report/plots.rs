//! SVG plots for run reports (plotters' SVG backend, rendered into a string so the
//! caller can write it atomically).

use std::ops::Range;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One named line of a line plot.
#[derive(Debug, Clone)]
pub(super) struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plotting failed: {e:?}")
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A chart with `f64` axes on an SVG canvas.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Renders an SVG document of `size` pixels: `draw` paints on a white canvas.
fn render_svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A captioned chart on `root`, with x and y label areas of `label_areas` pixels.
fn titled_chart<'a, 'b>(
    root: &DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    label_areas: (u32, u32),
    x: Range<f64>,
    y: Range<f64>,
) -> Result<Chart<'a, 'b>, String> {
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(label_areas.0)
        .y_label_area_size(label_areas.1)
        .build_cartesian_2d(x, y)
        .map_err(err)
}

/// Bar-chart axes: no vertical grid lines and no x tick labels (the caller writes the
/// category names), `y_label` on the y axis.
fn draw_bar_mesh(chart: &mut Chart<'_, '_>, y_label: &str) -> Result<(), String> {
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .draw()
        .map_err(err)
}

/// Draws the series legend at `position`, on a translucent white box.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// The finite points of a series.
fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Axes with their descriptions.
fn draw_xy_mesh(chart: &mut Chart<'_, '_>, x_label: &str, y_label: &str) -> Result<(), String> {
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(err)
}

/// A legend marker for bars: a small filled square.
fn square_marker(color: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
}

/// Renders a line plot with a legend as an SVG document.
pub(super) fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<String, String> {
    render_svg((720, 420), |root| {
        let pts = || series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = range(pts().map(|p| p.0));
        let (y0, y1) = range(pts().map(|p| p.1));
        let mut chart = titled_chart(root, title, (40, 60), x0..x1, y0..y1)?;
        draw_xy_mesh(&mut chart, x_label, y_label)?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points = finite(&s.points);
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        // MiddleRight is plotters' default legend position.
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)
    })
}

/// Renders a scatter plot (one colour per series, with a legend) as an SVG document.
pub(super) fn scatter_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<String, String> {
    render_svg((720, 420), |root| {
        let pts = || {
            series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (x0, x1) = range(pts().map(|p| p.0));
        let (y0, y1) = range(pts().map(|p| p.1).chain([0.0]));
        let mut chart = titled_chart(root, title, (40, 60), x0..x1, y0..y1)?;
        draw_xy_mesh(&mut chart, x_label, y_label)?;
        // The zero line: above it a label gained.
        chart
            .draw_series(LineSeries::new([(x0, 0.0), (x1, 0.0)], BLACK.mix(0.4)))
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points = finite(&s.points);
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Renders per-label AP bars, privileged labels in red, the rest in blue, labels with
/// no positives (AP undefined) left empty.
pub(super) fn ap_bars(
    title: &str,
    labels: &[String],
    ap: &[Option<f64>],
    privileged: &[bool],
) -> Result<String, String> {
    let n = labels.len().max(1);
    let width = (n as u32 * 14 + 140).clamp(720, 2400);
    render_svg((width, 460), |root| {
        let mut chart = titled_chart(root, title, (90, 50), 0f64..n as f64, 0f64..1.0)?;
        draw_bar_mesh(&mut chart, "average precision")?;
        let style = ("sans-serif", 10)
            .into_font()
            .transform(FontTransform::Rotate90);
        for (i, name) in labels.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.35, 0.0));
            root.draw(&Text::new(name.clone(), (px, py + 4), style.clone()))
                .map_err(err)?;
        }
        let red = RGBColor(214, 39, 40);
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(ap.iter().enumerate().filter_map(|(i, v)| {
                let v = (*v)?;
                let color = if privileged.get(i).copied().unwrap_or(false) {
                    red
                } else {
                    blue
                };
                Some(Rectangle::new(
                    [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, v)],
                    color.filled(),
                ))
            }))
            .map_err(err)?;
        // Legend entries: empty rectangles that only carry a label and a marker.
        for (label, color) in [("privileged (P)", red), ("non-privileged", blue)] {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, 0.0), (0.0, 0.0)],
                    color.filled(),
                )))
                .map_err(err)?
                .label(label)
                .legend(square_marker(color));
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Grouped bars: one group per category (e.g. a run), one bar per named value
/// (e.g. mAP on P and on P̄). Values are fractions in [0, 1].
pub(super) fn grouped_bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    bar_names: &[&str],
    values: &[Vec<f64>],
) -> Result<String, String> {
    let n = categories.len().max(1);
    let k = bar_names.len().max(1);
    render_svg(((n as u32 * 110 + 160).max(600), 440), |root| {
        let (lo, hi) = range(values.iter().flatten().copied().chain([0.0]));
        let mut chart = titled_chart(
            root,
            title,
            (70, 60),
            0f64..n as f64,
            lo.min(0.0)..hi.max(0.0),
        )?;
        draw_bar_mesh(&mut chart, y_label)?;
        let y_base = lo.min(0.0);
        for (i, name) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.1, y_base));
            root.draw(&Text::new(name.clone(), (px, py + 6), ("sans-serif", 12)))
                .map_err(err)?;
        }
        let width = 0.8 / k as f64;
        for (j, name) in bar_names.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            chart
                .draw_series(values.iter().enumerate().filter_map(|(i, row)| {
                    let v = *row.get(j)?;
                    if !v.is_finite() {
                        return None;
                    }
                    let x0 = i as f64 + 0.1 + j as f64 * width;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.9, v)],
                        color.filled(),
                    ))
                }))
                .map_err(err)?
                .label(name.to_string())
                .legend(square_marker(color));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_plot_is_svg_with_legend() {
        let s = vec![
            Series {
                name: "L_P".into(),
                points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, f64::NAN)],
            },
            Series {
                name: "alpha_P".into(),
                points: vec![(0.0, 0.5), (1.0, 0.6)],
            },
        ];
        let svg = line_plot("losses", "step", "value", &s).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains("L_P") && svg.contains("alpha_P"));
    }

    #[test]
    fn ap_bars_draw_one_rect_per_scored_label() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let svg = ap_bars(
            "AP",
            &labels,
            &[Some(0.5), None, Some(1.0)],
            &[true, false, false],
        )
        .unwrap();
        assert!(svg.contains("privileged (P)"));
        // red bar for label a (privileged), blue for c
        assert!(svg.contains("#D62728") || svg.contains("#d62728"));
    }

    #[test]
    fn grouped_bars_render() {
        let svg = grouped_bars(
            "mAP",
            "mAP",
            &["sft".into(), "cpo".into()],
            &["P", "P-bar"],
            &[vec![0.5, 0.7], vec![0.6, 0.69]],
        )
        .unwrap();
        assert!(svg.contains("sft") && svg.contains("cpo"));
    }
}
