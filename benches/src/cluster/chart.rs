//! PNG charts of a run (plotters): throughput per workload, and latency percentiles per
//! workload, both on log scales so 3,000 and 3,000,000 ops/s fit one picture.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord};
use plotters::coord::types::RangedCoordu32;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::Row;

/// Where the TrueType font for labels is looked for (Debian's `fonts-dejavu-core`, which
/// `cargo xtask setup` installs); `LOCKSTEP_BENCH_FONT` names another file.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the label font once; the error says which files were tried.
fn font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let env = std::env::var("LOCKSTEP_BENCH_FONT").ok();
        let paths: Vec<&str> = env.iter().map(String::as_str).chain(FONT_PATHS.iter().copied()).collect();
        let bytes = paths
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| format!("charts need a TrueType font; none of {paths:?} is readable (install fonts-dejavu-core or set LOCKSTEP_BENCH_FONT)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the label font is not a valid TrueType font".to_string())
    })
    .clone()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Range of a log axis covering `values`, with room on both sides.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = if lo == f64::MAX { 1.0 } else { lo };
    let lo = 10f64.powf(lo.log10().floor()).max(0.1);
    let hi = 10f64.powf(hi.log10().ceil());
    lo..hi.max(lo * 10.0)
}

fn height(rows: &[Row]) -> u32 {
    140 + 34 * rows.len() as u32
}

/// A chart with one horizontal band per row (labelled with [`Row::label`]) over a log x axis.
type Bands<'a> =
    ChartContext<'a, BitMapBackend<'a>, Cartesian2d<LogCoord<f64>, SegmentedCoord<RangedCoordu32>>>;

/// Draws the frame of a band chart over `range` into `path`, then `bars` into it (given the
/// axis start), and writes the file.
fn band_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    rows: &[Row],
    range: std::ops::Range<f64>,
    bars: impl FnOnce(&mut Bands<'_>, f64) -> Result<(), String>,
) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1100, height(rows))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = rows.iter().map(Row::label).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(330)
        .build_cartesian_2d(range.log_scale(), (0..rows.len() as u32).into_segmented())
        .map_err(err)?;
    let fmt = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&fmt)
        .x_desc(x_desc)
        .x_label_formatter(&|v| human(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let x0 = chart.x_range().start;
    bars(&mut chart, x0)?;
    root.present().map_err(err)
}

/// The band of row `i` from the axis start `x0` to `value`.
fn band(i: usize, x0: f64, value: f64, color: RGBAColor) -> Rectangle<(f64, SegmentValue<u32>)> {
    let i = i as u32;
    Rectangle::new(
        [
            (x0, SegmentValue::Exact(i)),
            (value.max(x0), SegmentValue::Exact(i + 1)),
        ],
        color.filled(),
    )
}

/// Horizontal bars of ops/s, one per row.
fn throughput(path: &Path, title: &str, rows: &[Row]) -> Result<(), String> {
    let range = log_range(rows.iter().map(|r| r.ops_per_sec));
    band_chart(
        path,
        title,
        "operations per second (log scale)",
        rows,
        range,
        |chart, x0| {
            chart
                .draw_series(
                    rows.iter()
                        .enumerate()
                        .map(|(i, r)| band(i, x0, r.ops_per_sec, BLUE.mix(0.7))),
                )
                .map_err(err)?;
            chart
                .draw_series(rows.iter().enumerate().map(|(i, r)| {
                    Text::new(
                        format!(" {}", human(r.ops_per_sec)),
                        (r.ops_per_sec.max(x0), SegmentValue::CenterOf(i as u32)),
                        ("sans-serif", 13),
                    )
                }))
                .map_err(err)?;
            Ok(())
        },
    )
}

/// A latency series: name, colour, and the value it takes from a row.
type Series = (&'static str, RGBColor, fn(&Row) -> f64);

/// Overlapping horizontal bars of p99.9, p99 and p50 latency, one group per row.
fn latency(path: &Path, title: &str, rows: &[Row]) -> Result<(), String> {
    let range = log_range(rows.iter().flat_map(|r| [r.p50_us, r.p999_us]));
    band_chart(
        path,
        title,
        "latency in µs (log scale)",
        rows,
        range,
        |chart, x0| {
            let series: [Series; 3] = [
                ("p99.9", RGBColor(250, 200, 150), |r| r.p999_us),
                ("p99", RGBColor(240, 130, 60), |r| r.p99_us),
                ("p50", RGBColor(170, 50, 20), |r| r.p50_us),
            ];
            for (name, color, value) in series {
                chart
                    .draw_series(
                        rows.iter()
                            .enumerate()
                            .map(|(i, r)| band(i, x0, value(r), color.to_rgba())),
                    )
                    .map_err(err)?
                    .label(name)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(err)
        },
    )
}

/// 1234567 -> "1.2M", 3400 -> "3.4k".
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Draws `STEM-throughput.png` and `STEM-latency.png` in `dir`; returns their paths.
pub fn draw(dir: &Path, stem: &str, rows: &[Row]) -> Result<Vec<PathBuf>, String> {
    font()?;
    std::fs::create_dir_all(dir).map_err(err)?;
    let t = dir.join(format!("{stem}-throughput.png"));
    let l = dir.join(format!("{stem}-latency.png"));
    throughput(&t, "lockstep: throughput per workload", rows)?;
    latency(&l, "lockstep: latency percentiles per workload", rows)?;
    Ok(vec![t, l])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers_are_short() {
        assert_eq!(human(1_234_567.0), "1.23M");
        assert_eq!(human(3_400.0), "3.4k");
        assert_eq!(human(53.2), "53");
    }

    #[test]
    fn log_range_covers_every_value_with_whole_decades() {
        let r = log_range([3_400.0, 1_900_000.0].into_iter());
        assert_eq!(r, 1_000.0..10_000_000.0);
    }
}
