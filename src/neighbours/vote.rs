//! What a sentence's neighbours say: a similarity-weighted vote of their labels, the kNN
//! classifier's probabilities and the label set stored with retrieved neighbours.

use crate::labels::NUM_EMOTIONS;
use crate::spec::Neighbour;

/// Score-weighted label vote of neighbours: per label, the share of (positive) similarity
/// carried by neighbours with that label. Probabilities in [0, 1].
pub fn knn_vote(neighbours: &[Neighbour]) -> [f32; NUM_EMOTIONS] {
    let mut p = [0f32; NUM_EMOTIONS];
    let total: f32 = neighbours.iter().map(|h| h.score.max(0.0)).sum();
    if total <= 0.0 {
        for h in neighbours {
            for e in h.labels.iter() {
                p[e.index()] += 1.0 / neighbours.len() as f32;
            }
        }
        return p;
    }
    for h in neighbours {
        for e in h.labels.iter() {
            p[e.index()] += h.score.max(0.0) / total;
        }
    }
    p
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A neighbour with labels written as `Love,Joy` (also for other modules' tests).
    pub(crate) fn n(id: u64, score: f32, labels: &str) -> Neighbour {
        Neighbour {
            id,
            score,
            labels: labels.parse().unwrap(),
        }
    }

    #[test]
    fn vote_is_score_weighted() {
        let p = knn_vote(&[n(1, 0.75, "Love"), n(2, 0.25, "Love,Joy")]);
        assert_eq!(p[0], 1.0);
        assert_eq!(p[1], 0.25);
    }
}
