//! Plots of an experiment's results with plotters: one line per (method,
//! parameter), a band of one standard deviation around it, axes labelled,
//! the variant in the title. PNG through plotters' bitmap backend (encoded
//! here with `png`), SVG through its SVG backend.
//!
//! Text is drawn with plotters' pure-Rust `ab_glyph` path and DejaVu Sans
//! embedded in the binary (the `dejavu` crate), so neither fontconfig nor
//! freetype nor a system font is needed to build or to draw.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Kind, Results, Row};
use crate::error::{Error, Result};

/// Width and height of the plots, in pixels.
pub const SIZE: (u32, u32) = (1200, 700);

/// Width of the legend column.
const LEGEND_W: u32 = 250;

fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::internal("the embedded DejaVu Sans font could not be parsed"))
    }
}

/// One line of the plot.
struct Series {
    label: String,
    points: Vec<(f64, f64, f64, f64)>,
}

fn series(r: &Results) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let scaling = r.experiment == Kind::Scaling;
    for row in &r.rows {
        let label =
            if row.parameter.is_empty() { row.method.clone() } else { format!("{} {}", row.method, row.parameter) };
        let idx = match out.iter().position(|s| s.label == label) {
            Some(i) => i,
            None => {
                out.push(Series { label, points: Vec::new() });
                out.len() - 1
            }
        };
        if let Some((y, lo, hi)) = point(row, scaling) {
            out[idx].points.push((row.x, y, lo, hi));
        }
    }
    out
}

/// (y, band low, band high) of a row.
fn point(row: &Row, scaling: bool) -> Option<(f64, f64, f64)> {
    if scaling {
        let y = row.median_ms?;
        let (mean, std) = (row.mean.unwrap_or(y), row.std.unwrap_or(0.0));
        Some((y, (mean - std).max(y / 2.0), (mean + std).max(y)))
    } else {
        let (m, s) = (row.mean?, row.std.unwrap_or(0.0));
        Some((m, (m - s).max(0.0), (m + s).min(1.0)))
    }
}

fn color(i: usize) -> RGBColor {
    // Distinguishable on white: Tableau 10, then darker companions.
    const C: [(u8, u8, u8); 14] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
        (0, 0, 0),
        (120, 60, 0),
        (0, 90, 60),
        (90, 0, 120),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

fn title(r: &Results) -> String {
    let mut t = format!("{} (variant {}): {}", r.experiment.name(), r.variant.name(), r.data);
    if r.experiment != Kind::Scaling {
        t += &format!(", {}", r.normalize);
    }
    t += &format!(", beta {}, steps {}, {} trials", r.beta, r.steps, r.trials);
    if r.noise_broadcast {
        t += ", authors' noise";
    }
    if r.authors_sign_scores {
        t += ", sign scores";
    }
    t
}

fn x_label(k: Kind) -> &'static str {
    match k {
        Kind::Capacity => "M (stored patterns)",
        Kind::Noise => "sigma (noise standard deviation)",
        Kind::Scaling => "n = L = M (log scale)",
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &Results) -> std::result::Result<(), String> {
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (chart_area, legend) = root.split_horizontally(SIZE.0 - LEGEND_W);
    let all = series(r);
    let pts = all.iter().flat_map(|s| s.points.iter());
    let (x_lo, x_hi) = pts.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (x_lo, x_hi) = if x_lo.is_finite() { (x_lo, x_hi.max(x_lo + 1e-9)) } else { (0.0, 1.0) };
    let caption = (title(r), ("sans-serif", 18).into_font());
    if r.experiment == Kind::Scaling {
        let (y_lo, y_hi) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.2), b.max(p.3)));
        let (y_lo, y_hi) = if y_lo.is_finite() { (y_lo / 1.5, y_hi * 1.5) } else { (1.0, 10.0) };
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(caption.0, caption.1)
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(80)
            // n runs over powers of two: label those, not every tenth.
            .build_cartesian_2d((x_lo / 1.2..x_hi * 1.2).log_scale().base(2.0), (y_lo..y_hi).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| if *v >= 1.0 { format!("{v:.0}") } else { format!("{v:.3}") })
            .x_desc(x_label(r.experiment))
            .y_desc(&r.metric)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(e)?;
        for (i, s) in all.iter().enumerate() {
            let c = color(i);
            let band: Vec<(f64, f64)> =
                s.points.iter().map(|p| (p.0, p.3)).chain(s.points.iter().rev().map(|p| (p.0, p.2))).collect();
            chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.15)))).map_err(e)?;
            chart.draw_series(LineSeries::new(s.points.iter().map(|p| (p.0, p.1)), c.stroke_width(2))).map_err(e)?;
            chart.draw_series(s.points.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled()))).map_err(e)?;
        }
    } else {
        let pad = (x_hi - x_lo) * 0.03;
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(caption.0, caption.1)
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo - pad..x_hi + pad, -0.02f64..1.02f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| if r.experiment == Kind::Capacity { format!("{v:.0}") } else { format!("{v:.2}") })
            .y_label_formatter(&|v| format!("{v:.1}"))
            .x_desc(x_label(r.experiment))
            .y_desc(&r.metric)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(e)?;
        for (i, s) in all.iter().enumerate() {
            let c = color(i);
            let band: Vec<(f64, f64)> =
                s.points.iter().map(|p| (p.0, p.3)).chain(s.points.iter().rev().map(|p| (p.0, p.2))).collect();
            chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.12)))).map_err(e)?;
            chart.draw_series(LineSeries::new(s.points.iter().map(|p| (p.0, p.1)), c.stroke_width(2))).map_err(e)?;
            chart.draw_series(s.points.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled()))).map_err(e)?;
        }
    }
    // The legend, in its own column so that it never covers a line.
    legend.draw(&Text::new("method", (12, 40), ("sans-serif", 16).into_font())).map_err(e)?;
    for (i, s) in all.iter().enumerate() {
        let y = 70 + 24 * i as i32;
        let c = color(i);
        legend.draw(&PathElement::new(vec![(12, y), (42, y)], c.stroke_width(3))).map_err(e)?;
        let label = if s.points.is_empty() { format!("{} (no value)", s.label) } else { s.label.clone() };
        legend.draw(&Text::new(label, (50, y - 8), ("sans-serif", 15).into_font())).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// The plot as PNG bytes (RGB, [`SIZE`]).
pub fn png(r: &Results) -> Result<Vec<u8>> {
    font()?;
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw(&root, r).map_err(|m| Error::internal(format!("drawing the PNG plot failed: {m}")))?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
    writer.write_image_data(&rgb).map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
    writer.finish().map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

/// The plot as an SVG document.
pub fn svg(r: &Results) -> Result<String> {
    font()?;
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, SIZE).into_drawing_area();
        draw(&root, r).map_err(|m| Error::internal(format!("drawing the SVG plot failed: {m}")))?;
    }
    Ok(s)
}
