//! Turning per-label probabilities into label sets: per-label thresholds, the "at least one
//! label" rule, and tuning thresholds on held-out data. Shared by every classifier.
//!
//! Which data the thresholds are tuned on is the caller's choice; it should be validation data,
//! never the test rows.

use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::metrics::{self, Counts};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Per-label decision thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A label is predicted when its probability is `>=` its threshold (canonical order).
    pub per_label: [f32; NUM_EMOTIONS],
    /// When no label passes its threshold, predict the single most probable label. Every
    /// sentence of the seed corpus carries an emotion, so an empty prediction is always wrong.
    pub at_least_one: bool,
}

impl Default for Thresholds {
    /// 0.5 for every label, with the at-least-one rule.
    fn default() -> Self {
        Thresholds::uniform(0.5, true)
    }
}

/// What [`tune`] maximizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Micro-averaged F1.
    Micro,
    /// Macro-averaged F1.
    Macro,
    /// Exact-match (subset) accuracy.
    Exact,
}

impl Objective {
    /// Lower-case name (`micro`, `macro`, `exact`).
    pub fn name(self) -> &'static str {
        match self {
            Objective::Micro => "micro",
            Objective::Macro => "macro",
            Objective::Exact => "exact",
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "micro" | "micro-f1" | "micro_f1" => Ok(Objective::Micro),
            "macro" | "macro-f1" | "macro_f1" => Ok(Objective::Macro),
            "exact" | "exact-match" | "exact_match" | "subset" => Ok(Objective::Exact),
            _ => Err(format!(
                "unknown objective {s:?} (expected micro, macro or exact)"
            )),
        }
    }
}

impl Thresholds {
    /// The same threshold `t` for every label.
    pub fn uniform(t: f32, at_least_one: bool) -> Thresholds {
        Thresholds {
            per_label: [t; NUM_EMOTIONS],
            at_least_one,
        }
    }

    /// The label set for one probability vector.
    pub fn apply_one(&self, p: &[f32; NUM_EMOTIONS]) -> LabelSet {
        let mut bits = 0u8;
        for (i, (&pi, &ti)) in p.iter().zip(&self.per_label).enumerate() {
            if pi >= ti {
                bits |= 1 << i;
            }
        }
        if bits == 0 && self.at_least_one {
            bits = 1 << argmax(p);
        }
        LabelSet(bits)
    }

    /// The label sets for many probability vectors (same order).
    ///
    /// ```
    /// use emoknow::model::thresholds::Thresholds;
    /// let t = Thresholds::uniform(0.5, true);
    /// let sets = t.apply(&[[0.9, 0.6, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],
    ///                      [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0]]);
    /// assert_eq!(sets[0].to_string(), "Love,Joy");
    /// assert_eq!(sets[1].to_string(), "Anxiety"); // none passes: the most probable one
    /// ```
    pub fn apply(&self, probs: &[[f32; NUM_EMOTIONS]]) -> Vec<LabelSet> {
        probs.iter().map(|p| self.apply_one(p)).collect()
    }
}

/// Index of the largest probability (the first on ties; NaN never wins).
fn argmax(p: &[f32; NUM_EMOTIONS]) -> usize {
    let mut best = 0;
    for i in 1..NUM_EMOTIONS {
        if p[i] > p[best] || p[best].is_nan() {
            best = i;
        }
    }
    best
}

/// The candidate thresholds: 0.01, 0.02, …, 0.99.
fn grid() -> Vec<f32> {
    (1..100).map(|i| i as f32 / 100.0).collect()
}

/// Maximum coordinate-search rounds over the eight labels.
const MAX_ROUNDS: usize = 10;

/// Scores label sets against gold for an objective.
fn score_sets(
    gold: &[LabelSet],
    pred: impl Iterator<Item = LabelSet>,
    objective: Objective,
) -> f64 {
    let mut counts = [Counts::default(); NUM_EMOTIONS];
    let mut exact = 0usize;
    for (g, p) in gold.iter().zip(pred) {
        if *g == p {
            exact += 1;
        }
        if objective == Objective::Exact {
            continue;
        }
        let (tp, fp, fn_) = (g.0 & p.0, p.0 & !g.0, g.0 & !p.0);
        for (i, c) in counts.iter_mut().enumerate() {
            c.tp += ((tp >> i) & 1) as usize;
            c.fp += ((fp >> i) & 1) as usize;
            c.fn_ += ((fn_ >> i) & 1) as usize;
        }
    }
    match objective {
        Objective::Micro => metrics::micro_from_counts(&counts),
        Objective::Macro => metrics::macro_from_counts(&counts),
        Objective::Exact => {
            if gold.is_empty() {
                0.0
            } else {
                exact as f64 / gold.len() as f64
            }
        }
    }
}

/// Tunes per-label thresholds (with the at-least-one rule) to maximize `objective` on the
/// given probabilities and gold label sets — validation data, never test data.
///
/// Coordinate search over the grid 0.01 … 0.99: each label in turn gets the grid value that
/// maximizes the objective with the other thresholds fixed; rounds repeat until nothing
/// changes (at most 10). A label keeps its current threshold unless another value is strictly
/// better; among equally good values the middle one is taken. The search runs from two starts
/// — each label's own best-F1 threshold, and 0.5 everywhere — and the better result wins (the
/// first on a tie): with the at-least-one rule, lowering one threshold from a state where
/// nothing passes only swaps the fallback label, so a single start can stall.
/// Deterministic. Cost: O(rounds × 8 × 99 × n). Empty input gives [`Thresholds::default`].
///
/// Panics if `probs` and `gold` differ in length.
pub fn tune(probs: &[[f32; NUM_EMOTIONS]], gold: &[LabelSet], objective: Objective) -> Thresholds {
    assert_eq!(
        probs.len(),
        gold.len(),
        "thresholds: {} probability rows but {} gold label sets",
        probs.len(),
        gold.len()
    );
    if probs.is_empty() {
        return Thresholds::default();
    }
    let grid = grid();
    let mut best: Option<(f64, Thresholds)> = None;
    for start in [
        per_label_f1_start(probs, gold, &grid),
        Thresholds::default(),
    ] {
        let th = coordinate_search(probs, gold, objective, start, &grid);
        let score = score_sets(gold, th.apply(probs).into_iter(), objective);
        if best.as_ref().is_none_or(|(s, _)| score > *s + 1e-12) {
            best = Some((score, th));
        }
    }
    best.map(|(_, th)| th).unwrap_or_default()
}

/// The middle of the grid values that reach the best score (scores are per grid value).
fn middle_of_best(grid: &[f32], scores: &[f64]) -> (f32, f64) {
    let best = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let ties: Vec<f32> = grid
        .iter()
        .zip(scores)
        .filter(|(_, &s)| s >= best - 1e-12)
        .map(|(&t, _)| t)
        .collect();
    (ties[ties.len() / 2], best)
}

/// Each label's threshold maximizing its own F1, ignoring the other labels.
fn per_label_f1_start(
    probs: &[[f32; NUM_EMOTIONS]],
    gold: &[LabelSet],
    grid: &[f32],
) -> Thresholds {
    let mut th = Thresholds::default();
    for j in 0..NUM_EMOTIONS {
        let scores: Vec<f64> = grid.iter().map(|&t| label_f1(probs, gold, j, t)).collect();
        th.per_label[j] = middle_of_best(grid, &scores).0;
    }
    th
}

/// F1 of label `j` alone when it is predicted at probability `>= t`.
fn label_f1(probs: &[[f32; NUM_EMOTIONS]], gold: &[LabelSet], j: usize, t: f32) -> f64 {
    let mut c = Counts::default();
    for (p, g) in probs.iter().zip(gold) {
        match (p[j] >= t, g.0 & (1 << j) != 0) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, true) => c.fn_ += 1,
            (false, false) => {}
        }
    }
    c.f1()
}

/// Label `j`'s F1 at every threshold of the tuning grid (0.01 … 0.99), as `(threshold, F1)`:
/// the label alone, predicted when its probability reaches the threshold (without the
/// at-least-one rule). On validation data this shows how sharply a label's F1 depends on its
/// tuned threshold. Labels outside 0..8 give an empty curve.
pub fn label_f1_curve(
    probs: &[[f32; NUM_EMOTIONS]],
    gold: &[LabelSet],
    j: usize,
) -> Vec<(f32, f64)> {
    if j >= NUM_EMOTIONS {
        return Vec::new();
    }
    grid()
        .into_iter()
        .map(|t| (t, label_f1(probs, gold, j, t)))
        .collect()
}

fn coordinate_search(
    probs: &[[f32; NUM_EMOTIONS]],
    gold: &[LabelSet],
    objective: Objective,
    mut th: Thresholds,
    grid: &[f32],
) -> Thresholds {
    let top: Vec<u8> = probs.iter().map(|p| 1u8 << argmax(p)).collect();
    let mut others = vec![0u8; probs.len()];
    for _round in 0..MAX_ROUNDS {
        let mut changed = false;
        for j in 0..NUM_EMOTIONS {
            // Bits of the other labels are fixed while label j moves.
            for (o, p) in others.iter_mut().zip(probs) {
                let mut bits = 0u8;
                for i in (0..NUM_EMOTIONS).filter(|&i| i != j) {
                    if p[i] >= th.per_label[i] {
                        bits |= 1 << i;
                    }
                }
                *o = bits;
            }
            let eval = |t: f32| {
                let sets = probs.iter().zip(&others).zip(&top).map(|((p, &o), &tp)| {
                    let bits = o | (((p[j] >= t) as u8) << j);
                    LabelSet(if bits == 0 && th.at_least_one {
                        tp
                    } else {
                        bits
                    })
                });
                score_sets(gold, sets, objective)
            };
            let current = eval(th.per_label[j]);
            let scores: Vec<f64> = grid.iter().map(|&t| eval(t)).collect();
            let (t, best) = middle_of_best(grid, &scores);
            if best > current + 1e-12 {
                th.per_label[j] = t;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    th
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Emotion;

    fn p(v: &[(usize, f32)]) -> [f32; NUM_EMOTIONS] {
        let mut a = [0.0; NUM_EMOTIONS];
        for &(i, x) in v {
            a[i] = x;
        }
        a
    }

    #[test]
    fn label_f1_curve_is_the_label_alone_at_each_threshold() {
        // Joy: gold in rows 0 and 1; probabilities 0.8, 0.3, 0.6 (row 2 not gold).
        let probs = [
            p(&[(Emotion::Joy.index(), 0.8)]),
            p(&[(Emotion::Joy.index(), 0.3)]),
            p(&[(Emotion::Joy.index(), 0.6)]),
        ];
        let gold: Vec<LabelSet> = ["Joy", "Joy", "Love"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let c = label_f1_curve(&probs, &gold, Emotion::Joy.index());
        assert_eq!(c.len(), 99);
        let at = |t: f32| c.iter().find(|(x, _)| (x - t).abs() < 1e-6).unwrap().1;
        assert!((at(0.2) - 0.8).abs() < 1e-9); // tp 2, fp 1: 4/5
        assert!((at(0.5) - 0.5).abs() < 1e-9); // tp 1, fp 1, fn 1: 2/4
        assert!((at(0.7) - 2.0 / 3.0).abs() < 1e-9); // tp 1, fn 1: 2/3
        assert_eq!(at(0.9), 0.0);
        assert!(label_f1_curve(&probs, &gold, 8).is_empty());
    }

    #[test]
    fn apply_thresholds_and_at_least_one() {
        let mut t = Thresholds::uniform(0.5, true);
        t.per_label[Emotion::Joy.index()] = 0.2;
        let probs = [p(&[(0, 0.6), (1, 0.25)]), p(&[(2, 0.3), (3, 0.4)])];
        let sets = t.apply(&probs);
        assert_eq!(sets[0].to_string(), "Love,Joy");
        assert_eq!(sets[1].to_string(), "Sorrow");
        t.at_least_one = false;
        assert!(t.apply(&probs)[1].is_empty());
    }

    #[test]
    fn objective_parses() {
        assert_eq!("MICRO".parse::<Objective>().unwrap(), Objective::Micro);
        assert_eq!(
            "exact_match".parse::<Objective>().unwrap(),
            Objective::Exact
        );
        assert!("f2".parse::<Objective>().is_err());
    }

    /// Label 0 is gold exactly when its probability is >= 0.3, label 1 when >= 0.7: tuning
    /// must find thresholds in (0.2, 0.3] and (0.6, 0.7] from the data alone.
    #[test]
    fn tune_recovers_thresholds_from_the_data() {
        let mut probs = Vec::new();
        let mut gold = Vec::new();
        for k in 0..20 {
            let a = 0.05 * k as f32; // 0.0 .. 0.95
            let b = 1.0 - a;
            probs.push(p(&[(0, a), (1, b), (2, 0.01)]));
            let mut g = LabelSet::EMPTY;
            if a >= 0.3 - 1e-6 {
                g.insert(Emotion::Love);
            }
            if b >= 0.7 - 1e-6 {
                g.insert(Emotion::Joy);
            }
            assert!(!g.is_empty());
            gold.push(g);
        }
        let th = tune(&probs, &gold, Objective::Micro);
        let t0 = th.per_label[0];
        let t1 = th.per_label[1];
        assert!(t0 > 0.2 && t0 <= 0.3, "t0 = {t0}");
        assert!(t1 > 0.6 && t1 <= 0.7, "t1 = {t1}");
        assert!(th.at_least_one);
        // Same data, same answer.
        assert_eq!(tune(&probs, &gold, Objective::Micro), th);
    }

    #[test]
    fn tuned_beats_default_on_each_objective() {
        // Deterministic pseudo-random probabilities correlated with gold.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32) / (1u64 << 31) as f32
        };
        let mut probs = Vec::new();
        let mut gold = Vec::new();
        for _ in 0..300 {
            let mut g = LabelSet::EMPTY;
            let mut pr = [0.0f32; NUM_EMOTIONS];
            for (i, x) in pr.iter_mut().enumerate() {
                let pos = next() < 0.25;
                if pos {
                    g.insert(Emotion::from_index(i));
                }
                // low, compressed probabilities: 0.5 is far too high a threshold
                *x = 0.3 * next() + if pos { 0.1 } else { 0.0 };
            }
            probs.push(pr);
            gold.push(g);
        }
        let base = Thresholds::default().apply(&probs);
        for obj in [Objective::Micro, Objective::Macro, Objective::Exact] {
            let th = tune(&probs, &gold, obj);
            let tuned = th.apply(&probs);
            let (b, t) = match obj {
                Objective::Micro => (
                    metrics::micro_f1(&gold, &base),
                    metrics::micro_f1(&gold, &tuned),
                ),
                Objective::Macro => (
                    metrics::macro_f1(&gold, &base),
                    metrics::macro_f1(&gold, &tuned),
                ),
                Objective::Exact => (
                    metrics::exact_match(&gold, &base),
                    metrics::exact_match(&gold, &tuned),
                ),
            };
            assert!(t > b, "{obj}: tuned {t} <= default {b}");
        }
    }

    #[test]
    fn empty_input_gives_default() {
        assert_eq!(tune(&[], &[], Objective::Exact), Thresholds::default());
    }
}
