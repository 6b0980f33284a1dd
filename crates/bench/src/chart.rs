//! PNG charts of a bench run (plotters, bitmap backend). Text is drawn with a
//! TrueType font loaded at run time (`--font`, default DejaVu Sans from the
//! Debian package `fonts-dejavu-core`); nothing is embedded.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;

use super::stats::Stats;

/// Where Debian's `fonts-dejavu-core` puts DejaVu Sans.
pub(crate) const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const W: u32 = 1200;
const H: u32 = 700;

static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();

fn read_font(path: &Path) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the chart font {}: {e}; install it (`apt-get install fonts-dejavu-core`), \
             pass another TrueType file with --font PATH, or skip the charts with --no-charts",
            path.display()
        )
    })
}

/// Loads `path` as the charts' font (once per process). Called before a run
/// starts so a missing font fails in a second, not after the measurements.
pub(crate) fn load_font(path: &Path) -> Result<()> {
    let r = FONT.get_or_init(|| {
        let bytes = read_font(path)?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        for style in [FontStyle::Normal, FontStyle::Bold] {
            plotters::style::register_font("sans-serif", style, bytes).map_err(|_| {
                format!(
                    "{} is not a TrueType font plotters can read: pass another with --font PATH or use --no-charts",
                    path.display()
                )
            })?;
        }
        Ok(())
    });
    r.clone().map_err(|e| anyhow!(e))
}

fn palette(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    P[i % P.len()]
}

/// Bars of p50 per group and series, a whisker up to p99 and a dot at the max.
pub(crate) struct Bars<'a> {
    pub(crate) title: String,
    pub(crate) y_desc: &'a str,
    pub(crate) groups: Vec<String>,
    pub(crate) series: Vec<String>,
    /// `values[group][series]`.
    pub(crate) values: Vec<Vec<Option<Stats>>>,
    pub(crate) log_y: bool,
    /// A horizontal reference line (label, value).
    pub(crate) hline: Option<(String, f64)>,
}

fn y_bounds(vals: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in vals.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !hi.is_finite() || hi <= 0.0 {
        return (if log { 0.1 } else { 0.0 }, 1.0);
    }
    if log {
        let lo = 10f64.powf(lo.log10().floor()).min(hi / 10.0);
        (lo, hi * 2.5)
    } else {
        (0.0, hi * 1.15)
    }
}

/// An axis or value label: no decimals from 10 up.
fn tick(v: f64) -> String {
    if v.abs() >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn ctx(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart failed: {e}")
}

pub(crate) fn bars(path: &Path, b: &Bars<'_>) -> Result<PathBuf> {
    if b.groups.is_empty() || b.series.is_empty() {
        bail!("nothing to chart for {}", path.display());
    }
    let all = b
        .values
        .iter()
        .flatten()
        .flatten()
        .flat_map(|s| [s.p50, s.p99, s.max])
        .chain(b.hline.iter().map(|h| h.1));
    let (lo, hi) = y_bounds(all, b.log_y);
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(ctx)?;
    let ng = b.groups.len();
    let ns = b.series.len();
    let xr = -0.5f64..(ng as f64 - 0.5);
    let groups = b.groups.clone();
    let fmt = move |x: &f64| -> String {
        let r = x.round();
        if (x - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < groups.len() {
            groups[r as usize].clone()
        } else {
            String::new()
        }
    };
    let mut cb = ChartBuilder::on(&root);
    cb.caption(&b.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(ng + 1)
                .x_label_formatter(&fmt)
                .y_label_formatter(&|y| tick(*y))
                .y_desc(b.y_desc)
                .label_style(("sans-serif", 16))
                .draw()
                .map_err(ctx)?;
            let slot = 0.8 / ns as f64;
            for (si, name) in b.series.iter().enumerate() {
                let color = palette(si);
                let mut first = true;
                for (gi, row) in b.values.iter().enumerate() {
                    let Some(s) = row.get(si).copied().flatten() else {
                        continue;
                    };
                    if !s.p50.is_finite() {
                        continue;
                    }
                    let x0 = gi as f64 - 0.4 + si as f64 * slot;
                    let x1 = x0 + slot * 0.9;
                    let xm = (x0 + x1) / 2.0;
                    let bar = chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x0, lo), (x1, s.p50.max(lo))],
                            color.filled(),
                        )))
                        .map_err(ctx)?;
                    if first {
                        bar.label(name.as_str()).legend(move |(x, y)| {
                            Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                        });
                        first = false;
                    }
                    chart
                        .draw_series(std::iter::once(Text::new(
                            tick(s.p50),
                            (x0, s.p50.max(lo)),
                            ("sans-serif", 14).into_font().color(&BLACK).pos(
                                plotters::style::text_anchor::Pos::new(
                                    plotters::style::text_anchor::HPos::Left,
                                    plotters::style::text_anchor::VPos::Bottom,
                                ),
                            ),
                        )))
                        .map_err(ctx)?;
                    let q = (x1 - x0) / 4.0;
                    chart
                        .draw_series([
                            PathElement::new(
                                vec![(xm, s.p50.max(lo)), (xm, s.p99.max(lo))],
                                BLACK.stroke_width(2),
                            ),
                            PathElement::new(
                                vec![(xm - q, s.p99.max(lo)), (xm + q, s.p99.max(lo))],
                                BLACK.stroke_width(2),
                            ),
                        ])
                        .map_err(ctx)?;
                    if s.max > s.p99 {
                        chart
                            .draw_series(std::iter::once(Circle::new(
                                (xm, s.max),
                                3,
                                BLACK.filled(),
                            )))
                            .map_err(ctx)?;
                    }
                }
            }
            if let Some((label, v)) = &b.hline {
                let v = *v;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(-0.5, v), (ng as f64 - 0.5, v)],
                        RGBColor(90, 90, 90).stroke_width(2),
                    )))
                    .map_err(ctx)?
                    .label(label.as_str())
                    .legend(|(x, y)| {
                        PathElement::new(
                            vec![(x, y), (x + 14, y)],
                            RGBColor(90, 90, 90).stroke_width(2),
                        )
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 16))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(ctx)?;
        }};
    }
    if b.log_y {
        draw!(cb
            .build_cartesian_2d(xr, (lo..hi).log_scale())
            .map_err(ctx)?);
    } else {
        draw!(cb.build_cartesian_2d(xr, lo..hi).map_err(ctx)?);
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// One line of a [`lines`] chart: p50 over x with p99 whiskers.
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, Stats)>,
    /// Drawn as markers only (a reference, e.g. published figures).
    pub(crate) markers_only: bool,
}

/// Lines of p50 over x (e.g. children per spawn), whiskers to p99.
pub(crate) fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Line],
    hline: Option<(String, f64)>,
) -> Result<PathBuf> {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    if xs.is_empty() {
        bail!("nothing to chart for {}", path.display());
    }
    let xmax = xs.iter().copied().fold(1.0, f64::max);
    let (_, hi) = y_bounds(
        series
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1.p99))
            .chain(hline.iter().map(|h| h.1)),
        false,
    );
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(ctx)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax + 1.0, 0f64..hi)
        .map_err(ctx)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| tick(*y))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(ctx)?;
    for (i, l) in series.iter().enumerate() {
        let color = palette(i);
        let mut pts: Vec<(f64, f64)> = l
            .points
            .iter()
            .filter(|p| p.1.p50.is_finite())
            .map(|p| (p.0, p.1.p50))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if l.markers_only {
            chart
                .draw_series(pts.iter().map(|p| Cross::new(*p, 7, color.stroke_width(3))))
                .map_err(ctx)?
                .label(l.name.as_str())
                .legend(move |(x, y)| Cross::new((x + 7, y), 6, color.stroke_width(3)));
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
            .map_err(ctx)?
            .label(l.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(ctx)?;
        let q = (xmax + 1.0) / 150.0;
        for (x, s) in l.points.iter().filter(|p| p.1.p50.is_finite()) {
            chart
                .draw_series([
                    PathElement::new(vec![(*x, s.p50), (*x, s.p99)], color.stroke_width(2)),
                    PathElement::new(
                        vec![(*x - q, s.p99), (*x + q, s.p99)],
                        color.stroke_width(2),
                    ),
                ])
                .map_err(ctx)?;
        }
    }
    if let Some((label, v)) = hline {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, v), (xmax + 1.0, v)],
                RGBColor(90, 90, 90).stroke_width(2),
            )))
            .map_err(ctx)?
            .label(label)
            .legend(|(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 14, y)],
                    RGBColor(90, 90, 90).stroke_width(2),
                )
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(ctx)?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::stats;

    /// Renders both chart kinds with the default font when it is installed
    /// (CI installs fonts-dejavu-core) and checks a PNG came out.
    #[test]
    fn renders_png() {
        if !Path::new(DEFAULT_FONT).exists() {
            eprintln!(
                "SKIP chart test: no font at {DEFAULT_FONT} (apt-get install fonts-dejavu-core)"
            );
            return;
        }
        load_font(Path::new(DEFAULT_FONT)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = |v: &[f64]| Some(stats(v.to_vec()));
        let p = bars(
            &dir.path().join("b.png"),
            &Bars {
                title: "pause".into(),
                y_desc: "ms",
                groups: vec!["idle".into(), "rewrite".into()],
                series: vec!["copy".into(), "live".into()],
                values: vec![
                    vec![s(&[60.0, 70.0]), s(&[6.0, 24.0])],
                    vec![s(&[90.0]), None],
                ],
                log_y: true,
                hline: Some(("cold boot".into(), 4000.0)),
            },
        )
        .unwrap();
        let png = std::fs::read(p).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let l = lines(
            &dir.path().join("l.png"),
            "spawn",
            "children",
            "ms",
            &[Line {
                name: "cow".into(),
                points: vec![(1.0, stats(vec![250.0])), (4.0, stats(vec![600.0, 700.0]))],
                markers_only: false,
            }],
            None,
        )
        .unwrap();
        assert!(std::fs::metadata(l).unwrap().len() > 1000);
    }

    #[test]
    fn missing_font_says_what_to_do() {
        let e = read_font(Path::new("/nonexistent/font.ttf")).unwrap_err();
        assert!(
            e.contains("/nonexistent/font.ttf")
                && e.contains("fonts-dejavu-core")
                && e.contains("--font"),
            "{e}"
        );
    }
}
