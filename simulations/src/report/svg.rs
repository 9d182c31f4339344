//! Hand-written SVG charts: line charts with fault periods shaded, the
//! convergence CDF over the analytic epidemic curve, timelines.

use std::fmt::Write as _;

use crate::model::epidemic_curve;

pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) color: &'static str,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) dashed: bool,
    pub(crate) step: bool,
}

pub(crate) const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub(crate) fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

pub(crate) fn chart(
    title: &str,
    xl: &str,
    yl: &str,
    series: &[Series],
    shade: &[(f64, f64, String)],
    x_max: Option<f64>,
) -> String {
    let (w, h, l, r, t, b) = (760.0, 360.0, 70.0, 170.0, 36.0, 46.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xmax = x_max.unwrap_or_else(|| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(0.0, f64::max)
    });
    let xmax = nice_max(xmax);
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let sx = |x: f64| l + (x / xmax).clamp(0.0, 1.0) * pw;
    let sy = |y: f64| t + ph - (y / ymax).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        esc(title)
    );
    for (a, bb, label) in shade {
        let (x0, x1) = (sx(*a), sx(*bb));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{t}" width="{:.1}" height="{ph}" fill="#f4a261" fill-opacity="0.18"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            esc(label)
        );
    }
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let py = sy(y);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            py + 4.0,
            fmt_axis(y)
        );
        let x = xmax * i as f64 / 5.0;
        let px = sx(x);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{}" y2="{}" stroke="#999"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 4.0,
            t + ph + 16.0,
            fmt_axis(x)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        h - 8.0,
        esc(xl)
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
        t + ph / 2.0,
        t + ph / 2.0,
        esc(yl)
    );
    for (i, se) in series.iter().enumerate() {
        let mut d = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &se.points {
            if !y.is_finite() {
                prev = None;
                continue;
            }
            let (px, py) = (sx(x), sy(y));
            match prev {
                None => {
                    let _ = write!(d, "M{px:.1},{py:.1}");
                }
                Some((_, ppy)) if se.step => {
                    let _ = write!(d, "L{px:.1},{ppy:.1}L{px:.1},{py:.1}");
                }
                Some(_) => {
                    let _ = write!(d, "L{px:.1},{py:.1}");
                }
            }
            prev = Some((px, py));
        }
        let dash = if se.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.6"{dash}/>"#,
            se.color
        );
        let ly = t + 14.0 + i as f64 * 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            l + pw + 10.0,
            l + pw + 30.0,
            se.color,
            l + pw + 34.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    if !shade.is_empty() {
        let ly = t + 14.0 + series.len() as f64 * 16.0;
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="20" height="10" fill="#f4a261" fill-opacity="0.35"/><text x="{}" y="{}">fault in force</text>"##,
            l + pw + 10.0,
            ly - 5.0,
            l + pw + 34.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

pub(crate) fn fmt_axis(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Fault periods (ms) as shaded spans in seconds.
pub(crate) fn shades(periods: &[(u64, u64, String)]) -> Vec<(f64, f64, String)> {
    periods
        .iter()
        .map(|(a, b, l)| (*a as f64 / 1000.0, *b as f64 / 1000.0, l.clone()))
        .collect()
}

/// The convergence CDF of `reach_ms` (sorted, ms from acknowledgement to
/// every node) drawn over the analytic epidemic curve for `nodes` nodes,
/// mesh degree `degree`, loss `loss` and one hop per `hop_ms`.
pub(crate) fn convergence_cdf_svg(
    reach_ms: &[u64],
    nodes: usize,
    degree: usize,
    loss: f64,
    hop_ms: f64,
    title: &str,
) -> String {
    let n = reach_ms.len();
    let measured: Vec<(f64, f64)> = reach_ms
        .iter()
        .enumerate()
        .map(|(i, v)| (*v as f64, (i + 1) as f64 / n.max(1) as f64))
        .collect();
    let curve = epidemic_curve(nodes, degree, loss, 200);
    let analytic: Vec<(f64, f64)> = curve
        .iter()
        .enumerate()
        .map(|(i, f)| (i as f64 * hop_ms, *f))
        .collect();
    let xmax = measured
        .get(((n as f64 * 0.99) as usize).min(n.saturating_sub(1)))
        .map(|p| p.0)
        .unwrap_or(0.0)
        .max(analytic.last().map_or(1.0, |p| p.0))
        * 1.1;
    let series = vec![
        Series {
            name: format!("analytic (N={nodes}, D={degree}, p={loss})"),
            color: "#999",
            points: analytic,
            dashed: true,
            step: false,
        },
        Series {
            name: format!("measured ({n} writes)"),
            color: COLORS[0],
            points: measured,
            dashed: false,
            step: true,
        },
    ];
    chart(
        title,
        "ms after acknowledgement (to p99)",
        "fraction of writes (analytic: of nodes)",
        &series,
        &[],
        Some(xmax),
    )
}

/// One line of [`timeline_svg`]: (name, points, dashed, drawn as steps).
pub(crate) type Line = (String, Vec<(f64, f64)>, bool, bool);

/// Lines over time (seconds on x), fault periods (ms) shaded.
pub(crate) fn timeline_svg(
    title: &str,
    xl: &str,
    yl: &str,
    lines: Vec<Line>,
    faults: &[(u64, u64, String)],
) -> String {
    let series: Vec<Series> = lines
        .into_iter()
        .enumerate()
        .map(|(i, (name, points, dashed, step))| Series {
            name,
            color: COLORS[i % COLORS.len()],
            points,
            dashed,
            step,
        })
        .collect();
    chart(title, xl, yl, &series, &shades(faults), None)
}
