//! Calibrated probabilities: per-label Platt scaling fitted on validation, and how well
//! probabilities are calibrated (expected calibration error and reliability curves).
//!
//! A classifier's per-label scores are probabilities in name only: a linear model's sigmoid,
//! an MLP head's or a fine-tuned BERT's are over- or under-confident in their own ways, and an
//! ensemble averages members whose scales differ. [`Calibration::fit`] maps each label's score
//! `p` to `σ(a·logit(p) + b)`, with `a` and `b` the maximum-likelihood fit on validation labels
//! (a small pull towards the identity keeps labels with few positives sane). The map is
//! strictly increasing (`a > 0`), so it never reorders a label's scores, and fitting it again on
//! its own output gives the identity (the family is closed under composition).

use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use crate::model::sample::Probs;
use serde::{Deserialize, Serialize};

/// Per-label Platt scaling: `p' = σ(a·logit(p) + b)` (canonical label order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Slope per label (always > 0).
    pub a: [f32; NUM_EMOTIONS],
    /// Intercept per label.
    pub b: [f32; NUM_EMOTIONS],
}

/// Scores are clipped to [EPS, 1 − EPS] before their logit is taken.
const EPS: f64 = 1e-6;
/// The smallest slope a fit may take: the map stays strictly increasing.
const MIN_SLOPE: f64 = 1e-3;
/// Weight of the pull towards the identity (a = 1, b = 0), against the summed log-loss.
const RIDGE: f64 = 1e-2;
/// Newton steps of a fit.
const NEWTON_STEPS: usize = 50;

fn logit(p: f64) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Calibration {
    /// The map that changes nothing.
    pub fn identity() -> Calibration {
        Calibration {
            a: [1.0; NUM_EMOTIONS],
            b: [0.0; NUM_EMOTIONS],
        }
    }

    /// Fits each label's slope and intercept on `probs` (validation scores) against `gold`.
    /// Deterministic. Empty input gives the identity.
    pub fn fit(probs: &[Probs], gold: &[LabelSet]) -> Calibration {
        let mut c = Calibration::identity();
        for j in 0..NUM_EMOTIONS {
            let xs: Vec<(f64, f64)> = probs
                .iter()
                .zip(gold)
                .map(|(p, g)| {
                    (
                        logit(f64::from(p[j])),
                        f64::from(u8::from((g.0 >> j) & 1 == 1)),
                    )
                })
                .collect();
            let (a, b) = fit_one(&xs);
            c.a[j] = a as f32;
            c.b[j] = b as f32;
        }
        c
    }

    /// One label's calibrated probability.
    pub fn apply_label(&self, j: usize, p: f32) -> f32 {
        sigmoid(f64::from(self.a[j]) * logit(f64::from(p)) + f64::from(self.b[j])) as f32
    }

    /// Calibrated probabilities of one row.
    pub fn apply_one(&self, p: &Probs) -> Probs {
        std::array::from_fn(|j| self.apply_label(j, p[j]))
    }

    /// Calibrated probabilities of every row.
    pub fn apply(&self, probs: &[Probs]) -> Vec<Probs> {
        probs.iter().map(|p| self.apply_one(p)).collect()
    }

    /// Whether every slope is positive and every number finite (what loading checks).
    pub fn is_valid(&self) -> bool {
        self.a.iter().all(|a| a.is_finite() && *a > 0.0) && self.b.iter().all(|b| b.is_finite())
    }
}

/// Maximum-likelihood logistic regression of `y` on `x` with a ridge towards (1, 0), by Newton's
/// method on the two parameters: `(slope, intercept)`.
fn fit_one(xs: &[(f64, f64)]) -> (f64, f64) {
    if xs.is_empty() {
        return (1.0, 0.0);
    }
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..NEWTON_STEPS {
        // Gradient and Hessian of Σ logloss + RIDGE/2 · ((a−1)² + b²).
        let (mut ga, mut gb) = (RIDGE * (a - 1.0), RIDGE * b);
        let (mut haa, mut hab, mut hbb) = (RIDGE, 0.0, RIDGE);
        for &(x, y) in xs {
            let q = sigmoid(a * x + b);
            let r = q - y;
            ga += r * x;
            gb += r;
            let w = (q * (1.0 - q)).max(1e-12);
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if !det.is_finite() || det <= 0.0 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a = (a - da).max(MIN_SLOPE);
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    if a.is_finite() && b.is_finite() {
        (a, b)
    } else {
        (1.0, 0.0)
    }
}

/// Bins of [`Reliability`] and of the expected calibration error.
pub const BINS: usize = 10;

/// How well probabilities match frequencies: the expected calibration error (ECE: the
/// average, weighted by bin size, of |mean probability − fraction positive| over 10 equal-width
/// bins) of all labels' probabilities pooled, and each label's ECE and reliability curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reliability {
    /// ECE of the eight labels' probabilities pooled (8 × rows predictions).
    pub ece: f64,
    /// Per label, canonical order.
    pub per_label: Vec<LabelReliability>,
}

/// One label's calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelReliability {
    /// Label name.
    pub label: String,
    /// Its ECE.
    pub ece: f64,
    /// Its reliability curve: the non-empty bins.
    pub bins: Vec<Bin>,
}

/// One bin of a reliability curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge (the bin holds probabilities in [lo, lo + 0.1); the last one includes 1).
    pub lo: f64,
    /// Predictions in the bin.
    pub n: usize,
    /// Their mean probability.
    pub mean_probability: f64,
    /// The fraction of them whose label is in gold.
    pub fraction_positive: f64,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    n: usize,
    p: f64,
    y: f64,
}

fn bin_of(p: f32) -> usize {
    ((f64::from(p).clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1)
}

fn ece_of(acc: &[Acc; BINS]) -> f64 {
    let total: usize = acc.iter().map(|a| a.n).sum();
    if total == 0 {
        return 0.0;
    }
    acc.iter()
        .filter(|a| a.n > 0)
        .map(|a| (a.p - a.y).abs())
        .sum::<f64>()
        / total as f64
}

/// The calibration of `probs` against `gold` (same rows).
pub fn reliability(probs: &[Probs], gold: &[LabelSet]) -> Reliability {
    let mut pooled = [Acc::default(); BINS];
    let mut per = [[Acc::default(); BINS]; NUM_EMOTIONS];
    for (p, g) in probs.iter().zip(gold) {
        for j in 0..NUM_EMOTIONS {
            let y = f64::from(u8::from((g.0 >> j) & 1 == 1));
            let b = bin_of(p[j]);
            for acc in [&mut pooled[b], &mut per[j][b]] {
                acc.n += 1;
                acc.p += f64::from(p[j]);
                acc.y += y;
            }
        }
    }
    Reliability {
        ece: ece_of(&pooled),
        per_label: Emotion::ALL
            .iter()
            .map(|e| {
                let acc = &per[e.index()];
                LabelReliability {
                    label: e.name().to_string(),
                    ece: ece_of(acc),
                    bins: acc
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| a.n > 0)
                        .map(|(i, a)| Bin {
                            lo: i as f64 / BINS as f64,
                            n: a.n,
                            mean_probability: a.p / a.n as f64,
                            fraction_positive: a.y / a.n as f64,
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Rows whose label j is positive with probability `truth(score)`, scored `score`.
    fn data(n: usize, seed: u64, truth: impl Fn(f32) -> f32) -> (Vec<Probs>, Vec<LabelSet>) {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f32 / (1u64 << 53) as f32
        };
        let mut probs = Vec::new();
        let mut gold = Vec::new();
        for _ in 0..n {
            let p: Probs = std::array::from_fn(|_| next());
            let mut bits = 0u8;
            for (j, &pj) in p.iter().enumerate() {
                if next() < truth(pj) {
                    bits |= 1 << j;
                }
            }
            probs.push(p);
            gold.push(LabelSet(bits));
        }
        (probs, gold)
    }

    #[test]
    fn an_overconfident_model_is_calibrated_and_the_map_is_monotone() {
        // True frequency is a squashed version of the score: the model is overconfident.
        let (probs, gold) = data(4000, 7, |p| 0.25 + 0.5 * p);
        let before = reliability(&probs, &gold).ece;
        let c = Calibration::fit(&probs, &gold);
        assert!(c.is_valid());
        let after = reliability(&c.apply(&probs), &gold).ece;
        assert!(before > 0.1 && after < 0.03, "ECE {before} → {after}");
        for j in 0..NUM_EMOTIONS {
            let mut last = -1.0f32;
            for i in 0..=1000 {
                let q = c.apply_label(j, i as f32 / 1000.0);
                assert!(q >= last, "label {j} decreases at {i}");
                last = q;
            }
        }
    }

    #[test]
    fn calibrating_calibrated_probabilities_changes_nothing() {
        let (probs, gold) = data(3000, 11, |p| p * p);
        let c = Calibration::fit(&probs, &gold);
        let once = c.apply(&probs);
        let again = Calibration::fit(&once, &gold);
        for j in 0..NUM_EMOTIONS {
            assert!((again.a[j] - 1.0).abs() < 1e-3, "{again:?}");
            assert!(again.b[j].abs() < 1e-3, "{again:?}");
        }
        let twice = again.apply(&once);
        for (x, y) in once.iter().zip(&twice) {
            for j in 0..NUM_EMOTIONS {
                assert!((x[j] - y[j]).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn a_label_never_seen_stays_finite_and_increasing() {
        let probs = vec![[0.3f32; NUM_EMOTIONS]; 50];
        let gold = vec![LabelSet(1); 50];
        let c = Calibration::fit(&probs, &gold);
        assert!(c.is_valid(), "{c:?}");
        assert!(c.apply_label(1, 0.3) < 0.1);
        assert!(c.apply_label(0, 0.3) > 0.9);
        assert_eq!(Calibration::fit(&[], &[]), Calibration::identity());
    }

    #[test]
    fn ece_counts_each_bins_gap_by_its_size() {
        // Label 0 always at 0.95 and always positive: gap 0.05; the others at 0.0, never.
        let probs = vec![[0.95, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]; 10];
        let gold = vec![LabelSet(1); 10];
        let r = reliability(&probs, &gold);
        assert!((r.per_label[0].ece - 0.05).abs() < 1e-6);
        assert!((r.ece - 0.05 / 8.0).abs() < 1e-6);
        assert_eq!(r.per_label[0].bins.len(), 1);
        assert_eq!(r.per_label[0].bins[0].n, 10);
        assert_eq!(r.per_label[1].ece, 0.0);
    }
}
