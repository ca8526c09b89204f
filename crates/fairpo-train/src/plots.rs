//! SVG plots for run reports (plotters' SVG backend, rendered into a string so the
//! caller can write it atomically).

use plotters::prelude::*;

/// One named line of a line plot.
#[derive(Debug, Clone)]
pub struct Series {
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

/// Renders a line plot with a legend as an SVG document.
pub fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let pts = || series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = range(pts().map(|p| p.0));
        let (y0, y1) = range(pts().map(|p| p.1));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Renders per-label AP bars, privileged labels in red, the rest in blue, labels with
/// no positives (AP undefined) left empty.
pub fn ap_bars(
    title: &str,
    labels: &[String],
    ap: &[Option<f64>],
    privileged: &[bool],
) -> Result<String, String> {
    let n = labels.len().max(1);
    let width = (n as u32 * 14 + 140).clamp(720, 2400);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(90)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("average precision")
            .draw()
            .map_err(err)?;
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
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (0.0, 0.0)],
                red.filled(),
            )))
            .map_err(err)?
            .label("privileged (P)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], red.filled()));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (0.0, 0.0)],
                blue.filled(),
            )))
            .map_err(err)?
            .label("non-privileged")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], blue.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Grouped bars: one group per category (e.g. a run), one bar per named value
/// (e.g. mAP on P and on P̄). Values are fractions in [0, 1].
pub fn grouped_bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    bar_names: &[&str],
    values: &[Vec<f64>],
) -> Result<String, String> {
    let n = categories.len().max(1);
    let k = bar_names.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, ((n as u32 * 110 + 160).max(600), 440))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (lo, hi) = range(values.iter().flatten().copied().chain([0.0]));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, lo.min(0.0)..hi.max(0.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_label)
            .draw()
            .map_err(err)?;
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
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
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
