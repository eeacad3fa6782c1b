//! Seeded synthetic vectors shaped like sentence embeddings, for ANN benchmarks at sizes no
//! stored corpus reaches: `clusters` gaussian centres; each row is its cluster's centre, plus
//! a rank-16 gaussian spread along that cluster's own directions (scale 0.5), plus isotropic
//! noise (0.3), L2-normalized. Uniform random vectors would be unrealistic: in high
//! dimension all their distances are nearly equal, and neighbours mean nothing.

use crate::error::Result;
use crate::store::vectors::VectorSet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Rank of each cluster's spread.
const RANK: usize = 16;

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `rows` vectors of dimension `dim` with ids 1..=rows, deterministic for a `seed`.
pub fn clustered(rows: usize, dim: usize, clusters: usize, seed: u64) -> Result<VectorSet> {
    let clusters = clusters.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..clusters * dim).map(|_| normal(&mut rng)).collect();
    let bases: Vec<f32> = (0..clusters * dim * RANK)
        .map(|_| 0.5 * normal(&mut rng))
        .collect();
    let data: Vec<f32> = (0..rows)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut r =
                StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)));
            let c = r.random_range(0..clusters);
            let z: Vec<f32> = (0..RANK).map(|_| normal(&mut r)).collect();
            let mut v: Vec<f32> = (0..dim)
                .map(|d| {
                    let b = &bases[(c * dim + d) * RANK..(c * dim + d + 1) * RANK];
                    centres[c * dim + d]
                        + 0.3 * normal(&mut r)
                        + b.iter().zip(&z).map(|(x, y)| x * y).sum::<f32>()
                })
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= n);
            v
        })
        .collect();
    VectorSet::from_rows((1..=rows as u64).collect(), dim, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_vectors_and_rows_are_unit_length() {
        let rows = |v: &VectorSet| {
            (0..v.len())
                .flat_map(|i| v.row(i).to_vec())
                .collect::<Vec<f32>>()
        };
        let a = clustered(50, 8, 4, 1).unwrap();
        assert_eq!(rows(&a), rows(&clustered(50, 8, 4, 1).unwrap()));
        assert_ne!(rows(&a), rows(&clustered(50, 8, 4, 2).unwrap()));
        let n: f32 = a.row(7).iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
}
