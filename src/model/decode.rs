//! Label-set decoding: choosing a whole label set from the eight calibrated probabilities and
//! how labels co-occur in training, instead of eight independent threshold decisions.
//!
//! The probability of a set `S` given a sentence is modelled as
//!
//! ```text
//! P(S | x) ∝ Π_j q_j^[j∈S] (1 − q_j)^[j∉S] · (P_train(S) / Π_j π_j^[j∈S] (1 − π_j)^[j∉S])^β
//! ```
//!
//! over the non-empty sets seen at least `min_count` times in training (every non-empty set
//! when 0): `q` are the calibrated probabilities, `P_train(S)` the set's frequency among the
//! training labels (shrunk towards the independent labels' by one pseudo-observation, so a set
//! never seen is penalized, never favoured) and `π_j` each label's. The second factor is how much more often
//! a set occurs than independent labels would make it (Love with Joy, Anxiety with Sorrow);
//! `β` (0: labels independent) and `min_count` are chosen on validation. The decoded set
//! maximizes the chosen target's expected value under that distribution: exact match (the most
//! probable set), F1 (`Σ_Y P(Y | x) · F1(S, Y)`), or micro-F1 over a whole corpus: each label
//! whose marginal `P(j ∈ Y | x)` under that distribution exceeds one cut chosen on validation
//! (for corpus-level micro-F1 the best decisions threshold every label's probability at the
//! same value, half the F1 reached, rather than maximize each sentence's own F1). The empty
//! set is never chosen: every sentence of the corpus carries an emotion.

use crate::error::{Error, Result};
use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::metrics;
use crate::model::sample::Probs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a decoded set maximizes in expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetTarget {
    /// Exact match: the most probable set.
    Exact,
    /// F1 between the set and the gold set (each sentence's own).
    F1,
    /// Micro-F1 over many sentences: the labels whose marginal probability exceeds
    /// [`SetDecoder::cut`] (the most probable set when none does).
    Micro,
}

/// How a model turns probabilities into label sets, as `meta.json` records it when it decodes
/// sets (absent: per-label thresholds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetDecoder {
    /// What the chosen set maximizes in expectation.
    pub target: SetTarget,
    /// Weight of the co-occurrence correction (0: labels independent).
    pub beta: f32,
    /// Sets seen fewer times in training are never chosen (0: every non-empty set).
    pub min_count: u32,
    /// How often each label set occurs among the training labels (`"Love,Joy"` → count).
    pub train_sets: BTreeMap<String, u32>,
    /// The marginal probability above which a label is chosen ([`SetTarget::Micro`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<f32>,
}

/// Smoothing added to every label's training count.
const ALPHA: f64 = 0.5;
/// Pseudo-observations of independent labels mixed into the training set frequencies.
const PSEUDO_SETS: f64 = 1.0;
/// Probabilities are clipped to [EPS, 1 − EPS] before their logarithm is taken.
const EPS: f64 = 1e-6;
/// Every non-empty set.
const ALL_SETS: u16 = (1 << NUM_EMOTIONS) - 1;

/// The values of β and of the minimum count tried on validation.
const BETAS: [f32; 6] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5];
const MIN_COUNTS: [u32; 5] = [0, 1, 2, 5, 10];
/// The cuts tried for [`SetTarget::Micro`]: .20 to .50 by .01 (the best micro-F1 cut is half
/// the micro-F1 reached, and the corpus's models reach .4 to .7 on validation).
fn cuts() -> impl Iterator<Item = f32> {
    (20..=50).map(|c| c as f32 / 100.0)
}

/// The training label sets counted (`"Love,Joy"` → count), for [`SetDecoder::train_sets`].
pub fn count_sets(gold: &[LabelSet]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for g in gold.iter().filter(|g| !g.is_empty()) {
        *out.entry(g.to_string()).or_insert(0) += 1;
    }
    out
}

impl SetDecoder {
    /// The decoder for `target` whose β and minimum count give the best validation score
    /// (exact match for [`SetTarget::Exact`], micro-F1 for [`SetTarget::F1`]) on `probs`
    /// (calibrated validation probabilities) against `gold`; the first best on ties (smaller
    /// β, then smaller minimum count).
    pub fn choose(
        target: SetTarget,
        train_sets: BTreeMap<String, u32>,
        probs: &[Probs],
        gold: &[LabelSet],
    ) -> Result<SetDecoder> {
        let mut best: Option<(f64, SetDecoder)> = None;
        for beta in BETAS {
            for min_count in MIN_COUNTS {
                let d = SetDecoder {
                    target,
                    beta,
                    min_count,
                    train_sets: train_sets.clone(),
                    // Replaced below by each cut tried.
                    cut: (target == SetTarget::Micro).then_some(0.5),
                };
                let c = Candidates::new(&d)?;
                if c.sets.is_empty() {
                    continue;
                }
                // Each row's distribution once; the cuts tried only threshold its marginals.
                let rows: Vec<Row> = probs.iter().map(|p| c.row(p)).collect();
                let cuts: Vec<Option<f32>> = match target {
                    SetTarget::Micro => cuts().map(Some).collect(),
                    SetTarget::Exact | SetTarget::F1 => vec![None],
                };
                for cut in cuts {
                    let pred: Vec<LabelSet> = rows
                        .iter()
                        .map(|r| c.choose_in(r, cut.map_or(0.5, f64::from)))
                        .collect();
                    let r = metrics::evaluate(gold, &pred);
                    let score = match target {
                        SetTarget::Exact => r.exact_match,
                        SetTarget::F1 | SetTarget::Micro => r.micro_f1,
                    };
                    if best.as_ref().is_none_or(|(s, _)| score > *s + 1e-12) {
                        best = Some((score, SetDecoder { cut, ..d.clone() }));
                    }
                }
            }
        }
        best.map(|(_, d)| d)
            .ok_or_else(|| Error::Model("no label set seen in training to decode into".into()))
    }
}

/// One row's distribution over the candidate sets, and its labels' marginal probabilities.
struct Row {
    dist: Vec<f64>,
    marginal: [f64; NUM_EMOTIONS],
}

/// A [`SetDecoder`] ready to decode: its candidate sets with their prior correction.
#[derive(Debug, Clone)]
pub struct Candidates {
    target: SetTarget,
    /// Candidate sets (bits).
    sets: Vec<u8>,
    /// β × the log co-occurrence correction of each.
    prior: Vec<f64>,
    /// The marginal cut of [`SetTarget::Micro`].
    cut: f64,
}

impl Candidates {
    /// Checks `d` (known label names, no empty set) and computes its candidates.
    pub fn new(d: &SetDecoder) -> Result<Candidates> {
        let mut counts = [0u32; 1 << NUM_EMOTIONS];
        for (names, &n) in &d.train_sets {
            let set = LabelSet::parse_list(names)
                .map_err(|e| Error::Model(format!("decode: training set {names:?}: {e}")))?;
            if set.is_empty() {
                return Err(Error::Model("decode: an empty training label set".into()));
            }
            counts[usize::from(set.0)] = counts[usize::from(set.0)].saturating_add(n);
        }
        if !(d.beta.is_finite() && d.beta >= 0.0) {
            return Err(Error::Model(format!("decode: beta {} is not ≥ 0", d.beta)));
        }
        let cut = match (d.target, d.cut) {
            (SetTarget::Micro, Some(c)) if c > 0.0 && c < 1.0 => f64::from(c),
            (SetTarget::Micro, c) => {
                return Err(Error::Model(format!(
                    "decode: the micro target needs a cut between 0 and 1, not {c:?}"
                )))
            }
            _ => 0.5,
        };
        let total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
        let marginal: [f64; NUM_EMOTIONS] = std::array::from_fn(|j| {
            let with: f64 = (1..=ALL_SETS as usize)
                .filter(|s| s >> j & 1 == 1)
                .map(|s| f64::from(counts[s]))
                .sum();
            (with + ALPHA) / (total + 2.0 * ALPHA)
        });
        let mut sets = Vec::new();
        let mut prior = Vec::new();
        for s in 1..=ALL_SETS {
            let c = counts[usize::from(s)];
            if c < d.min_count {
                continue;
            }
            let independent: f64 = (0..NUM_EMOTIONS)
                .map(|j| {
                    if s >> j & 1 == 1 {
                        marginal[j]
                    } else {
                        1.0 - marginal[j]
                    }
                })
                .product();
            // The set's frequency, shrunk towards what independent labels would give it by
            // PSEUDO_SETS pseudo-observations: a set never seen is less likely than
            // independence says, never more.
            let freq = (f64::from(c) + PSEUDO_SETS * independent) / (total + PSEUDO_SETS);
            sets.push(s as u8);
            prior.push(f64::from(d.beta) * (freq.ln() - independent.ln()));
        }
        Ok(Candidates {
            target: d.target,
            sets,
            prior,
            cut,
        })
    }

    /// The candidate sets with their probabilities for one row (summing to 1), in candidate
    /// order.
    fn distribution(&self, p: &Probs) -> Vec<f64> {
        let lp: [f64; NUM_EMOTIONS] =
            std::array::from_fn(|j| f64::from(p[j]).clamp(EPS, 1.0 - EPS).ln());
        let lq: [f64; NUM_EMOTIONS] =
            std::array::from_fn(|j| (1.0 - f64::from(p[j]).clamp(EPS, 1.0 - EPS)).ln());
        let scores: Vec<f64> = self
            .sets
            .iter()
            .zip(&self.prior)
            .map(|(&s, &prior)| {
                prior
                    + (0..NUM_EMOTIONS)
                        .map(|j| if s >> j & 1 == 1 { lp[j] } else { lq[j] })
                        .sum::<f64>()
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let z: f64 = w.iter().sum();
        w.into_iter().map(|x| x / z).collect()
    }

    /// One row's distribution and marginals.
    fn row(&self, p: &Probs) -> Row {
        let dist = self.distribution(p);
        let marginal = std::array::from_fn(|j| {
            self.sets
                .iter()
                .zip(&dist)
                .filter(|(&s, _)| s >> j & 1 == 1)
                .map(|(_, &q)| q)
                .sum()
        });
        Row { dist, marginal }
    }

    /// For the micro target, each label's probability under the sets (the sum of the
    /// probabilities of the candidate sets holding it) and the cut the chosen labels exceed;
    /// `None` for the other targets, which choose a whole set.
    pub fn label_probabilities(&self, p: &Probs) -> Option<(Probs, f32)> {
        (self.target == SetTarget::Micro).then(|| {
            let row = self.row(p);
            (row.marginal.map(|m| m as f32), self.cut as f32)
        })
    }

    /// The set for one row of calibrated probabilities (the first best on ties, in
    /// candidate order).
    pub fn decode(&self, p: &Probs) -> LabelSet {
        self.choose_in(&self.row(p), self.cut)
    }

    /// The set the target chooses from one row (`cut`: the micro target's).
    fn choose_in(&self, row: &Row, cut: f64) -> LabelSet {
        let dist = &row.dist;
        if self.target == SetTarget::Micro {
            let above = (0..NUM_EMOTIONS)
                .filter(|&j| row.marginal[j] > cut)
                .fold(0u8, |s, j| s | 1 << j);
            if above != 0 {
                return LabelSet(above);
            }
        }
        let value: Vec<f64> = match self.target {
            SetTarget::Exact | SetTarget::Micro => dist.clone(),
            SetTarget::F1 => self
                .sets
                .iter()
                .map(|&s| {
                    self.sets
                        .iter()
                        .zip(dist)
                        .map(|(&y, &py)| py * f1(s, y))
                        .sum()
                })
                .collect(),
        };
        let mut best = 0;
        for i in 1..value.len() {
            if value[i] > value[best] {
                best = i;
            }
        }
        LabelSet(self.sets.get(best).copied().unwrap_or(0))
    }

    /// The `n` most probable sets for one row, with their probabilities, most probable first.
    pub fn top(&self, p: &Probs, n: usize) -> Vec<(LabelSet, f64)> {
        let mut all: Vec<(LabelSet, f64)> = self
            .sets
            .iter()
            .zip(self.distribution(p))
            .map(|(&s, q)| (LabelSet(s), q))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(n);
        all
    }

    /// Every non-empty set, labels independent (what a model that decodes by thresholds
    /// reports as its most probable sets).
    pub fn independent() -> Candidates {
        Candidates {
            target: SetTarget::Exact,
            sets: (1..=ALL_SETS).map(|s| s as u8).collect(),
            prior: vec![0.0; usize::from(ALL_SETS)],
            cut: 0.5,
        }
    }
}

/// F1 between two non-empty sets (bits).
fn f1(s: u8, y: u8) -> f64 {
    let both = (s & y).count_ones();
    2.0 * f64::from(both) / f64::from(s.count_ones() + y.count_ones())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn f(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    fn random_train_sets(rng: &mut Rng) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for _ in 0..60 {
            let s = 1 + (rng.f() * 254.0) as u8;
            *out.entry(LabelSet(s).to_string()).or_insert(0) += 1 + (rng.f() * 20.0) as u32;
        }
        out
    }

    /// The brute-force reference: every non-empty set scored as a plain product in f64 (no
    /// logarithms), the prior correction recomputed from the counts.
    fn brute_force(d: &SetDecoder, p: &Probs) -> LabelSet {
        let mut counts = [0f64; 256];
        for (names, &n) in &d.train_sets {
            counts[usize::from(LabelSet::parse_list(names).unwrap().0)] += f64::from(n);
        }
        let total: f64 = counts.iter().sum();
        let pi: Vec<f64> = (0..8)
            .map(|j| {
                let w: f64 = (1..256)
                    .filter(|s| s >> j & 1 == 1)
                    .map(|s| counts[s])
                    .sum();
                (w + 0.5) / (total + 1.0)
            })
            .collect();
        let prob = |s: usize| -> f64 {
            let mut v = 1.0;
            let mut indep = 1.0;
            for j in 0..8 {
                let q = f64::from(p[j]).clamp(1e-6, 1.0 - 1e-6);
                if s >> j & 1 == 1 {
                    v *= q;
                    indep *= pi[j];
                } else {
                    v *= 1.0 - q;
                    indep *= 1.0 - pi[j];
                }
            }
            let freq = (counts[s] + indep) / (total + 1.0);
            v * (freq / indep).powf(f64::from(d.beta))
        };
        let allowed: Vec<usize> = (1..256)
            .filter(|&s| counts[s] >= f64::from(d.min_count))
            .collect();
        if d.target == SetTarget::Micro {
            // Each label's marginal probability: the normalized mass of the allowed sets
            // holding it.
            let z: f64 = allowed.iter().map(|&y| prob(y)).sum();
            let above = (0..8)
                .filter(|&j| {
                    let with: f64 = allowed
                        .iter()
                        .filter(|&&y| y >> j & 1 == 1)
                        .map(|&y| prob(y))
                        .sum();
                    with / z > f64::from(d.cut.unwrap())
                })
                .fold(0usize, |s, j| s | 1 << j);
            if above != 0 {
                return LabelSet(above as u8);
            }
        }
        let value = |s: usize| -> f64 {
            match d.target {
                SetTarget::Exact | SetTarget::Micro => prob(s),
                SetTarget::F1 => allowed
                    .iter()
                    .map(|&y| {
                        let both = (s & y).count_ones() as f64;
                        prob(y) * 2.0 * both / f64::from(s.count_ones() + y.count_ones())
                    })
                    .sum(),
            }
        };
        let best = allowed
            .iter()
            .copied()
            .max_by(|&a, &b| value(a).total_cmp(&value(b)).then(b.cmp(&a)))
            .unwrap();
        LabelSet(best as u8)
    }

    #[test]
    fn decoding_is_the_brute_force_argmax_over_all_non_empty_sets() {
        let mut rng = Rng(0x5EED_0026);
        for round in 0..400 {
            let target = [SetTarget::Exact, SetTarget::F1, SetTarget::Micro][round % 3];
            let d = SetDecoder {
                target,
                beta: [0.0, 0.5, 1.0, 1.5][round % 4],
                min_count: [0, 0, 3][round / 3 % 3],
                train_sets: random_train_sets(&mut rng),
                cut: (target == SetTarget::Micro).then(|| 0.2 + 0.3 * rng.f()),
            };
            let c = Candidates::new(&d).unwrap();
            for _ in 0..20 {
                let p: Probs = std::array::from_fn(|_| rng.f());
                let got = c.decode(&p);
                assert!(!got.is_empty());
                assert_eq!(got, brute_force(&d, &p), "{d:?} {p:?}");
            }
        }
    }

    #[test]
    fn independent_labels_give_the_most_probable_set_of_the_probabilities() {
        let c = Candidates::independent();
        // Love .9, Joy .6, the rest low: {Love, Joy}.
        let p = [0.9, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
        assert_eq!(c.decode(&p).to_string(), "Love,Joy");
        // All low: never empty, the single most probable label.
        let p = [0.1, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1];
        assert_eq!(c.decode(&p).to_string(), "Anxiety");
        let top = c.top(&p, 3);
        assert_eq!(top.len(), 3);
        assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1);
        assert_eq!(top[0].0.to_string(), "Anxiety");
    }

    #[test]
    fn co_occurrence_pulls_towards_sets_seen_in_training() {
        // Love and Joy always together in training; each at .55 alone is a coin toss.
        let train = count_sets(&[LabelSet::parse_list("Love,Joy").unwrap(); 50]);
        let p = [0.55, 0.45, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05];
        let independent = SetDecoder {
            target: SetTarget::Exact,
            beta: 0.0,
            min_count: 0,
            train_sets: train.clone(),
            cut: None,
        };
        assert_eq!(
            Candidates::new(&independent)
                .unwrap()
                .decode(&p)
                .to_string(),
            "Love"
        );
        let joint = SetDecoder {
            beta: 1.0,
            ..independent
        };
        assert_eq!(
            Candidates::new(&joint).unwrap().decode(&p).to_string(),
            "Love,Joy"
        );
        let only_seen = SetDecoder {
            min_count: 1,
            beta: 0.0,
            ..joint
        };
        assert_eq!(
            Candidates::new(&only_seen).unwrap().decode(&p).to_string(),
            "Love,Joy"
        );
    }

    #[test]
    fn a_decoder_with_unknown_labels_or_an_empty_set_is_refused() {
        let mut sets = BTreeMap::new();
        sets.insert("Happy".to_string(), 3);
        let d = SetDecoder {
            target: SetTarget::Exact,
            beta: 0.0,
            min_count: 0,
            train_sets: sets,
            cut: None,
        };
        assert!(Candidates::new(&d).is_err());
        let d = SetDecoder {
            beta: f32::NAN,
            train_sets: count_sets(&[LabelSet(1)]),
            ..d
        };
        assert!(Candidates::new(&d).is_err());
    }

    /// 200 validation rows alternating {Love, Joy} and {Anxiety}: each gold label at
    /// probability `yes`, every other at `no`.
    fn two_set_rows(yes: f32, no: f32) -> (Vec<LabelSet>, Vec<Probs>) {
        let gold: Vec<LabelSet> = (0..200)
            .map(|i| LabelSet(if i % 2 == 0 { 0b11 } else { 0b100 }))
            .collect();
        let probs = gold
            .iter()
            .map(|g| std::array::from_fn(|j| if g.0 >> j & 1 == 1 { yes } else { no }))
            .collect();
        (gold, probs)
    }

    #[test]
    fn choose_picks_on_validation_and_never_an_empty_set() {
        let (gold, probs) = two_set_rows(0.45, 0.05);
        let d = SetDecoder::choose(SetTarget::Exact, count_sets(&gold), &probs, &gold).unwrap();
        let c = Candidates::new(&d).unwrap();
        let pred: Vec<LabelSet> = probs.iter().map(|p| c.decode(p)).collect();
        assert_eq!(pred, gold, "{d:?}");
    }

    #[test]
    fn the_micro_target_takes_the_labels_whose_marginal_exceeds_the_cut() {
        let train = count_sets(&[LabelSet::parse_list("Love,Joy").unwrap(); 50]);
        let d = SetDecoder {
            target: SetTarget::Micro,
            beta: 0.0,
            min_count: 0,
            train_sets: train,
            cut: Some(0.3),
        };
        let c = Candidates::new(&d).unwrap();
        // Labels independent (β 0, every set): the marginals are the probabilities, a little
        // raised by leaving out the empty set.
        let p = [0.9, 0.35, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1];
        assert_eq!(c.decode(&p).to_string(), "Love,Joy");
        // None above the cut: the most probable set, never an empty one.
        let p = [0.1, 0.2, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1];
        assert_eq!(c.decode(&p).to_string(), "Anxiety");
        // A decoder of the micro target without a cut is refused.
        assert!(Candidates::new(&SetDecoder {
            cut: None,
            ..d.clone()
        })
        .is_err());
        assert!(Candidates::new(&SetDecoder {
            cut: Some(1.0),
            ..d
        })
        .is_err());
    }

    #[test]
    fn choose_picks_the_micro_cut_on_validation() {
        // Positives at .45, negatives at .15: only a cut between them gets every row right.
        let (gold, probs) = two_set_rows(0.45, 0.15);
        let d = SetDecoder::choose(SetTarget::Micro, count_sets(&gold), &probs, &gold).unwrap();
        let cut = d.cut.unwrap();
        assert!((0.15..0.45).contains(&cut), "{d:?}");
        let c = Candidates::new(&d).unwrap();
        let pred: Vec<LabelSet> = probs.iter().map(|p| c.decode(p)).collect();
        assert_eq!(pred, gold, "{d:?}");
        // The targets that pick a whole set have no cut.
        let d = SetDecoder::choose(SetTarget::Exact, count_sets(&gold), &probs, &gold).unwrap();
        assert_eq!(d.cut, None);
    }
}
