//! The pictures the report and the card show, as hand-written SVG: the search's progress
//! (`search.svg`) here, with the primitives (round ticks, escaping, colours) that the
//! front's plot (`front.svg`) shares, so every picture reads the same way.
//!
//! `search.svg` keeps apart what was measured on different items: the left panel is the
//! search on its own items (every full-budget trial as a dot, the best so far as a line
//! that never goes down, the chosen candidate ringed); the right panel is the table's rows
//! (base, siblings, baselines, tailored) on the items the table reports, with their
//! standard errors and the chance level.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::score::{Metric, ModelResult, ResultKind};

/// One trial as the progress panel draws it: its guiding objective on the search's items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrialPoint {
    /// 0-based trial index.
    pub trial: usize,
    /// Items per task the value is based on.
    pub budget: usize,
    /// Kept layers (a front searches several depths).
    pub layers: usize,
    /// The guiding objective (higher is better; accuracy as a fraction).
    pub value: f64,
}

/// Line colours, in order of use.
pub const COLOURS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
/// The mark of a chosen or picked candidate.
pub const CHOSEN: &str = "#d62728";

/// XML-escaped text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Tick values from `lo` to `hi` at a round step (1, 2 or 5 times a power of ten) giving
/// about `target` intervals; the first and last ticks enclose the range.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-9);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    (first as i64..=last as i64).map(|k| k as f64 * step).collect()
}

/// A tick value without a trailing `.0` for whole numbers (and without float noise).
pub fn round_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A parameter count as an axis label: `250K`, `1.5M` (no `.0` on round ticks).
pub fn count_label(v: f64) -> String {
    let (d, unit) = if v >= 1e9 {
        (1e9, "B")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "K")
    } else {
        (1.0, "")
    };
    format!("{}{unit}", round_label(v / d))
}

/// What the progress panel's y axis shows for `metric`, and the value in those units.
fn axis(metric: Metric) -> (&'static str, fn(f64) -> f64) {
    match metric {
        Metric::Acc | Metric::AccNorm => ("mean accuracy (%)", |v| 100.0 * v),
        Metric::Loglik => ("log-likelihood of the correct choice (nats/token)", |v| v),
        Metric::Margin => ("margin over the best wrong choice (nats/token)", |v| v),
        Metric::Ppl => ("log-likelihood of the texts (nats/token)", |v| v),
    }
}

/// The best value so far after each trial among `points` at `budget` and `layers`, as
/// (trial, best) steps: it only ever rises.
pub fn best_so_far(points: &[TrialPoint], layers: usize, budget: usize) -> Vec<(usize, f64)> {
    let mut steps: Vec<(usize, f64)> = Vec::new();
    for p in points.iter().filter(|p| p.layers == layers && p.budget == budget) {
        match steps.last() {
            Some(&(_, best)) if p.value <= best => {}
            _ => steps.push((p.trial, p.value)),
        }
    }
    steps
}

/// What `search.svg` shows.
pub struct SearchPicture<'a> {
    /// The metric that guided the search (the progress panel's y axis).
    pub metric: Metric,
    /// Every trial that was scored, in order.
    pub trials: &'a [TrialPoint],
    /// Trials that were chosen (one per depth of a front; the first is the result).
    pub chosen: &'a [usize],
    /// How the final choice was made, in a few words (legend).
    pub chosen_how: &'a str,
    /// The table's rows and what they were measured on (the right panel's title).
    pub rows: &'a [ModelResult],
    pub rows_title: &'a str,
    /// Guessing accuracy over the rows' tasks, when known.
    pub chance: Option<f64>,
}

/// `search.svg`: the search's progress on its own items (left) and the table's rows on
/// theirs (right); see the module docs.
pub fn search_svg(p: &SearchPicture<'_>) -> String {
    let (w, h) = (940.0, 470.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    progress_panel(&mut s, p, (70.0, 520.0, 50.0, 360.0));
    if !p.rows.is_empty() {
        rows_panel(&mut s, p, (690.0, 910.0, 50.0, 360.0));
    }
    s.push_str("</svg>\n");
    s
}

/// The left panel in the box (left, right, top, bottom) of its plot area.
fn progress_panel(s: &mut String, p: &SearchPicture<'_>, (left, right, top, bottom): (f64, f64, f64, f64)) {
    let (label, unit) = axis(p.metric);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="14" font-weight="bold" text-anchor="middle">The search on its own items: best so far</text>"#,
        (left + right) / 2.0
    );
    // Each depth's curve at the highest budget that depth reached (what the choice compares).
    let mut depths: Vec<usize> = p.trials.iter().map(|t| t.layers).collect();
    depths.sort_unstable();
    depths.dedup();
    let top_budget = |k: usize| p.trials.iter().filter(|t| t.layers == k).map(|t| t.budget).max().unwrap_or(0);
    let full: Vec<&TrialPoint> = p.trials.iter().filter(|t| t.budget == top_budget(t.layers)).collect();
    let n = p.trials.iter().map(|t| t.trial + 1).max().unwrap_or(1).max(1);
    let ys: Vec<f64> = full.iter().map(|t| unit(t.value)).collect();
    let (mut lo, mut hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let yt = nice_ticks(lo, hi, 5);
    let (y0, y1) = (yt[0], *yt.last().expect("at least one tick"));
    let xt: Vec<f64> = nice_ticks(1.0, n as f64, 5).into_iter().filter(|t| *t >= 1.0 && *t <= n as f64).collect();
    let x = |t: usize| left + (right - left) * if n > 1 { t as f64 / (n as f64 - 1.0) } else { 0.5 };
    let y = |v: f64| top + (bottom - top) * (1.0 - (unit(v) - y0) / (y1 - y0).max(1e-12));
    frame(s, (left, right, top, bottom), &yt, |v| top + (bottom - top) * (1.0 - (v - y0) / (y1 - y0).max(1e-12)));
    for t in &xt {
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x(*t as usize - 1), bottom + 18.0, round_label(*t));
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">trial</text>"#, (left + right) / 2.0, bottom + 36.0);
    let mid = (top + bottom) / 2.0;
    let _ = writeln!(s, r#"<text x="16" y="{mid}" font-size="11" text-anchor="middle" transform="rotate(-90 16 {mid})">{}</text>"#, esc(label));
    for t in &full {
        let _ = writeln!(s, r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#9a9a9a"/>"##, x(t.trial), y(t.value));
    }
    let many = depths.len() > 1;
    let mut labels: Vec<(f64, String, &str)> = Vec::new();
    for (i, &k) in depths.iter().enumerate() {
        let steps = best_so_far(p.trials, k, top_budget(k));
        let Some(&(first, v0)) = steps.first() else { continue };
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = format!("M{:.1} {:.1}", x(first), y(v0));
        for &(t, v) in &steps[1..] {
            let _ = write!(d, " H{:.1} V{:.1}", x(t), y(v));
        }
        let _ = write!(d, " H{:.1}", x(n - 1));
        let _ = writeln!(s, r#"<path d="{d}" stroke="{colour}" stroke-width="2.5" fill="none"/>"#);
        if many {
            let (_, last) = *steps.last().expect("non-empty");
            labels.push((y(last) + 4.0, format!("{k} layers"), colour));
        }
    }
    // Depth labels at the lines' right ends, pushed apart where lines lie close.
    labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut last_y = f64::NEG_INFINITY;
    for (ly, text, colour) in labels {
        let ly = ly.max(last_y + 13.0);
        last_y = ly;
        let _ = writeln!(s, r#"<text x="{:.1}" y="{ly:.1}" fill="{colour}">{text}</text>"#, right + 6.0);
    }
    for &c in p.chosen {
        if let Some(t) = p.trials.iter().find(|t| t.trial == c) {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="6" fill="none" stroke="{CHOSEN}" stroke-width="2"/>"#, x(t.trial), y(t.value));
        }
    }
    // Legend under the axis title.
    let budgets: Vec<String> = {
        let mut b: Vec<usize> = depths.iter().map(|&k| top_budget(k)).collect();
        b.dedup();
        b.iter().map(|b| b.to_string()).collect()
    };
    let ly = bottom + 58.0;
    let line = if many { "best so far at each depth (coloured by depth)".to_string() } else { "best so far (never goes down)".to_string() };
    let _ = writeln!(s, r#"<rect x="{left}" y="{:.1}" width="16" height="3" fill="{}"/>"#, ly - 5.0, COLOURS[0]);
    let _ = writeln!(s, r#"<text x="{}" y="{ly:.1}">{}</text>"#, left + 22.0, esc(&line));
    let _ = writeln!(s, r##"<circle cx="{}" cy="{:.1}" r="2.5" fill="#9a9a9a"/>"##, left + 8.0, ly + 14.0);
    let lower = if p.trials.len() > full.len() { format!("; {} at lower budgets not shown", p.trials.len() - full.len()) } else { String::new() };
    let _ =
        writeln!(s, r#"<text x="{}" y="{:.1}">a trial scored on {} items per task{}</text>"#, left + 22.0, ly + 18.0, budgets.join("/"), esc(&lower));
    if !p.chosen.is_empty() {
        let _ = writeln!(s, r#"<circle cx="{}" cy="{:.1}" r="6" fill="none" stroke="{CHOSEN}" stroke-width="2"/>"#, left + 8.0, ly + 32.0);
        let _ = writeln!(s, r#"<text x="{}" y="{:.1}">{}</text>"#, left + 22.0, ly + 36.0, esc(p.chosen_how));
    }
}

/// The right panel: each row's mean accuracy with ± one standard error, chance dashed.
fn rows_panel(s: &mut String, p: &SearchPicture<'_>, (left, right, top, bottom): (f64, f64, f64, f64)) {
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0 - 60.0,
        esc(p.rows_title)
    );
    let vals: Vec<f64> =
        p.rows.iter().flat_map(|r| [100.0 * (r.mean() - r.mean_se()), 100.0 * (r.mean() + r.mean_se())]).chain(p.chance.map(|c| 100.0 * c)).collect();
    let (lo, hi) = vals.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    let xt = nice_ticks(lo.max(0.0), hi.min(100.0), 4);
    let (x0, x1) = (xt[0], *xt.last().expect("tick"));
    let x = |v: f64| left + (right - left) * (100.0 * v - x0) / (x1 - x0).max(1e-9);
    let _ = writeln!(s, r##"<path d="M{left} {top} V{bottom} H{right}" stroke="#333" fill="none"/>"##);
    for v in &xt {
        let xv = left + (right - left) * (v - x0) / (x1 - x0).max(1e-9);
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" x2="{xv:.1}" y1="{top}" y2="{bottom}" stroke="#eee"/><text x="{xv:.1}" y="{}" text-anchor="middle">{}</text>"##,
            bottom + 18.0,
            round_label(*v)
        );
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">mean accuracy (%)</text>"#, (left + right) / 2.0, bottom + 36.0);
    if let Some(c) = p.chance {
        let xc = x(c);
        let _ = writeln!(s, r##"<line x1="{xc:.1}" x2="{xc:.1}" y1="{top}" y2="{bottom}" stroke="#777" stroke-dasharray="4 3"/>"##);
        let _ = writeln!(
            s,
            r##"<text x="{xc:.1}" y="{}" font-size="11" text-anchor="middle" fill="#555">chance {} %</text>"##,
            top - 6.0,
            round_label(100.0 * c)
        );
    }
    let step = ((bottom - top) / (p.rows.len() as f64 + 1.0)).min(36.0);
    for (i, r) in p.rows.iter().enumerate() {
        let yv = top + step * (i as f64 + 1.0);
        let (colour, weight) = match r.kind {
            ResultKind::Tailored => (CHOSEN, "bold"),
            ResultKind::Baseline => ("#ff7f0e", "normal"),
            _ => ("#333", "normal"),
        };
        let _ = writeln!(s, r#"<text x="{}" y="{:.1}" text-anchor="end" font-weight="{weight}">{}</text>"#, left - 8.0, yv + 4.0, esc(&r.label));
        let se = r.mean_se();
        if se > 0.0 {
            // The bar with end caps, so that an error as small as the dot still shows.
            let (a, b, y0, y1) = (x(r.mean() - se), x(r.mean() + se), yv - 5.0, yv + 5.0);
            let _ = writeln!(
                s,
                r#"<path d="M{a:.1} {y0:.1} V{y1:.1} M{a:.1} {yv:.1} H{b:.1} M{b:.1} {y0:.1} V{y1:.1}" stroke="{colour}" stroke-width="1.5" fill="none"/>"#
            );
        }
        let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{yv:.1}" r="3" fill="{colour}"/>"#, x(r.mean()));
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="{colour}">{:.1}</text>"#,
            x(r.mean()),
            yv - 8.0,
            100.0 * r.mean()
        );
    }
    let ly = bottom + 58.0;
    let _ = writeln!(s, r##"<circle cx="{}" cy="{:.1}" r="3" fill="#333"/>"##, left - 70.0, ly - 4.0);
    let (a, b, y0, ym, y1) = (left - 80.0, left - 60.0, ly - 9.0, ly - 4.0, ly + 1.0);
    let _ =
        writeln!(s, r##"<path d="M{a} {y0:.1} V{y1:.1} M{a} {ym:.1} H{b} M{b} {y0:.1} V{y1:.1}" stroke="#333" stroke-width="1.5" fill="none"/>"##);
    let _ = writeln!(s, r#"<text x="{}" y="{ly:.1}">mean ± one standard error</text>"#, left - 52.0);
    let _ = writeln!(s, r#"<circle cx="{}" cy="{:.1}" r="3" fill="{CHOSEN}"/>"#, left - 70.0, ly + 14.0);
    let _ = writeln!(s, r#"<text x="{}" y="{:.1}">the tailored model</text>"#, left - 52.0, ly + 18.0);
}

/// A plain line chart of `curves` (one value per trial each, in %), one colour per curve
/// with a legend: the benchmarks' comparisons of optimisers.
pub fn lines_svg(title: &str, y_label: &str, curves: &[(String, Vec<f64>)]) -> String {
    let (w, h) = (760.0, 440.0);
    let (left, right, top, bottom) = (70.0, 590.0, 50.0, 380.0);
    let n = curves.iter().map(|c| c.1.len()).max().unwrap_or(1).max(1);
    let (lo, hi) = curves.iter().flat_map(|c| c.1.iter()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(100.0 * v), b.max(100.0 * v)));
    let yt = if lo.is_finite() { nice_ticks(lo, hi, 5) } else { vec![0.0, 100.0] };
    let (y0, y1) = (yt[0], *yt.last().expect("tick"));
    let x = |t: usize| left + (right - left) * if n > 1 { t as f64 / (n as f64 - 1.0) } else { 0.5 };
    let y = |v: f64| top + (bottom - top) * (1.0 - (v - y0) / (y1 - y0).max(1e-12));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="24" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#, (left + right) / 2.0, esc(title));
    frame(&mut s, (left, right, top, bottom), &yt, y);
    for t in nice_ticks(1.0, n as f64, 5).into_iter().filter(|t| *t >= 1.0 && *t <= n as f64) {
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x(t as usize - 1), bottom + 18.0, round_label(t));
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">trial</text>"#, (left + right) / 2.0, bottom + 36.0);
    let mid = (top + bottom) / 2.0;
    let _ = writeln!(s, r#"<text x="16" y="{mid}" text-anchor="middle" transform="rotate(-90 16 {mid})">{}</text>"#, esc(y_label));
    for (i, (label, values)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let d: Vec<String> =
            values.iter().enumerate().map(|(t, v)| format!("{}{:.1} {:.1}", if t == 0 { "M" } else { " L" }, x(t), y(100.0 * v))).collect();
        let _ = writeln!(s, r#"<path d="{}" stroke="{colour}" stroke-width="2" fill="none"/>"#, d.join(""));
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(s, r#"<rect x="{}" y="{:.1}" width="16" height="3" fill="{colour}"/>"#, right + 16.0, ly - 5.0);
        let _ = writeln!(s, r#"<text x="{}" y="{ly:.1}" fill="{colour}">{}</text>"#, right + 38.0, esc(label));
    }
    s.push_str("</svg>\n");
    s
}

/// Axes with horizontal grid lines and labelled y ticks (`y` maps a tick value to pixels).
fn frame(s: &mut String, (left, right, top, bottom): (f64, f64, f64, f64), yt: &[f64], y: impl Fn(f64) -> f64) {
    let _ = writeln!(s, r##"<path d="M{left} {top} V{bottom} H{right}" stroke="#333" fill="none"/>"##);
    for v in yt {
        let yv = y(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{right}" y1="{yv:.1}" y2="{yv:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 6.0,
            yv + 4.0,
            round_label(*v)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(trial: usize, budget: usize, value: f64) -> TrialPoint {
        TrialPoint { trial, budget, layers: 6, value }
    }

    #[test]
    fn the_best_so_far_never_goes_down_and_counts_only_the_full_budget() {
        // A lower-budget trial's high value and a later, lower full-budget value are not steps.
        let pts = [tp(0, 22, -1.0), tp(1, 200, -1.9), tp(2, 200, -2.5), tp(3, 22, -0.5), tp(4, 200, -1.8), tp(5, 200, -1.85)];
        assert_eq!(best_so_far(&pts, 6, 200), vec![(1, -1.9), (4, -1.8)]);
        assert!(best_so_far(&pts, 5, 200).is_empty());
    }

    #[test]
    fn ticks_and_labels_are_round() {
        assert_eq!(nice_ticks(41.7, 64.3, 5), vec![40.0, 45.0, 50.0, 55.0, 60.0, 65.0]);
        assert_eq!(nice_ticks(1.0, 120.0, 5), vec![0.0, 50.0, 100.0, 150.0]);
        assert_eq!(nice_ticks(0.0, 1.0, 4), vec![0.0, 0.5, 1.0]);
        assert_eq!(round_label(45.0), "45");
        assert_eq!(round_label(2.5), "2.5");
        assert_eq!(round_label(-1.85), "-1.85");
        assert_eq!(count_label(250_000.0), "250K");
        assert_eq!(count_label(1_500_000.0), "1.5M");
    }
}
