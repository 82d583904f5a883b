//! `plot.svg`: throughput (ok operations per second) and latency (p50 and p99 of the ok
//! operations completed in each second, log scale) over the run, with the fault intervals of
//! `nemesis.jsonl` shaded and labelled. Hand-written SVG: no plotting crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::history::{Event, Kind};

const WIDTH: f64 = 1100.0;
const PANEL_HEIGHT: f64 = 230.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;
/// Labels of fault intervals are staggered over this many rows.
const LABEL_ROWS: usize = 4;

/// One fault, from its start to its stop (seconds since the run started).
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub start_s: f64,
    pub stop_s: f64,
    pub label: String,
}

/// Pairs the `start` and `stop` records of `nemesis.jsonl`; a start without a stop lasts to
/// `end_s`.
pub fn intervals(nemesis_jsonl: &str, end_s: f64) -> Vec<Interval> {
    let mut out: Vec<Interval> = Vec::new();
    let mut open: Option<Interval> = None;
    for line in nemesis_jsonl.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let t = v["t_ns"].as_u64().unwrap_or(0) as f64 / 1e9;
        let fault = v["fault"].as_str().unwrap_or("?");
        match v["phase"].as_str() {
            Some("start") => {
                if let Some(mut i) = open.take() {
                    i.stop_s = t;
                    out.push(i);
                }
                let targets = v["targets"].to_string();
                open = Some(Interval {
                    start_s: t,
                    stop_s: end_s,
                    label: format!("{fault} {targets}"),
                });
            }
            Some("stop") => {
                if let Some(mut i) = open.take() {
                    i.stop_s = t;
                    out.push(i);
                }
            }
            _ => {}
        }
    }
    out.extend(open);
    out
}

/// Per second: (ok count, p50 ms, p99 ms) of the operations completed in it.
pub fn per_second(events: &[Event]) -> Vec<(u64, f64, f64)> {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut bins: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for e in events {
        match e.kind {
            Kind::Invoke => {
                invoked.insert(e.op, e.t_ns);
            }
            Kind::Ok => {
                if let Some(t0) = invoked.get(&e.op) {
                    let ms = e.t_ns.saturating_sub(*t0) as f64 / 1e6;
                    bins.entry(e.t_ns / 1_000_000_000).or_default().push(ms);
                }
            }
            _ => {}
        }
    }
    let last = bins.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|s| match bins.get_mut(&s) {
            Some(v) => {
                v.sort_by(f64::total_cmp);
                (v.len() as u64, quantile(v, 0.5), quantile(v, 0.99))
            }
            None => (0, 0.0, 0.0),
        })
        .collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn color(label: &str) -> &'static str {
    match label.split(['-', ' ']).next().unwrap_or("") {
        "partition" => "#e4572e",
        "kill" => "#8e44ad",
        "pause" => "#2e86de",
        "loss" => "#f39c12",
        "transfer" | "remove" => "#27ae60",
        "snapshot" => "#16a085",
        "corrupt" => "#7f8c8d",
        _ => "#95a5a6",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document.
pub fn render(bins: &[(u64, f64, f64)], faults: &[Interval], title: &str) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let height = TOP + 2.0 * PANEL_HEIGHT + GAP + 50.0;
    let span_s = faults
        .iter()
        .map(|f| f.stop_s)
        .fold(bins.len() as f64, f64::max)
        .max(1.0);
    let x = |s: f64| LEFT + s / span_s * plot_w;
    let top1 = TOP;
    let top2 = TOP + PANEL_HEIGHT + GAP;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14">{}</text>"#,
        escape(title)
    );
    for (k, f) in faults.iter().enumerate() {
        let (x0, x1) = (x(f.start_s), x(f.stop_s.max(f.start_s)));
        let w = (x1 - x0).max(1.0);
        for top in [top1, top2] {
            let _ = writeln!(
                svg,
                r#"<rect x="{x0:.1}" y="{top}" width="{w:.1}" height="{PANEL_HEIGHT}" fill="{}" fill-opacity="0.18"/>"#,
                color(&f.label)
            );
        }
        let y = top1 + 10.0 + (k % LABEL_ROWS) as f64 * 11.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{y}" font-size="9" fill="{}">{}</text>"#,
            x0 + 2.0,
            color(&f.label),
            escape(&f.label)
        );
    }
    throughput_panel(&mut svg, bins, &x, top1);
    latency_panel(&mut svg, bins, &x, top2);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the start</text>"#,
        LEFT + plot_w / 2.0,
        height - 10.0
    );
    for s in (0..=span_s as u64).step_by(tick_step(span_s)) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s}</text>"#,
            x(s as f64),
            top2 + PANEL_HEIGHT + 14.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn tick_step(span_s: f64) -> usize {
    match span_s as u64 {
        0..=60 => 5,
        61..=300 => 30,
        301..=1800 => 120,
        _ => 600,
    }
}

fn axes(svg: &mut String, top: f64, label: &str) {
    let right = WIDTH - RIGHT;
    let bottom = top + PANEL_HEIGHT;
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##,
        right - LEFT
    );
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{label}</text>"#,
        top + PANEL_HEIGHT / 2.0,
        top + PANEL_HEIGHT / 2.0
    );
    let _ = bottom;
}

fn polyline(svg: &mut String, points: &[(f64, f64)], stroke: &str) {
    let pts: Vec<String> = points
        .iter()
        .map(|(a, b)| format!("{a:.1},{b:.1}"))
        .collect();
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{stroke}" stroke-width="1.5" points="{}"/>"#,
        pts.join(" ")
    );
}

fn throughput_panel(svg: &mut String, bins: &[(u64, f64, f64)], x: &dyn Fn(f64) -> f64, top: f64) {
    axes(svg, top, "ok operations / s");
    let max = bins.iter().map(|b| b.0).max().unwrap_or(1).max(1) as f64;
    let y = |v: f64| top + PANEL_HEIGHT - v / max * (PANEL_HEIGHT - 50.0);
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"#,
            LEFT - 4.0,
            y(v) + 4.0
        );
    }
    let points: Vec<(f64, f64)> = bins
        .iter()
        .enumerate()
        .map(|(s, b)| (x(s as f64 + 0.5), y(b.0 as f64)))
        .collect();
    polyline(svg, &points, "#222");
}

fn latency_panel(svg: &mut String, bins: &[(u64, f64, f64)], x: &dyn Fn(f64) -> f64, top: f64) {
    axes(svg, top, "latency ms (log): p50, p99");
    let max = bins.iter().map(|b| b.2).fold(10.0, f64::max);
    let decades = max.log10().ceil().max(1.0);
    let y = |ms: f64| {
        let v = ms.max(0.1).log10() + 1.0; // 0.1 ms at the bottom
        top + PANEL_HEIGHT - v / (decades + 1.0) * PANEL_HEIGHT
    };
    let mut tick = 0.1;
    while tick <= 10f64.powf(decades) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{tick}</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            LEFT - 4.0,
            y(tick) + 4.0,
            WIDTH - RIGHT,
            y(tick),
            y(tick)
        );
        tick *= 10.0;
    }
    for (which, stroke) in [(1usize, "#2e86de"), (2, "#c0392b")] {
        let points: Vec<(f64, f64)> = bins
            .iter()
            .enumerate()
            .filter(|(_, b)| b.0 > 0)
            .map(|(s, b)| {
                let v = if which == 1 { b.1 } else { b.2 };
                (x(s as f64 + 0.5), y(v))
            })
            .collect();
        polyline(svg, &points, stroke);
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#2e86de">p50</text><text x="{:.1}" y="{:.1}" fill="#c0392b">p99</text>"##,
        WIDTH - RIGHT - 60.0,
        top + 14.0,
        WIDTH - RIGHT - 30.0,
        top + 14.0
    );
}

/// Writes `plot.svg` in the run directory from its history and `nemesis.jsonl`.
pub fn write(dir: &Path, events: &[Event], title: &str) -> std::io::Result<()> {
    let bins = per_second(events);
    let nemesis = std::fs::read_to_string(dir.join("nemesis.jsonl")).unwrap_or_default();
    let faults = intervals(&nemesis, bins.len() as f64);
    std::fs::write(dir.join("plot.svg"), render(&bins, &faults, title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_pair_starts_and_stops() {
        let log = r#"{"t_ns":1000000000,"phase":"start","fault":"loss","targets":[1],"detail":""}
{"t_ns":3000000000,"phase":"stop","fault":"loss","targets":[1],"detail":""}
{"t_ns":4000000000,"phase":"start","fault":"kill","targets":[2],"detail":""}"#;
        let got = intervals(log, 9.0);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].start_s, got[0].stop_s), (1.0, 3.0));
        assert_eq!(got[0].label, "loss [1]");
        assert_eq!((got[1].start_s, got[1].stop_s), (4.0, 9.0));
    }

    #[test]
    fn the_plot_is_an_svg_with_both_panels_and_the_faults() {
        let bins = vec![(10, 1.0, 5.0), (0, 0.0, 0.0), (12, 2.0, 900.0)];
        let faults = vec![Interval {
            start_s: 1.0,
            stop_s: 2.0,
            label: "partition-halves [1]".into(),
        }];
        let svg = render(&bins, &faults, "t <1>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("partition-halves [1]"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 3);
    }
}
