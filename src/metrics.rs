//! Multi-label evaluation: Hamming accuracy, exact match, micro/macro-F1, per-label scores and
//! a confusion of label-set sizes, as pure functions over [`LabelSet`].
//!
//! Definitions follow scikit-learn (`accuracy_score`, `hamming_loss`, `f1_score` with
//! `average="micro"|"macro"`). Where a ratio has a zero denominator it counts as 0 (sklearn's
//! `zero_division=0` behaviour): a label with no gold positives and no predictions gets
//! precision = recall = F1 = 0, and still counts in the macro average. Reading predictions from
//! files or models is left to callers; this module imports only [`crate::labels`].

use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use serde::{Deserialize, Serialize};

/// Scores of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label's English name (`"Love"`).
    pub label: String,
    /// TP / (TP + FP); 0 when nothing was predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the label has no gold positives.
    pub recall: f64,
    /// 2·TP / (2·TP + FP + FN); 0 when that denominator is 0.
    pub f1: f64,
    /// Number of gold positives.
    pub support: usize,
    /// Number of predicted positives.
    pub predicted: usize,
}

/// Everything [`evaluate`] measures. Serializes to JSON with the keys `n`, `hamming_accuracy`,
/// `exact_match`, `micro_f1`, `macro_f1`, `per_label` and `size_confusion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Number of examples.
    pub n: usize,
    /// Fraction of the n × 8 label decisions that are right (1 − Hamming loss).
    pub hamming_accuracy: f64,
    /// Fraction of examples whose predicted set equals the gold set (subset accuracy).
    pub exact_match: f64,
    /// F1 over the pooled TP/FP/FN counts of all labels.
    pub micro_f1: f64,
    /// Unweighted mean of the eight per-label F1 scores.
    pub macro_f1: f64,
    /// Per-label scores in canonical order.
    pub per_label: Vec<LabelScore>,
    /// `size_confusion[g][p]` = number of examples with `g` gold labels and `p` predicted labels
    /// (9 × 9, sizes 0..=8).
    pub size_confusion: Vec<Vec<usize>>,
}

/// True positive, false positive and false negative counts of one label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Gold and predicted.
    pub tp: usize,
    /// Predicted, not gold.
    pub fp: usize,
    /// Gold, not predicted.
    pub fn_: usize,
}

impl Counts {
    /// 2·TP / (2·TP + FP + FN), or 0 when the denominator is 0.
    pub fn f1(self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn check_lengths(gold: &[LabelSet], pred: &[LabelSet]) {
    assert_eq!(
        gold.len(),
        pred.len(),
        "metrics: {} gold label sets but {} predictions",
        gold.len(),
        pred.len()
    );
}

/// Per-label TP/FP/FN counts in canonical order. Panics if the slices differ in length.
pub fn label_counts(gold: &[LabelSet], pred: &[LabelSet]) -> [Counts; NUM_EMOTIONS] {
    check_lengths(gold, pred);
    let mut c = [Counts::default(); NUM_EMOTIONS];
    for (g, p) in gold.iter().zip(pred) {
        for (i, ci) in c.iter_mut().enumerate() {
            let bit = 1u8 << i;
            match (g.0 & bit != 0, p.0 & bit != 0) {
                (true, true) => ci.tp += 1,
                (false, true) => ci.fp += 1,
                (true, false) => ci.fn_ += 1,
                (false, false) => {}
            }
        }
    }
    c
}

/// Fraction of label decisions that are right: 1 − Hamming loss. 0 for empty input.
/// Panics if the slices differ in length.
pub fn hamming_accuracy(gold: &[LabelSet], pred: &[LabelSet]) -> f64 {
    check_lengths(gold, pred);
    let wrong: usize = gold
        .iter()
        .zip(pred)
        .map(|(g, p)| (g.0 ^ p.0).count_ones() as usize)
        .sum();
    let total = gold.len() * NUM_EMOTIONS;
    if total == 0 {
        0.0
    } else {
        1.0 - wrong as f64 / total as f64
    }
}

/// Fraction of examples predicted exactly (subset accuracy). 0 for empty input.
/// Panics if the slices differ in length.
pub fn exact_match(gold: &[LabelSet], pred: &[LabelSet]) -> f64 {
    check_lengths(gold, pred);
    ratio(
        gold.iter().zip(pred).filter(|(g, p)| g == p).count(),
        gold.len(),
    )
}

/// Micro-averaged F1 (pooled counts). 0 when there are no gold and no predicted labels.
/// Panics if the slices differ in length.
pub fn micro_f1(gold: &[LabelSet], pred: &[LabelSet]) -> f64 {
    micro_from_counts(&label_counts(gold, pred))
}

/// Macro-averaged F1: the mean of the eight per-label F1s (an absent, never-predicted label
/// contributes 0). Panics if the slices differ in length.
pub fn macro_f1(gold: &[LabelSet], pred: &[LabelSet]) -> f64 {
    macro_from_counts(&label_counts(gold, pred))
}

/// Micro-F1 from per-label counts.
pub fn micro_from_counts(c: &[Counts; NUM_EMOTIONS]) -> f64 {
    let total = c.iter().fold(Counts::default(), |a, b| Counts {
        tp: a.tp + b.tp,
        fp: a.fp + b.fp,
        fn_: a.fn_ + b.fn_,
    });
    total.f1()
}

/// Macro-F1 from per-label counts.
pub fn macro_from_counts(c: &[Counts; NUM_EMOTIONS]) -> f64 {
    c.iter().map(|x| x.f1()).sum::<f64>() / NUM_EMOTIONS as f64
}

/// Scores predictions against gold labels (same order, same length).
///
/// Panics if the slices differ in length: that is a caller bug, not bad data.
///
/// ```
/// use emoknow::labels::LabelSet;
/// use emoknow::metrics::evaluate;
/// let gold: Vec<LabelSet> = ["Love", "Joy,Anger"].iter().map(|s| s.parse().unwrap()).collect();
/// let pred: Vec<LabelSet> = ["Love", "Joy"].iter().map(|s| s.parse().unwrap()).collect();
/// let r = evaluate(&gold, &pred);
/// assert_eq!(r.exact_match, 0.5);
/// assert_eq!(r.size_confusion[2][1], 1);
/// ```
pub fn evaluate(gold: &[LabelSet], pred: &[LabelSet]) -> Report {
    let counts = label_counts(gold, pred);
    let per_label = Emotion::ALL
        .iter()
        .zip(counts.iter())
        .map(|(e, c)| LabelScore {
            label: e.name().to_string(),
            precision: ratio(c.tp, c.tp + c.fp),
            recall: ratio(c.tp, c.tp + c.fn_),
            f1: c.f1(),
            support: c.tp + c.fn_,
            predicted: c.tp + c.fp,
        })
        .collect();
    let mut size_confusion = vec![vec![0usize; NUM_EMOTIONS + 1]; NUM_EMOTIONS + 1];
    for (g, p) in gold.iter().zip(pred) {
        size_confusion[g.len()][p.len()] += 1;
    }
    Report {
        n: gold.len(),
        hamming_accuracy: hamming_accuracy(gold, pred),
        exact_match: exact_match(gold, pred),
        micro_f1: micro_from_counts(&counts),
        macro_f1: macro_from_counts(&counts),
        per_label,
        size_confusion,
    }
}

/// Which emotion is mistaken for which: `m[g][p]` for `g ≠ p` counts the examples where
/// gold label `g` was missed while `p` was predicted without being gold; the diagonal
/// `m[g][g]` counts the examples where `g` was gold and predicted. Rows are gold labels and
/// columns predicted ones, in canonical order (8 × 8). An example with several misses and
/// several wrong labels adds one to every such pair. Panics if the slices differ in length.
///
/// ```
/// use emoknow::labels::{Emotion, LabelSet};
/// use emoknow::metrics::label_confusion;
/// let gold: Vec<LabelSet> = ["Love,Anxiety"].iter().map(|s| s.parse().unwrap()).collect();
/// let pred: Vec<LabelSet> = ["Love,Sorrow"].iter().map(|s| s.parse().unwrap()).collect();
/// let m = label_confusion(&gold, &pred);
/// assert_eq!(m[Emotion::Anxiety.index()][Emotion::Sorrow.index()], 1); // Anxiety taken for Sorrow
/// assert_eq!(m[Emotion::Love.index()][Emotion::Love.index()], 1);
/// ```
pub fn label_confusion(gold: &[LabelSet], pred: &[LabelSet]) -> Vec<Vec<usize>> {
    check_lengths(gold, pred);
    let mut m = vec![vec![0usize; NUM_EMOTIONS]; NUM_EMOTIONS];
    for (g, p) in gold.iter().zip(pred) {
        let hit = g.0 & p.0;
        let missed = g.0 & !p.0;
        let wrong = p.0 & !g.0;
        for (i, row) in m.iter_mut().enumerate() {
            if hit & (1 << i) != 0 {
                row[i] += 1;
            }
            if missed & (1 << i) != 0 {
                for (j, cell) in row.iter_mut().enumerate() {
                    if wrong & (1 << j) != 0 {
                        *cell += 1;
                    }
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(v: &[&str]) -> Vec<LabelSet> {
        v.iter().map(|s| LabelSet::parse_list(s).unwrap()).collect()
    }

    fn r4(x: f64) -> f64 {
        (x * 1e4).round() / 1e4
    }

    fn r3(x: f64) -> f64 {
        (x * 1e3).round() / 1e3
    }

    #[test]
    fn hand_computed_case() {
        // gold:  {Love,Joy}  {Anger}  {Sorrow}
        // pred:  {Love}      {Anger}  {Joy,Hate}
        // Love:   tp1 fp0 fn0 -> F1 1
        // Joy:    tp0 fp1 fn1 -> F1 0
        // Sorrow: tp0 fp0 fn1 -> F1 0
        // Hate:   tp0 fp1 fn0 -> F1 0
        // Anger:  tp1 fp0 fn0 -> F1 1
        // Anxiety, Expect, Surprise: no gold, no prediction -> F1 0 (sklearn zero_division=0)
        // micro: tp2 fp2 fn2 -> 4/8 = 0.5; macro = 2/8 = 0.25
        // hamming: wrong bits = 1 + 0 + 3 = 4 of 24 -> 20/24
        let gold = sets(&["Love,Joy", "Anger", "Sorrow"]);
        let pred = sets(&["Love", "Anger", "Joy,Hate"]);
        let r = evaluate(&gold, &pred);
        assert_eq!(r.n, 3);
        assert_eq!(r4(r.hamming_accuracy), r4(20.0 / 24.0));
        assert_eq!(r4(r.exact_match), r4(1.0 / 3.0));
        assert_eq!(r4(r.micro_f1), 0.5);
        assert_eq!(r4(r.macro_f1), 0.25);
        let joy = &r.per_label[Emotion::Joy.index()];
        assert_eq!((joy.precision, joy.recall, joy.f1), (0.0, 0.0, 0.0));
        assert_eq!((joy.support, joy.predicted), (1, 1));
        let love = &r.per_label[Emotion::Love.index()];
        assert_eq!((love.precision, love.recall, love.f1), (1.0, 1.0, 1.0));
        assert_eq!(r.size_confusion[2][1], 1);
        assert_eq!(r.size_confusion[1][1], 1);
        assert_eq!(r.size_confusion[1][2], 1);
        assert_eq!(r.size_confusion.iter().flatten().sum::<usize>(), 3);
    }

    #[test]
    fn label_confusion_counts_hits_and_mistakes() {
        let gold = sets(&["Love,Joy", "Anger", "Sorrow", "Hate"]);
        let pred = sets(&["Love", "Anger", "Joy,Hate", "Hate"]);
        let m = label_confusion(&gold, &pred);
        let at = |g: Emotion, p: Emotion| m[g.index()][p.index()];
        assert_eq!(at(Emotion::Love, Emotion::Love), 1);
        assert_eq!(at(Emotion::Hate, Emotion::Hate), 1);
        // Joy missed in row 0 with nothing wrong predicted: no off-diagonal count.
        assert_eq!(m[Emotion::Joy.index()].iter().sum::<usize>(), 0);
        // Sorrow taken for Joy and for Hate.
        assert_eq!(at(Emotion::Sorrow, Emotion::Joy), 1);
        assert_eq!(at(Emotion::Sorrow, Emotion::Hate), 1);
        assert_eq!(m.iter().flatten().sum::<usize>(), 5);
    }

    #[test]
    fn partial_precision_recall() {
        // Love: gold in rows 0,1,2; predicted in rows 0,3 -> tp1 fp1 fn2
        // precision 1/2, recall 1/3, F1 = 2/(2+1+2) = 0.4
        let gold = sets(&["Love", "Love", "Love", "Joy"]);
        let pred = sets(&["Love", "Joy", "Joy", "Love,Joy"]);
        let r = evaluate(&gold, &pred);
        let love = &r.per_label[0];
        assert_eq!(r4(love.precision), 0.5);
        assert_eq!(r4(love.recall), r4(1.0 / 3.0));
        assert_eq!(r4(love.f1), 0.4);
        // Joy: tp1 (row 3) fp2 (rows 1,2) fn0 -> F1 2/(2+2) = 0.5
        assert_eq!(r4(r.per_label[1].f1), 0.5);
        // micro: tp2 fp3 fn2 -> 4/9
        assert_eq!(r4(r.micro_f1), r4(4.0 / 9.0));
        assert_eq!(r4(r.macro_f1), r4(0.9 / 8.0));
    }

    #[test]
    fn perfect_and_empty() {
        let gold = sets(&["Love", "Joy,Anger"]);
        let r = evaluate(&gold, &gold);
        assert_eq!(r.exact_match, 1.0);
        assert_eq!(r.hamming_accuracy, 1.0);
        assert_eq!(r.micro_f1, 1.0);
        // only 3 of 8 labels occur: the 5 absent ones score 0 in the macro average
        assert_eq!(r4(r.macro_f1), r4(3.0 / 8.0));
        let e = evaluate(&[], &[]);
        assert_eq!((e.n, e.exact_match, e.micro_f1), (0, 0.0, 0.0));
    }

    #[test]
    #[should_panic(expected = "2 gold label sets but 1 predictions")]
    fn length_mismatch_panics() {
        evaluate(&sets(&["Love", "Joy"]), &sets(&["Love"]));
    }

    #[test]
    fn report_json_keys() {
        let gold = sets(&["Love"]);
        let v = serde_json::to_value(evaluate(&gold, &gold)).unwrap();
        for k in [
            "n",
            "hamming_accuracy",
            "exact_match",
            "micro_f1",
            "macro_f1",
            "per_label",
            "size_confusion",
        ] {
            assert!(v.get(k).is_some(), "missing key {k}");
        }
        assert_eq!(v["per_label"][0]["label"], "Love");
        assert_eq!(v["per_label"][0]["support"], 1);
    }

    /// The seed's bert-base-chinese predictions on its 1,000 test rows
    /// (seed-repo/bert/pre_bert_chinese.csv): one-hot gold columns 'Love'..'Anger' and a `pred`
    /// column of comma-joined labels. The seed reports .805 / .246 / .509 / .449.
    #[test]
    fn seed_bert_predictions_score_as_reported() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/seed_pre_bert_chinese.csv"
        );
        let mut rdr = csv::Reader::from_path(path).expect("fixture");
        let header = rdr.headers().unwrap().clone();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim_matches('\'') == name)
                .unwrap_or_else(|| panic!("no column {name}"))
        };
        let label_cols: Vec<(Emotion, usize)> =
            Emotion::ALL.iter().map(|e| (*e, col(e.name()))).collect();
        let pred_col = col("pred");
        let (mut gold, mut pred) = (Vec::new(), Vec::new());
        for rec in rdr.records() {
            let rec = rec.unwrap();
            let mut g = LabelSet::EMPTY;
            for (e, c) in &label_cols {
                if rec[*c].trim() == "1" {
                    g.insert(*e);
                }
            }
            gold.push(g);
            pred.push(LabelSet::parse_list(&rec[pred_col]).unwrap());
        }
        assert_eq!(gold.len(), 1000);
        let r = evaluate(&gold, &pred);
        assert_eq!(r3(r.hamming_accuracy), 0.805);
        assert_eq!(r3(r.exact_match), 0.246);
        assert_eq!(r3(r.micro_f1), 0.509);
        assert_eq!(r3(r.macro_f1), 0.449);
        // gold sizes of the test rows: 552 singles, 365 pairs, 79 triples, 4 quadruples
        let gold_sizes: Vec<usize> = r
            .size_confusion
            .iter()
            .map(|row| row.iter().sum())
            .collect();
        assert_eq!(&gold_sizes[..5], &[0, 552, 365, 79, 4]);
    }
}
