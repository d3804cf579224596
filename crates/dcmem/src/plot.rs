//! `dcmem bench --plot FILE.png`: a horizontal bar chart of baseline and ours per row; and the
//! font and PNG encoding every chart shares (`dcmem replay --plot` draws its own).
//!
//! Rendered with plotters' bitmap backend into memory and encoded with the `png` crate. Text
//! uses a font embedded in the binary (a subset of DejaVu Sans, see `assets/LICENSE-DejaVu.txt`)
//! through plotters' `ab_glyph` feature, so charts render on machines with no fonts installed.

use crate::report::Report;
use crate::{units, CliError, CliResult};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
/// The font family every chart's text uses (the embedded font, once registered).
pub const FAMILY: &str = "sans-serif";

/// Registers the embedded font under [`FAMILY`] (once per process).
pub fn register_font() -> CliResult {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(CliError::Other("the embedded chart font could not be loaded".into()))
    }
}

/// A drawing error, phrased for the user.
pub fn plot_error(e: impl std::fmt::Display) -> CliError {
    CliError::Other(format!("could not draw the chart: {e}"))
}

/// Rejects a `--plot` path that cannot work (not `.png`, in no directory, a directory, a file
/// this process cannot create or write) before any time is spent measuring.
pub fn check_path(path: &Path) -> CliResult {
    let is_png = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(CliError::Other(format!(
            "--plot writes a PNG image; give a file name ending in .png (got `{}`)",
            path.display()
        )));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(CliError::Other(format!(
            "--plot: directory `{}` does not exist (create it first)",
            parent.display()
        )));
    }
    if path.is_dir() {
        return Err(CliError::Other(format!(
            "--plot: `{}` is a directory; give the name of the PNG file to write, e.g. `{}`",
            path.display(),
            path.join("chart.png").display()
        )));
    }
    // Opening without truncating changes no existing file; a file the probe created is removed.
    let existed = path.exists();
    match std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path) {
        Ok(_) if !existed => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => {}
        Err(e) => {
            return Err(CliError::Other(format!(
                "--plot: cannot write `{}`: {e}; give the name of a PNG file in a directory you can write to",
                path.display()
            )))
        }
    }
    Ok(())
}

/// Draws the chart into an RGB buffer of `width` × `height`.
fn render(report: &Report, width: u32, height: u32) -> CliResult<Vec<u8>> {
    register_font()?;
    let rows = &report.rows;
    if rows.is_empty() {
        return Err(CliError::Other("nothing to plot: the report has no rows".into()));
    }
    let n = rows.len() as i32;
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (mut lo, mut hi) = (f64::INFINITY, 0f64);
        for r in rows {
            for t in [r.baseline_ns, r.ours_ns] {
                lo = lo.min(t);
                hi = hi.max(t);
            }
        }
        if !(lo.is_finite() && lo > 0.0 && hi >= lo) {
            lo = 1.0;
            hi = 10.0;
        }
        // Headroom on the right for the ratio text after the longest bar.
        let (lo, hi) = (lo / 2.0, hi * 40.0);
        let labels: Vec<String> =
            rows.iter().map(|r| format!("{}, {}", r.operation, units::bytes(r.size_bytes))).collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
        let label_area = (longest * 7 + 24).clamp(250, width / 2);
        let title = format!("dcmem bench — {} backend, {} run — {}", report.backend, report.mode, report.machine.cpu);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(50)
            // Wide enough for the longest row label at 14 px (about 7 px per character).
            .y_label_area_size(label_area)
            // `(0..m).into_segmented()` has m + 1 segments, one per row here.
            .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())
            .map_err(plot_error)?;
        // Row 0 at the top: segment n-1-i holds row i.
        let label_of = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(j) if (0..n).contains(j) => labels[(n - 1 - j) as usize].clone(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("time per operation (log scale; shorter is better)")
            .x_label_formatter(&|v| units::nanos(*v))
            .y_label_formatter(&label_of)
            // One label per row: plotters thins labels out unless asked for this many.
            .y_labels(n as usize + 1)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(plot_error)?;

        let grey = RGBColor(160, 160, 160);
        let blue = RGBColor(31, 119, 180);
        let x0 = chart.backend_coord(&(lo, SegmentValue::Exact(0))).0;
        for (i, r) in rows.iter().enumerate() {
            let j = n - 1 - i as i32;
            let top = chart.backend_coord(&(lo, SegmentValue::Exact(j + 1))).1;
            let bottom = chart.backend_coord(&(lo, SegmentValue::Exact(j))).1;
            let (top, bottom) = (top.min(bottom), top.max(bottom));
            let h = bottom - top;
            let pad = (h / 6).max(1);
            let mid = top + h / 2;
            let xb = chart.backend_coord(&(r.baseline_ns, SegmentValue::Exact(j))).0;
            let xo = chart.backend_coord(&(r.ours_ns, SegmentValue::Exact(j))).0;
            root.draw(&Rectangle::new([(x0, top + pad), (xb.max(x0 + 1), mid)], grey.filled())).map_err(plot_error)?;
            root.draw(&Rectangle::new([(x0, mid), (xo.max(x0 + 1), bottom - pad)], blue.filled()))
                .map_err(plot_error)?;
            let verdict = if units::ratio(r.ratio) == units::ratio(1.0) {
                format!("{} (even)", units::ratio(r.ratio))
            } else if r.ratio >= 1.0 {
                format!("{} faster", units::ratio(r.ratio))
            } else {
                format!("{} (ours slower)", units::ratio(r.ratio))
            };
            root.draw(&Text::new(verdict, (xb.max(xo) + 8, mid - 8), (FAMILY, 15).into_font().color(&BLACK)))
                .map_err(plot_error)?;
        }
        // Legend, bottom left (below the row labels, beside the x axis labels).
        let (lx, ly) = (24, height as i32 - 52);
        root.draw(&Rectangle::new([(lx, ly), (lx + 18, ly + 12)], grey.filled())).map_err(plot_error)?;
        root.draw(&Text::new("baseline (see table)", (lx + 26, ly - 1), (FAMILY, 14))).map_err(plot_error)?;
        root.draw(&Rectangle::new([(lx, ly + 20), (lx + 18, ly + 32)], blue.filled())).map_err(plot_error)?;
        root.draw(&Text::new("ours (dotcompute-memory)", (lx + 26, ly + 19), (FAMILY, 14))).map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(pixels)
}

/// Writes the chart of `report` to `path` as a PNG.
pub fn write_png(report: &Report, path: &Path) -> CliResult {
    let width = 1400u32;
    let height = 130 + 46 * report.rows.len().max(1) as u32;
    let pixels = render(report, width, height)?;
    save_png(&pixels, width, height, path)
}

/// Encodes RGB `pixels` of `width` × `height` into the PNG file `path`.
pub fn save_png(pixels: &[u8], width: u32, height: u32, path: &Path) -> CliResult {
    let io = |e: std::io::Error| CliError::Other(format!("could not write `{}`: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(io)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let enc_err = |e: png::EncodingError| CliError::Other(format!("could not encode `{}`: {e}", path.display()));
    let mut writer = encoder.write_header().map_err(enc_err)?;
    writer.write_image_data(pixels).map_err(enc_err)?;
    writer.finish().map_err(enc_err)?;
    Ok(())
}
