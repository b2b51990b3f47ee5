//! A size–quality front from one study: the search's space spans a range of depths, and
//! the result is the best candidate found at every depth (the Pareto front of parameters
//! against mean accuracy), with the pruning baselines at every depth beside it, and one
//! point picked for the build, the card and the push.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::human::human_count;
use crate::plot::{count_label, esc, nice_ticks, round_label, CHOSEN, COLOURS};
use crate::score::ModelResult;

/// Which point of the front the build, card and push use.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// The smallest model whose mean accuracy is within [`PICK_TOLERANCE`] of the best
    /// mean accuracy over the range.
    #[default]
    Smallest,
    /// The point with this many layers.
    Layers(usize),
    /// The most accurate point with at most this many parameters.
    MaxParams(u64),
}

/// The default pick's tolerance: one point of mean accuracy.
pub const PICK_TOLERANCE: f64 = 0.01;

/// The default pick in words (reports, help texts).
pub const PICK_RULE: &str =
    "The picked point is the smallest model whose mean accuracy is within 1 point of the best mean accuracy over the range (--pick K or --pick-max-params N choose another).";

/// One depth of the front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontPoint {
    pub layers: usize,
    /// 0-based trial index of the candidate.
    pub trial: usize,
    pub tailored: ModelResult,
    /// The baselines at this depth (ShortGPT, angular, SLEB), scored on the same items.
    pub baselines: Vec<ModelResult>,
    /// The recipe file written for this point (`front/keep-K.yaml`).
    pub recipe_file: String,
    pub picked: bool,
}

/// The front's folder and recipe file name for depth `k`.
pub const FRONT_DIR: &str = "front";
pub fn recipe_file(k: usize) -> String {
    format!("{FRONT_DIR}/keep-{k}.yaml")
}

/// The position in `points` (smallest first) that `pick` chooses, or why none fits.
pub fn pick(points: &[FrontPoint], pick: Pick) -> Result<usize, String> {
    if points.is_empty() {
        return Err("the front is empty".into());
    }
    match pick {
        Pick::Layers(k) => points.iter().position(|p| p.layers == k).ok_or_else(|| {
            format!("--pick {k}: the front has depths {}", points.iter().map(|p| p.layers.to_string()).collect::<Vec<_>>().join(", "))
        }),
        Pick::MaxParams(n) => points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.tailored.params <= n)
            .max_by(|a, b| a.1.tailored.mean().total_cmp(&b.1.tailored.mean()).then(b.1.tailored.params.cmp(&a.1.tailored.params)))
            .map(|(i, _)| i)
            .ok_or_else(|| format!("--pick-max-params {n}: no point of the front is that small (the smallest has {})", points[0].tailored.params)),
        Pick::Smallest => {
            let best = points.iter().map(|p| p.tailored.mean()).fold(f64::NEG_INFINITY, f64::max);
            Ok(points
                .iter()
                .enumerate()
                .filter(|(_, p)| p.tailored.mean() >= best - PICK_TOLERANCE - 1e-12)
                .min_by_key(|(_, p)| (p.tailored.params, p.layers))
                .map(|(i, _)| i)
                .expect("the best point is within its own tolerance"))
        }
    }
}

/// The front as a Markdown table: one row per depth, hf-tailor's mean and each baseline's.
pub fn markdown(points: &[FrontPoint]) -> String {
    let mut s = String::new();
    let kinds: Vec<String> = points.first().map(|p| p.baselines.iter().map(|b| b.label.clone()).collect()).unwrap_or_default();
    let heads: String = kinds.iter().map(|k| format!(" {k} |")).collect();
    let _ = writeln!(s, "| layers | params | hf-tailor mean ± s.e. |{heads} trial | recipe | picked |");
    let _ = writeln!(s, "|---:|---:|---:|{}---:|---|:---:|", "---:|".repeat(kinds.len()));
    for p in points {
        let b: Vec<String> = kinds.iter().map(|k| p.baselines.iter().find(|b| &b.label == k).map_or("–".into(), |b| b.mean_display())).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} |{} {} | `{}` | {} |",
            p.layers,
            human_count(p.tailored.params),
            p.tailored.mean_display(),
            b.iter().map(|x| format!(" {x} |")).collect::<String>(),
            p.trial + 1,
            p.recipe_file,
            if p.picked { "✓" } else { "" }
        );
    }
    s
}

/// At every depth, hf-tailor's candidate against each baseline at that depth: the
/// difference of mean accuracy with its standard error, called higher or lower only at two
/// standard errors or more (see [`crate::score::comparisons`]).
pub fn comparisons(points: &[FrontPoint]) -> Vec<String> {
    points
        .iter()
        .flat_map(|p| crate::score::comparisons(&std::iter::once(p.tailored.clone()).chain(p.baselines.iter().cloned()).collect::<Vec<_>>()))
        .collect()
}

/// [`svg`] with the base and siblings among `rows` as the points.
pub fn svg_with_rows(front: &[FrontPoint], rows: &[ModelResult]) -> String {
    let refs: Vec<(String, u64, f64)> = rows
        .iter()
        .filter(|r| matches!(r.kind, crate::score::ResultKind::Base | crate::score::ResultKind::Sibling))
        .map(|r| (r.label.clone(), r.params, r.mean()))
        .collect();
    svg(front, &refs)
}

/// Accuracy against parameters: the front and each baseline as curves, `points` (base
/// and siblings) as labelled dots.
pub fn svg(front: &[FrontPoint], refs: &[(String, u64, f64)]) -> String {
    let (w, h) = (760.0, 440.0);
    let (left, right, top, bottom) = (60.0, 200.0, 40.0, 50.0);
    let mut curves: Vec<(String, Vec<(f64, f64)>)> =
        vec![("hf-tailor".into(), front.iter().map(|p| (p.tailored.params as f64, p.tailored.mean())).collect())];
    let kinds: Vec<String> = front.first().map(|p| p.baselines.iter().map(|b| b.label.clone()).collect()).unwrap_or_default();
    for k in &kinds {
        curves.push((
            k.clone(),
            front.iter().filter_map(|p| p.baselines.iter().find(|b| &b.label == k).map(|b| (b.params as f64, b.mean()))).collect(),
        ));
    }
    let xs: Vec<f64> = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.0)).chain(refs.iter().map(|r| r.1 as f64)).collect();
    let ys: Vec<f64> = curves.iter().flat_map(|(_, c)| c.iter().map(|p| 100.0 * p.1)).chain(refs.iter().map(|r| 100.0 * r.2)).collect();
    let span = |v: &[f64]| v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
    let (xl, xh) = span(&xs);
    let (yl, yh) = span(&ys);
    if !xl.is_finite() || !yl.is_finite() {
        return String::from("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>\n");
    }
    let xt = nice_ticks(xl, xh, 5);
    let yt = nice_ticks(yl.max(0.0), yh.min(100.0), 5);
    let (x0, x1, y0, y1) = (xt[0], *xt.last().expect("tick"), yt[0], *yt.last().expect("tick"));
    let x = |v: f64| left + (w - left - right) * (v - x0) / (x1 - x0).max(1e-9);
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (100.0 * v - y0) / (y1 - y0).max(1e-9));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ =
        writeln!(s, r#"<text x="{}" y="22" font-size="15" text-anchor="middle">Mean accuracy against parameters</text>"#, (w - right + left) / 2.0);
    let _ = writeln!(s, r##"<path d="M{left} {top} V{} H{}" stroke="#333" fill="none"/>"##, h - bottom, w - right);
    for v in &yt {
        let yv = top + (h - top - bottom) * (1.0 - (v - y0) / (y1 - y0).max(1e-9));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yv:.1}" y2="{yv:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            yv + 4.0,
            round_label(*v)
        );
    }
    for v in &xt {
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x(*v), h - bottom + 18.0, count_label(*v));
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">parameters</text>"#, (w - right + left) / 2.0, h - 12.0);
    let _ = writeln!(s, r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">mean accuracy (%)</text>"#, h / 2.0, h / 2.0);
    let mut legend_y = top + 10.0;
    for (i, (label, pts)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let d: Vec<String> = pts.iter().enumerate().map(|(j, p)| format!("{}{:.1} {:.1}", if j == 0 { "M" } else { " L" }, x(p.0), y(p.1))).collect();
        let (width, dash) = if i == 0 { ("2.5", "") } else { ("1.5", r#" stroke-dasharray="6 3""#) };
        let _ = writeln!(s, r#"<path d="{}" stroke="{colour}" stroke-width="{width}" fill="none"{dash}/>"#, d.join(""));
        for p in pts {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, x(p.0), y(p.1));
        }
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{:.1}" width="12" height="3" fill="{colour}"/><text x="{}" y="{legend_y:.1}" fill="{colour}">{}</text>"#,
            w - right + 8.0,
            legend_y - 5.0,
            w - right + 24.0,
            esc(label)
        );
        legend_y += 16.0;
    }
    if !refs.is_empty() {
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{:.1}" width="7" height="7" fill="#444"/><text x="{}" y="{legend_y:.1}" fill="#444">full-depth models</text>"##,
            w - right + 10.0,
            legend_y - 8.0,
            w - right + 24.0
        );
        legend_y += 16.0;
    }
    if front.iter().any(|p| p.picked) {
        let _ = writeln!(
            s,
            r##"<circle cx="{}" cy="{:.1}" r="5" fill="none" stroke="{CHOSEN}" stroke-width="2"/><text x="{}" y="{legend_y:.1}" fill="{CHOSEN}">picked point</text>"##,
            w - right + 14.0,
            legend_y - 4.0,
            w - right + 24.0
        );
    }
    // The picked point: ringed and labelled, so the plot says which model was built.
    for p in front.iter().filter(|p| p.picked) {
        let (px, py) = (x(p.tailored.params as f64), y(p.tailored.mean()));
        let _ = writeln!(s, r##"<circle cx="{px:.1}" cy="{py:.1}" r="7" fill="none" stroke="{CHOSEN}" stroke-width="2"/>"##);
        let _ = writeln!(s, r##"<text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="{CHOSEN}">picked: {} layers</text>"##, py - 12.0, p.layers);
    }
    for (label, params, acc) in refs {
        let (px, py) = (x(*params as f64), y(*acc));
        let _ = writeln!(s, r##"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="#444"/>"##, px - 3.5, py - 3.5);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{} ({:.1})</text>"##,
            px - 6.0,
            py + 4.0,
            esc(label),
            100.0 * acc
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::ResultKind;

    fn point(layers: usize, mean: f64) -> FrontPoint {
        let row = ModelResult {
            label: format!("hf-tailor keep-{layers}"),
            kind: ResultKind::Tailored,
            layers,
            params: 100 * layers as u64,
            scores: [("t".to_string(), mean)].into(),
            se: Default::default(),
            acc_norm: Default::default(),
            acc_norm_se: Default::default(),
            items: Default::default(),
        };
        FrontPoint { layers, trial: layers, tailored: row.clone(), baselines: vec![], recipe_file: recipe_file(layers), picked: false }
    }

    #[test]
    fn the_default_pick_is_the_smallest_within_one_point() {
        let f = vec![point(4, 0.50), point(5, 0.595), point(6, 0.60), point(7, 0.58)];
        assert_eq!(pick(&f, Pick::Smallest), Ok(1), "0.595 is within a point of 0.60");
        assert_eq!(pick(&f, Pick::Layers(7)), Ok(3));
        assert!(pick(&f, Pick::Layers(9)).unwrap_err().contains("4, 5, 6, 7"));
        assert_eq!(pick(&f, Pick::MaxParams(650)), Ok(2));
        assert_eq!(pick(&f, Pick::MaxParams(450)), Ok(0));
        assert!(pick(&f, Pick::MaxParams(10)).is_err());
        let md = markdown(&f);
        assert!(md.contains("| 5 | 500 | 59.5 | 6 | `front/keep-5.yaml` |  |"), "{md}");
        let svg = svg(&f, &[("base".into(), 800, 0.55)]);
        assert!(svg.contains("base (55.0)") && svg.trim_end().ends_with("</svg>"), "{svg}");
    }

    #[test]
    fn comparisons_at_each_depth_use_two_standard_errors() {
        let with_se = |mut r: ModelResult, label: &str, kind: ResultKind, mean: f64, se: f64| {
            r.label = label.into();
            r.kind = kind;
            r.scores = [("t".to_string(), mean)].into();
            r.se = [("t".to_string(), se)].into();
            r
        };
        let mut a = point(4, 0.0);
        a.tailored = with_se(a.tailored.clone(), "hf-tailor keep-4", ResultKind::Tailored, 0.60, 0.01);
        a.baselines = vec![with_se(a.tailored.clone(), "ShortGPT", ResultKind::Baseline, 0.50, 0.01)];
        let mut b = point(5, 0.0);
        b.tailored = with_se(b.tailored.clone(), "hf-tailor keep-5", ResultKind::Tailored, 0.61, 0.01);
        b.baselines = vec![with_se(b.tailored.clone(), "ShortGPT", ResultKind::Baseline, 0.60, 0.01)];
        let c = comparisons(&[a, b]);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].starts_with("hf-tailor keep-4 vs ShortGPT: +10.0 ± 1.4 points (higher"), "{c:?}");
        assert!(c[1].contains("keep-5") && c[1].contains("within two standard errors"), "{c:?}");
    }
}
