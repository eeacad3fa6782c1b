//! Assigning rows to train / val / test, reproducibly.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which part of the experiment an example belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data (carved from train; used for thresholds and model selection).
    Val,
    /// Held-out test data.
    Test,
}

impl Split {
    /// All splits.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// Lower-case name (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" | "dev" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => Err(format!("unknown split {s:?} (expected train, val or test)")),
        }
    }
}

/// How to split an ingested file.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPlan {
    /// Put every row in this split (overrides the rest).
    pub all: Option<Split>,
    /// The first N rows (file order) are test (the seed: 1000).
    pub test_rows: usize,
    /// The last N rows (file order) are test too: a held-out stretch at the end of a corpus
    /// in document order (whole documents, when they end there) that no choice touches.
    pub test_last: usize,
    /// Fraction of the remaining rows drawn into validation.
    pub val_fraction: f64,
    /// Validation is drawn in runs of this many consecutive rows (0 or 1: single rows). A
    /// corpus in document order (the seed's is) keeps whole stretches of a document out of
    /// training, so validation sees unseen documents as the test split does.
    pub val_block: usize,
    /// Seed of the validation draw.
    pub seed: u64,
}

impl Default for SplitPlan {
    fn default() -> Self {
        SplitPlan {
            all: None,
            test_rows: 0,
            test_last: 0,
            val_fraction: 0.0,
            val_block: 0,
            seed: 42,
        }
    }
}

/// SplitMix64: a stable, dependency-free hash so a split never changes with a `rand` upgrade.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl SplitPlan {
    /// Splits for rows with the given keys (ids), in file order: the first `test_rows` and the
    /// last `test_last` rows are test, validation is drawn from the rows between.
    ///
    /// Validation takes exactly `round(val_fraction × n_train)` rows: those whose
    /// `splitmix64(seed ^ key)` ranks lowest, so the draw depends on the keys and the seed
    /// only, not on the order or the other rows' presence. With `val_block` > 1 the ranked
    /// units are runs of `val_block` consecutive non-test rows (keyed by their first row's key)
    /// and the last run drawn is cut to give the exact count.
    pub fn assign(&self, keys: &[u64]) -> Vec<Split> {
        if let Some(s) = self.all {
            return vec![s; keys.len()];
        }
        let first = self.test_rows.min(keys.len());
        let last = keys.len().saturating_sub(self.test_last).max(first);
        let mut out: Vec<Split> = (0..keys.len())
            .map(|i| {
                if i < first || i >= last {
                    Split::Test
                } else {
                    Split::Train
                }
            })
            .collect();
        let train: Vec<usize> = (first..last).collect();
        let n_val = (self.val_fraction * train.len() as f64).round() as usize;
        if n_val > 0 {
            let block = self.val_block.max(1);
            let mut ranked: Vec<(u64, &[usize])> = train
                .chunks(block)
                .map(|run| (splitmix64(self.seed ^ splitmix64(keys[run[0]])), run))
                .collect();
            ranked.sort_unstable();
            for i in ranked.iter().flat_map(|(_, run)| run.iter()).take(n_val) {
                out[*i] = Split::Val;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rows_then_exact_val_fraction() {
        let keys: Vec<u64> = (1..=100).collect();
        let plan = SplitPlan {
            test_rows: 10,
            val_fraction: 0.2,
            ..Default::default()
        };
        let s = plan.assign(&keys);
        assert!(s[..10].iter().all(|&x| x == Split::Test));
        assert_eq!(s.iter().filter(|&&x| x == Split::Val).count(), 18);
        assert_eq!(plan.assign(&keys), s, "deterministic");
        let other = SplitPlan {
            seed: 7,
            ..plan.clone()
        }
        .assign(&keys);
        assert_ne!(other, s, "the seed matters");
    }

    #[test]
    fn val_blocks_are_runs_of_consecutive_rows() {
        let keys: Vec<u64> = (1..=1000).collect();
        let plan = SplitPlan {
            test_rows: 100,
            val_fraction: 0.1,
            val_block: 20,
            ..Default::default()
        };
        let s = plan.assign(&keys);
        assert!(s[..100].iter().all(|&x| x == Split::Test));
        assert_eq!(s.iter().filter(|&&x| x == Split::Val).count(), 90);
        // 90 rows = four whole runs and half of a fifth; runs start at row 100 + 20·j.
        let starts: Vec<usize> = (1..s.len())
            .filter(|&i| s[i] == Split::Val && s[i - 1] != Split::Val)
            .collect();
        assert!(starts.len() <= 5, "{starts:?}");
        assert!(starts.iter().all(|i| (i - 100) % 20 == 0), "{starts:?}");
        let single = SplitPlan {
            val_block: 1,
            ..plan.clone()
        };
        assert_eq!(
            single.assign(&keys),
            SplitPlan {
                val_block: 0,
                ..plan
            }
            .assign(&keys),
            "blocks of one row are the row-wise draw"
        );
    }

    #[test]
    fn last_rows_are_test_and_never_validation() {
        let keys: Vec<u64> = (1..=1000).collect();
        let plan = SplitPlan {
            test_rows: 100,
            test_last: 200,
            val_fraction: 0.1,
            val_block: 20,
            ..Default::default()
        };
        let s = plan.assign(&keys);
        assert!(s[..100].iter().all(|&x| x == Split::Test));
        assert!(s[800..].iter().all(|&x| x == Split::Test));
        assert!(s[100..800].iter().all(|&x| x != Split::Test));
        assert_eq!(s.iter().filter(|&&x| x == Split::Val).count(), 70);
        // Overlapping ends: everything is test, nothing panics.
        let all = SplitPlan {
            test_rows: 700,
            test_last: 700,
            ..plan
        }
        .assign(&keys);
        assert!(all.iter().all(|&x| x == Split::Test));
    }

    #[test]
    fn all_in_one_split() {
        let plan = SplitPlan {
            all: Some(Split::Test),
            test_rows: 1,
            ..Default::default()
        };
        assert_eq!(plan.assign(&[1, 2]), [Split::Test, Split::Test]);
    }
}
