//! Results: one row per measured run, printed as a table, written as JSON,
//! and drawn as SVG charts (written by hand: a few rectangles, lines and
//! labels need no plotting library).

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::RunResult;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// What is being compared: `memory`, `redis`, `etcd`, `postgres`,
    /// `scale`.
    pub(crate) group: String,
    /// `sidecar-http`, `sidecar-grpc`, `sidecar-grpc-v1`, `raw-redis`,
    /// `redis-benchmark`, ...
    pub(crate) target: String,
    pub(crate) workload: String,
    pub(crate) clients: usize,
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
    /// Requests that got their lock, release or renewal.
    pub(crate) succeeded: u64,
    pub(crate) errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
    /// The sidecar's CPU (user + system) per request, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sidecar_cpu_us_per_op: Option<f64>,
    /// The backend server's CPU per request, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend_cpu_us_per_op: Option<f64>,
    /// The load generator's own CPU per request, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bench_cpu_us_per_op: Option<f64>,
    /// CPU used by other processes on the machine during the run, in % of
    /// one CPU (a noisy neighbour shows up here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) other_cpu_pct: Option<f64>,
    /// The sidecar's resident memory after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sidecar_rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

impl Row {
    pub(crate) fn from_run(
        group: &str,
        target: &str,
        workload: &str,
        clients: usize,
        result: &RunResult,
    ) -> Row {
        let h = &result.latency;
        let empty = h.is_empty();
        let at = |q: f64| {
            if empty {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Row {
            group: group.to_owned(),
            target: target.to_owned(),
            workload: workload.to_owned(),
            clients,
            requests: result.requests,
            seconds: result.elapsed.as_secs_f64(),
            ops_per_sec: result.ops_per_sec(),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: if empty { 0.0 } else { ms(h.max()) },
            mean_ms: if empty { 0.0 } else { h.mean() / 1e6 },
            succeeded: result.acquired,
            errors: result.errors,
            first_error: result.first_error.clone(),
            sidecar_cpu_us_per_op: None,
            backend_cpu_us_per_op: None,
            bench_cpu_us_per_op: None,
            other_cpu_pct: None,
            sidecar_rss_mb: None,
            note: None,
        }
    }
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The header of the printed table.
pub(crate) fn table_header() -> String {
    format!(
        "{:<9} {:<16} {:<12} {:>4} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "group",
        "target",
        "workload",
        "c",
        "ops/s",
        "p50ms",
        "p90ms",
        "p99ms",
        "p99.9",
        "max",
        "sc-cpu",
        "be-cpu",
        "lg-cpu",
        "other%",
        "errors"
    )
}

/// One printed line.
pub(crate) fn table_line(row: &Row) -> String {
    format!(
        "{:<9} {:<16} {:<12} {:>4} {:>9.0} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.2} {:>7} {:>7} {:>7} {:>6} {:>6}",
        row.group,
        row.target,
        row.workload,
        row.clients,
        row.ops_per_sec,
        row.p50_ms,
        row.p90_ms,
        row.p99_ms,
        row.p999_ms,
        row.max_ms,
        opt(row.sidecar_cpu_us_per_op, 1),
        opt(row.backend_cpu_us_per_op, 1),
        opt(row.bench_cpu_us_per_op, 1),
        opt(row.other_cpu_pct, 0),
        row.errors
    )
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round number at or above `value` for an axis top (1, 2 or 5 × 10^n).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * power >= value {
            return step * power;
        }
    }
    10.0 * power
}

/// One line of a line chart: a name and (x, y) points.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// Throughput against clients: x on a log2 scale (1, 2, 4, ... clients),
/// y linear from 0.
pub(crate) fn line_chart_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> String {
    let (width, height) = (760.0, 420.0);
    let (left, right, top, bottom) = (80.0, 200.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let x_max = xs.iter().copied().fold(0.0, f64::max).max(x_min * 2.0);
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x_at = |x: f64| left + (x.log2() - x_min.log2()) / (x_max.log2() - x_min.log2()) * plot_w;
    let y_at = |y: f64| top + plot_h - y / y_max * plot_h;
    let mut svg = svg_open(width, height, title);
    // Grid and y ticks.
    for i in 0..=5 {
        let y = y_max * f64::from(i) / 5.0;
        let py = y_at(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            py + 4.0,
            human(y)
        );
    }
    // X ticks at every distinct x.
    let mut ticks = xs;
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in &ticks {
        let px = x_at(*x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{x}</text>"##,
            top + plot_h,
            top + plot_h + 18.0
        );
    }
    axes(&mut svg, left, top, plot_w, plot_h, x_label, y_label);
    for (index, s) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_at(x), y_at(y)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"##,
                x_at(x),
                y_at(y)
            );
        }
        legend(
            &mut svg,
            width - right + 15.0,
            top + 20.0 * index as f64,
            color,
            &s.name,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One group of bars: a name and one value per category.
#[derive(Debug)]
pub(crate) struct BarGroup {
    pub(crate) name: String,
    pub(crate) values: Vec<f64>,
}

/// Grouped bars (latency percentiles per target) on a log10 y axis, since
/// p50 and p99.9 differ by orders of magnitude.
pub(crate) fn bar_chart_svg(
    title: &str,
    y_label: &str,
    categories: &[&str],
    groups: &[BarGroup],
) -> String {
    let (width, height) = (860.0, 440.0);
    let (left, right, top, bottom) = (80.0, 130.0, 40.0, 90.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let all: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.values.iter().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let lo = 10f64.powf(
        all.iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .log10()
            .floor(),
    );
    let hi = 10f64.powf(all.iter().copied().fold(0.0, f64::max).log10().ceil());
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.01, 10.0)
    };
    let y_at = |v: f64| {
        let v = v.max(lo);
        top + plot_h - (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * plot_h
    };
    let mut svg = svg_open(width, height, title);
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let py = y_at(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            py + 4.0,
            human(decade)
        );
        decade *= 10.0;
    }
    axes(&mut svg, left, top, plot_w, plot_h, "", y_label);
    let slot = plot_w / groups.len().max(1) as f64;
    let bar = (slot * 0.8) / categories.len().max(1) as f64;
    for (gi, group) in groups.iter().enumerate() {
        let x0 = left + slot * gi as f64 + slot * 0.1;
        for (ci, value) in group.values.iter().enumerate() {
            let color = PALETTE[ci % PALETTE.len()];
            let y = y_at(*value);
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: {value:.3}</title></rect>"##,
                x0 + bar * ci as f64,
                bar - 1.0,
                (top + plot_h - y).max(0.0),
                escape(&group.name),
                categories.get(ci).copied().unwrap_or("")
            );
        }
        let cx = x0 + slot * 0.4;
        let cy = top + plot_h + 14.0;
        let _ = writeln!(
            svg,
            r##"<text x="{cx:.1}" y="{cy:.1}" text-anchor="end" transform="rotate(-30 {cx:.1} {cy:.1})">{}</text>"##,
            escape(&group.name)
        );
    }
    for (ci, category) in categories.iter().enumerate() {
        legend(
            &mut svg,
            width - right + 15.0,
            top + 20.0 * ci as f64,
            PALETTE[ci % PALETTE.len()],
            category,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn svg_open(width: f64, height: f64, title: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{:.1}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"##,
        width / 2.0,
        escape(title)
    )
}

fn axes(svg: &mut String, left: f64, top: f64, w: f64, h: f64, x_label: &str, y_label: &str) {
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="black"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"##,
        top + h,
        top + h,
        left + w,
        top + h
    );
    if !x_label.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            left + w / 2.0,
            top + h + 38.0,
            escape(x_label)
        );
    }
    let cy = top + h / 2.0;
    let _ = writeln!(
        svg,
        r##"<text x="18" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 18 {cy:.1})">{}</text>"##,
        escape(y_label)
    );
}

fn legend(svg: &mut String, x: f64, y: f64, color: &str, name: &str) {
    let _ = writeln!(
        svg,
        r##"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
        y - 10.0,
        x + 18.0,
        y,
        escape(name)
    );
}

/// 12000 → "12k", 0.05 → "0.05".
fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if value >= 1e3 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(73_000.0), 100_000.0);
        assert_eq!(nice_ceiling(12_000.0), 20_000.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(human(20_000.0), "20k");
        assert_eq!(human(0.01), "0.01");
    }

    #[test]
    fn charts_are_well_formed() {
        let line = line_chart_svg(
            "t",
            "clients",
            "ops/s",
            &[Series {
                name: "a<b".into(),
                points: vec![(1.0, 10.0), (4.0, 30.0)],
            }],
        );
        assert!(line.starts_with("<svg") && line.trim_end().ends_with("</svg>"));
        assert!(line.contains("a&lt;b"));
        let bars = bar_chart_svg(
            "t",
            "ms",
            &["p50", "p99"],
            &[BarGroup {
                name: "x".into(),
                values: vec![0.05, 0.4],
            }],
        );
        assert!(bars.contains("<rect") && bars.trim_end().ends_with("</svg>"));
    }
}
