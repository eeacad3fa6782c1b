//! Charts as inline SVG, drawn on the server: probability bars, per-label precision/recall/F1,
//! a confusion heatmap and threshold curves. Text in them goes through [`escape`].

use super::escape;
use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use crate::metrics::LabelScore;
use crate::model::calibration::LabelReliability;
use crate::views::ThresholdCurve;
use std::fmt::Write;

/// The colour of an emotion (its chip's colour in the stylesheet).
pub(crate) fn colour(e: Emotion) -> &'static str {
    match e {
        Emotion::Love => "#d6336c",
        Emotion::Joy => "#e0a100",
        Emotion::Anxiety => "#7e57c2",
        Emotion::Sorrow => "#3f7fbf",
        Emotion::Expect => "#2e9e6a",
        Emotion::Hate => "#8d6e63",
        Emotion::Surprise => "#00a3b4",
        Emotion::Anger => "#d84315",
    }
}

/// Per-label probability bars, with a tick at each label's threshold (none without
/// thresholds); predicted labels in their colour, the others grey.
pub(crate) fn probability_bars(
    probs: &[f32; NUM_EMOTIONS],
    thresholds: Option<&[f32; NUM_EMOTIONS]>,
    labels: LabelSet,
) -> String {
    let (x0, w, row) = (90.0, 360.0, 26.0);
    let h = row * NUM_EMOTIONS as f64 + 24.0;
    let mut s = format!(
        r#"<svg class="chart bars" id="probability-bars" viewBox="0 0 520 {h}" width="520" height="{h}" role="img" aria-label="probability per emotion">"#
    );
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = x0 + w * t;
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="0" x2="{x}" y2="{y}" stroke="#ddd"/><text x="{x}" y="{ty}" font-size="10" text-anchor="middle" fill="#888">{t}</text>"##,
            y = h - 18.0,
            ty = h - 6.0
        );
    }
    for e in Emotion::ALL {
        let i = e.index();
        let y = row * i as f64 + 4.0;
        let p = f64::from(probs[i]).clamp(0.0, 1.0);
        let tick = thresholds.map_or(String::new(), |t| {
            format!(
                r##"<line x1="{tk:.1}" y1="{y0}" x2="{tk:.1}" y2="{y1}" stroke="#222" stroke-width="2"/>"##,
                tk = x0 + w * f64::from(t[i]).clamp(0.0, 1.0),
                y0 = y - 2.0,
                y1 = y + 20.0,
            )
        });
        let on = labels.contains(e);
        let fill = if on { colour(e) } else { "#b8bec6" };
        let _ = write!(
            s,
            r##"<g class="bar{cls}" data-emotion="{n}"><text x="{tx}" y="{ly}" font-size="13" text-anchor="end" fill="#333">{n}</text><rect x="{x0}" y="{y}" width="{bw:.1}" height="18" rx="3" fill="{fill}"/>{tick}<text x="{vx:.1}" y="{ly}" font-size="12" fill="#333">{p:.2}</text></g>"##,
            cls = if on { " on" } else { "" },
            n = escape(e.name()),
            tx = x0 - 8.0,
            ly = y + 14.0,
            bw = (w * p).max(1.0),
            vx = x0 + w * p + 6.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// Precision, recall and F1 of each label as three bars.
pub(crate) fn prf_bars(per_label: &[LabelScore]) -> String {
    let (x0, w, group) = (90.0, 360.0, 48.0);
    let h = group * per_label.len() as f64 + 40.0;
    let mut s = format!(
        r#"<svg class="chart prf" id="prf-bars" viewBox="0 0 560 {h}" width="560" height="{h}" role="img" aria-label="precision, recall and F1 per label">"#
    );
    let series = [
        ("precision", "#9bb8d9"),
        ("recall", "#f0b37e"),
        ("F1", "#3f7fbf"),
    ];
    for (k, (name, fill)) in series.iter().enumerate() {
        let lx = x0 + 110.0 * k as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="4" width="12" height="12" fill="{fill}"/><text x="{tx}" y="14" font-size="12">{name}</text>"#,
            tx = lx + 16.0
        );
    }
    for (i, l) in per_label.iter().enumerate() {
        let y = 28.0 + group * i as f64;
        let _ = write!(
            s,
            r##"<text x="{tx}" y="{ty}" font-size="13" text-anchor="end" fill="#333">{n}</text>"##,
            tx = x0 - 8.0,
            ty = y + 22.0,
            n = escape(&l.label)
        );
        for (k, v) in [l.precision, l.recall, l.f1].into_iter().enumerate() {
            let v = v.clamp(0.0, 1.0);
            let by = y + 13.0 * k as f64;
            let _ = write!(
                s,
                r##"<rect x="{x0}" y="{by}" width="{bw:.1}" height="11" fill="{fill}"/><text x="{vx:.1}" y="{vy}" font-size="10" fill="#555">{v:.2}</text>"##,
                bw = (w * v).max(1.0),
                fill = series[k].1,
                vx = x0 + w * v + 4.0,
                vy = by + 9.5,
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A matrix of counts: the diagonal (hits) in green relative to the largest hit, the other
/// cells (mistakes) in red relative to the largest mistake.
pub(crate) fn heatmap(m: &[Vec<usize>], rows: &[&str], cols: &[&str]) -> String {
    let (x0, y0, cell) = (90.0, 70.0, 48.0);
    let wdt = x0 + cell * cols.len() as f64 + 10.0;
    let hgt = y0 + cell * rows.len() as f64 + 10.0;
    let mut s = format!(
        r#"<svg class="chart heatmap" id="label-heatmap" viewBox="0 0 {wdt} {hgt}" width="{wdt}" height="{hgt}" role="img" aria-label="label confusion">"#
    );
    for (j, c) in cols.iter().enumerate() {
        let x = x0 + cell * j as f64 + cell / 2.0;
        let _ = write!(
            s,
            r##"<text x="{x}" y="{y}" font-size="12" text-anchor="start" transform="rotate(-40 {x} {y})" fill="#333">{c}</text>"##,
            y = y0 - 8.0,
            c = escape(c)
        );
    }
    let cells = || {
        m.iter()
            .enumerate()
            .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &v)| (i == j, v)))
    };
    let max_hit = cells()
        .filter(|c| c.0)
        .map(|c| c.1)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_miss = cells()
        .filter(|c| !c.0)
        .map(|c| c.1)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    for (i, r) in rows.iter().enumerate() {
        let y = y0 + cell * i as f64;
        let _ = write!(
            s,
            r##"<text x="{tx}" y="{ty}" font-size="12" text-anchor="end" fill="#333">{r}</text>"##,
            tx = x0 - 6.0,
            ty = y + cell / 2.0 + 4.0,
            r = escape(r)
        );
        let row = m.get(i).map(Vec::as_slice).unwrap_or(&[]);
        for j in 0..cols.len() {
            let v = row.get(j).copied().unwrap_or(0);
            let a = v as f64 / if i == j { max_hit } else { max_miss };
            let x = x0 + cell * j as f64;
            let (fill, stroke) = if i == j {
                (
                    format!("rgba(46, 158, 106, {:.2})", 0.1 + 0.8 * a),
                    "#2e9e6a",
                )
            } else {
                (format!("rgba(216, 67, 21, {:.2})", 0.04 + 0.86 * a), "#fff")
            };
            let _ = write!(
                s,
                r##"<rect x="{x}" y="{y}" width="{cw}" height="{cw}" fill="{fill}" stroke="{stroke}"/><text x="{cx}" y="{cy}" font-size="12" text-anchor="middle" fill="{tf}">{v}</text>"##,
                cw = cell - 2.0,
                cx = x + cell / 2.0 - 1.0,
                cy = y + cell / 2.0 + 4.0,
                tf = if a > 0.6 { "#fff" } else { "#222" },
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// One label's F1 against its threshold, with the tuned threshold marked.
pub(crate) fn threshold_curve(c: &ThresholdCurve) -> String {
    let (x0, y0, w, h) = (30.0, 22.0, 190.0, 100.0);
    let colour = c.label.parse::<Emotion>().map(colour).unwrap_or("#3f7fbf");
    let at = c
        .points
        .iter()
        .min_by(|a, b| {
            (a.0 - c.threshold)
                .abs()
                .total_cmp(&(b.0 - c.threshold).abs())
        })
        .map(|p| p.1)
        .unwrap_or(0.0);
    let mut s = format!(
        r##"<svg class="chart curve" data-label="{n}" viewBox="0 0 240 150" width="240" height="150" role="img" aria-label="{n}: F1 against threshold"><text x="{x0}" y="14" font-size="13" fill="#333">{n}  t = {t:.2}, F1 {at:.2}</text><rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>"##,
        n = escape(&c.label),
        t = c.threshold,
    );
    axis_ticks(&mut s, (x0, y0, w, h));
    let pts: Vec<String> = c
        .points
        .iter()
        .map(|&(t, f)| {
            format!(
                "{:.1},{:.1}",
                x0 + w * f64::from(t).clamp(0.0, 1.0),
                y0 + h * (1.0 - f.clamp(0.0, 1.0))
            )
        })
        .collect();
    let tx = x0 + w * f64::from(c.threshold).clamp(0.0, 1.0);
    let _ = write!(
        s,
        r##"<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/><line x1="{tx:.1}" y1="{y0}" x2="{tx:.1}" y2="{yb}" stroke="#222" stroke-dasharray="3 2"/><text x="{mx}" y="{my}" font-size="9" text-anchor="middle" fill="#666">threshold → F1 (validation)</text></svg>"##,
        pts = pts.join(" "),
        yb = y0 + h,
        mx = x0 + w / 2.0,
        my = y0 + h + 24.0,
    );
    s
}

/// The 0, 0.5 and 1 ticks of both axes of a unit-square chart at `(x0, y0, w, h)`.
fn axis_ticks(s: &mut String, (x0, y0, w, h): (f64, f64, f64, f64)) {
    for v in [0.0, 0.5, 1.0] {
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ly:.1}" font-size="9" text-anchor="end" fill="#888">{v}</text><text x="{bx:.1}" y="{by}" font-size="9" text-anchor="middle" fill="#888">{v}</text>"##,
            lx = x0 - 3.0,
            ly = y0 + h * (1.0 - v) + 3.0,
            bx = x0 + w * v,
            by = y0 + h + 11.0,
        );
    }
}

/// One label's reliability curve: each non-empty bin's fraction of positives against its mean
/// probability (dots sized by the bin's share of predictions), beside the diagonal a
/// calibrated model follows.
pub(crate) fn reliability_curve(c: &LabelReliability) -> String {
    let (x0, y0, w, h) = (30.0, 22.0, 190.0, 100.0);
    let colour = c.label.parse::<Emotion>().map(colour).unwrap_or("#3f7fbf");
    let total: usize = c.bins.iter().map(|b| b.n).sum::<usize>().max(1);
    let mut s = format!(
        r##"<svg class="chart reliability" data-label="{n}" viewBox="0 0 240 150" width="240" height="150" role="img" aria-label="{n}: fraction positive against probability"><text x="{x0}" y="14" font-size="13" fill="#333">{n}  ECE {ece:.3}</text><rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/><line x1="{x0}" y1="{yb}" x2="{xr}" y2="{y0}" stroke="#bbb" stroke-dasharray="3 2"/>"##,
        n = escape(&c.label),
        ece = c.ece,
        yb = y0 + h,
        xr = x0 + w,
    );
    axis_ticks(&mut s, (x0, y0, w, h));
    let pts: Vec<(f64, f64, f64)> = c
        .bins
        .iter()
        .map(|b| {
            (
                x0 + w * b.mean_probability.clamp(0.0, 1.0),
                y0 + h * (1.0 - b.fraction_positive.clamp(0.0, 1.0)),
                2.0 + 4.0 * (b.n as f64 / total as f64).sqrt(),
            )
        })
        .collect();
    let line: Vec<String> = pts
        .iter()
        .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = write!(
        s,
        r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"##,
        line.join(" ")
    );
    for (x, y, r) in pts {
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{r:.1}" fill="{colour}"/>"##
        );
    }
    let _ = write!(
        s,
        r##"<text x="{mx}" y="{my}" font-size="9" text-anchor="middle" fill="#666">probability → fraction positive</text></svg>"##,
        mx = x0 + w / 2.0,
        my = y0 + h + 24.0,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_labels_and_draw_every_row() {
        let m = vec![vec![1, 2], vec![0, 3]];
        let svg = heatmap(&m, &["<a>", "b"], &["c", "d&e"]);
        assert!(svg.contains("&lt;a&gt;") && svg.contains("d&amp;e") && !svg.contains("<a>"));
        assert_eq!(svg.matches("<rect").count(), 4);
        let p = [0.9, 0.1, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        let bars = probability_bars(&p, Some(&[0.5; 8]), "Love,Anxiety".parse().unwrap());
        assert_eq!(bars.matches(r#"class="bar on""#).count(), 2);
        assert_eq!(bars.matches("<g class=\"bar").count(), 8);
        assert_eq!(
            bars.matches(r#"stroke-width="2""#).count(),
            8,
            "a tick per label"
        );
        let untick = probability_bars(&p, None, "Love".parse().unwrap());
        assert_eq!(untick.matches("<g class=\"bar").count(), 8);
        assert!(
            !untick.contains(r#"stroke-width="2""#),
            "no thresholds, no ticks"
        );
        let c = ThresholdCurve {
            label: "Joy".into(),
            threshold: 0.3,
            points: vec![(0.1, 0.2), (0.3, 0.6), (0.9, 0.1)],
        };
        let svg = threshold_curve(&c);
        assert!(svg.contains("F1 0.60"), "{svg}");
        assert!(svg.contains("<polyline points=\""));
    }
}
