//! Drawing helpers the search's hand-written SVG pictures share (the trial curves of
//! `search.svg`, the size–quality front of `front.svg` and the model card).

/// `s` escaped for SVG text and attribute values.
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

/// A tick value without a trailing `.0` for whole numbers.
pub fn round_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let t = format!("{v:.2}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
