//! The linear model's solver: rows in compressed sparse row form ([`Csr`]), one binary
//! L2 logistic-regression problem, its L-BFGS fit, naive-Bayes log-count ratios, and
//! [`fit_label`], which trains one head's regression for one label.

use super::HeadConfig;
use crate::labels::{Emotion, LabelSet};

/// Rows in compressed sparse row form.
pub(super) struct Csr {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
    n_cols: usize,
}

impl Csr {
    pub(super) fn from_rows(rows: Vec<(Vec<u32>, Vec<f32>)>, n_cols: usize) -> Csr {
        let nnz = rows.iter().map(|r| r.0.len()).sum();
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut values = Vec::with_capacity(nnz);
        indptr.push(0);
        for (ids, vals) in rows {
            indices.extend_from_slice(&ids);
            values.extend_from_slice(&vals);
            indptr.push(indices.len());
        }
        Csr {
            indptr,
            indices,
            values,
            n_cols,
        }
    }

    fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// out[i] = x_i · w + b
    fn matvec(&self, w: &[f64], b: f64, out: &mut [f64]) {
        for (i, o) in out.iter_mut().enumerate() {
            let (ids, vals) = self.row(i);
            let mut s = b;
            for (&j, &v) in ids.iter().zip(vals) {
                s += v as f64 * w[j as usize];
            }
            *o = s;
        }
    }

    /// out += Xᵀ d
    fn rmatvec_add(&self, d: &[f64], out: &mut [f64]) {
        for (i, &di) in d.iter().enumerate() {
            if di == 0.0 {
                continue;
            }
            let (ids, vals) = self.row(i);
            for (&j, &v) in ids.iter().zip(vals) {
                out[j as usize] += di * v as f64;
            }
        }
    }
}

/// log(1 + e^(−m)), stable for any m.
fn log1p_exp_neg(m: f64) -> f64 {
    if m > 0.0 {
        (-m).exp().ln_1p()
    } else {
        -m + m.exp().ln_1p()
    }
}

pub(super) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// One binary problem: y ∈ {−1, +1} and per-example loss weights (C folded in).
struct Problem<'a> {
    x: &'a Csr,
    y: Vec<f64>,
    cost: Vec<f64>,
    /// Per-column feature scale (naive-Bayes log-count ratios), or none.
    scale: Option<Vec<f64>>,
}

impl Problem<'_> {
    /// Loss part of the objective at margins z.
    fn loss(&self, z: &[f64]) -> f64 {
        z.iter()
            .zip(&self.y)
            .zip(&self.cost)
            .map(|((&zi, &yi), &ci)| ci * log1p_exp_neg(yi * zi))
            .sum()
    }

    /// Gradient of the objective; `theta` = [w…, b].
    fn gradient(&self, theta: &[f64], z: &[f64], g: &mut [f64]) {
        let d = self.x.n_cols;
        let dz: Vec<f64> = z
            .iter()
            .zip(&self.y)
            .zip(&self.cost)
            .map(|((&zi, &yi), &ci)| -ci * yi * sigmoid(-yi * zi))
            .collect();
        match &self.scale {
            None => {
                g[..d].copy_from_slice(&theta[..d]);
                self.x.rmatvec_add(&dz, &mut g[..d]);
            }
            Some(r) => {
                g[..d].iter_mut().for_each(|v| *v = 0.0);
                self.x.rmatvec_add(&dz, &mut g[..d]);
                for ((gj, rj), wj) in g[..d].iter_mut().zip(r).zip(&theta[..d]) {
                    *gj = *gj * rj + wj;
                }
            }
        }
        g[d] = dz.iter().sum();
    }

    /// out[i] = (r ∘ x_i) · w + b
    fn margins(&self, w: &[f64], b: f64, out: &mut [f64]) {
        match &self.scale {
            None => self.x.matvec(w, b, out),
            Some(r) => {
                let ws: Vec<f64> = w.iter().zip(r).map(|(a, b)| a * b).collect();
                self.x.matvec(&ws, b, out)
            }
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Result of one label's fit.
pub(super) struct Fit {
    pub(super) w: Vec<f64>,
    pub(super) b: f64,
    pub(super) iterations: usize,
}

/// Minimizes ½‖w‖² + Σ cost_i · log(1 + exp(−y_i (x_i·w + b))) with L-BFGS (memory 10) and an
/// Armijo backtracking line search. Deterministic.
fn fit_lbfgs(p: &Problem, max_iter: usize, tol: f64) -> Fit {
    const M: usize = 10;
    let n = p.x.n_rows();
    let d = p.x.n_cols;
    let mut theta = vec![0.0f64; d + 1];
    let mut z = vec![0.0f64; n];
    let mut g = vec![0.0f64; d + 1];
    p.gradient(&theta, &z, &mut g);
    let mut wnorm2 = 0.0;
    let mut f = p.loss(&z);
    let g0 = dot(&g, &g).sqrt();
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho_hist: Vec<f64> = Vec::new();
    let mut dir = vec![0.0f64; d + 1];
    let mut u = vec![0.0f64; n];
    let mut g_new = vec![0.0f64; d + 1];
    let mut iterations = 0;
    while iterations < max_iter && dot(&g, &g).sqrt() > tol * g0 {
        iterations += 1;
        // Two-loop recursion: dir = −H g.
        for (di, gi) in dir.iter_mut().zip(&g) {
            *di = -gi;
        }
        let k = s_hist.len();
        let mut alpha = vec![0.0; k];
        for i in (0..k).rev() {
            alpha[i] = rho_hist[i] * dot(&s_hist[i], &dir);
            for (di, yi) in dir.iter_mut().zip(&y_hist[i]) {
                *di -= alpha[i] * yi;
            }
        }
        if k > 0 {
            let gamma = dot(&s_hist[k - 1], &y_hist[k - 1]) / dot(&y_hist[k - 1], &y_hist[k - 1]);
            for di in dir.iter_mut() {
                *di *= gamma;
            }
        }
        for i in 0..k {
            let beta = rho_hist[i] * dot(&y_hist[i], &dir);
            for (di, si) in dir.iter_mut().zip(&s_hist[i]) {
                *di += (alpha[i] - beta) * si;
            }
        }
        let mut gd = dot(&g, &dir);
        if gd >= 0.0 {
            // Not a descent direction (should not happen on a convex problem): restart.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            for (di, gi) in dir.iter_mut().zip(&g) {
                *di = -gi;
            }
            gd = dot(&g, &dir);
        }
        // Margins move along u = X dir_w + dir_b; the penalty along w + t·dir_w is quadratic.
        p.margins(&dir[..d], dir[d], &mut u);
        let wd = dot(&theta[..d], &dir[..d]);
        let dd = dot(&dir[..d], &dir[..d]);
        let mut step = if k == 0 {
            1.0 / dot(&g, &g).sqrt()
        } else {
            1.0
        };
        let mut accepted = false;
        let mut z_new = vec![0.0f64; n];
        let mut f_new = f;
        for _ in 0..40 {
            for ((zn, zi), ui) in z_new.iter_mut().zip(&z).zip(&u) {
                *zn = zi + step * ui;
            }
            f_new = 0.5 * (wnorm2 + 2.0 * step * wd + step * step * dd) + p.loss(&z_new);
            if f_new <= f + 1e-4 * step * gd {
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
        let s: Vec<f64> = dir.iter().map(|v| v * step).collect();
        for (t, si) in theta.iter_mut().zip(&s) {
            *t += si;
        }
        z = z_new;
        wnorm2 = dot(&theta[..d], &theta[..d]);
        p.gradient(&theta, &z, &mut g_new);
        let yv: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        std::mem::swap(&mut g, &mut g_new);
        let rel_drop = (f - f_new) / f.abs().max(1e-300);
        // Recomputed rather than taken from the line search, so rounding cannot drift.
        f = 0.5 * wnorm2 + p.loss(&z);
        if sy > 1e-12 * dot(&yv, &yv).max(1e-300) {
            if s_hist.len() == M {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            rho_hist.push(1.0 / sy);
            s_hist.push(s);
            y_hist.push(yv);
        }
        if rel_drop.abs() < 1e-12 {
            break;
        }
    }
    let b = theta[d];
    theta.truncate(d);
    Fit {
        w: theta,
        b,
        iterations,
    }
}

/// Trains one head's regression for label `e`: builds y, costs and the column scale (block
/// weights × NB ratios), fits, and folds the scale into the returned weights. A label with no
/// positives (or no negatives) gets zero weights and a smoothed log-odds bias.
/// `blocks`: (word features, text features): columns below the first are words, below the
/// second characters, the rest the context block.
pub(super) fn fit_label(
    x: &Csr,
    blocks: (usize, usize),
    labels: &[LabelSet],
    e: Emotion,
    head: &HeadConfig,
    max_iter: usize,
    tol: f64,
) -> Fit {
    let (n_word, n_text) = blocks;
    let pos = labels.iter().filter(|l| l.contains(e)).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Fit {
            w: vec![0.0; x.n_cols],
            b: ((pos as f64 + 0.5) / (neg as f64 + 0.5)).ln(),
            iterations: 0,
        };
    }
    let pos_cost = head.c * (neg as f64 / pos as f64).powf(head.class_balance);
    let (y, cost) = labels
        .iter()
        .map(|l| {
            if l.contains(e) {
                (1.0, pos_cost)
            } else {
                (-1.0, head.c)
            }
        })
        .unzip();
    let plain = !head.nb_scale && head.word_weight == 1.0 && head.char_weight == 1.0;
    let scale = (!plain).then(|| {
        let mut r = if head.nb_scale {
            nb_ratios(x, labels, e, pos, neg)
        } else {
            vec![1.0; x.n_cols]
        };
        for (j, rj) in r.iter_mut().enumerate() {
            // Context columns (from n_text on) carry their block weight in their values.
            *rj *= if j < n_word {
                head.word_weight
            } else if j < n_text {
                head.char_weight
            } else {
                1.0
            };
        }
        r
    });
    let mut fit = fit_lbfgs(
        &Problem {
            x,
            y,
            cost,
            scale: scale.clone(),
        },
        max_iter,
        tol,
    );
    // Fold the scale into the weights so inference sees plain features.
    if let Some(r) = scale {
        fit.w.iter_mut().zip(&r).for_each(|(w, r)| *w *= r);
    }
    fit
}

/// Naive-Bayes log-count ratios of label `e` per column (NBSVM, Wang & Manning 2012, in the
/// smoothed form r = ln(((Σ_pos x + 1) / (n_pos + 1)) / ((Σ_neg x + 1) / (n_neg + 1))).
fn nb_ratios(x: &Csr, labels: &[LabelSet], e: Emotion, pos: usize, neg: usize) -> Vec<f64> {
    let mut sp = vec![0.0f64; x.n_cols];
    let mut sn = vec![0.0f64; x.n_cols];
    for (i, l) in labels.iter().enumerate() {
        let acc = if l.contains(e) { &mut sp } else { &mut sn };
        let (ids, vals) = x.row(i);
        for (&j, &v) in ids.iter().zip(vals) {
            acc[j as usize] += v as f64;
        }
    }
    sp.iter()
        .zip(&sn)
        .map(|(p, q)| ((p + 1.0) / (pos as f64 + 1.0) / ((q + 1.0) / (neg as f64 + 1.0))).ln())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nb_ratios_by_hand() {
        // Column 0 only in the positive row (value 1), column 1 in both (values 0.5, 0.5).
        // pos = 1, neg = 1: r0 = ln((1+1)/2 / ((0+1)/2)) = ln 2; r1 = ln(1.5/2 / (1.5/2)) = 0.
        let x = Csr::from_rows(vec![(vec![0, 1], vec![1.0, 0.5]), (vec![1], vec![0.5])], 2);
        let labels = [LabelSet::parse_list("Joy").unwrap(), LabelSet::EMPTY];
        let r = nb_ratios(&x, &labels, Emotion::Joy, 1, 1);
        let r4 = |x: f64| (x * 1e4).round() / 1e4;
        assert_eq!(r4(r[0]), r4(2f64.ln()));
        assert_eq!(r4(r[1]), 0.0);
    }

    #[test]
    fn lbfgs_matches_a_hand_solved_problem() {
        // One feature, x = 1 for both rows, y = +1 and −1, C = 1: by symmetry w = b = 0 is
        // the optimum.
        let x = Csr::from_rows(vec![(vec![0], vec![1.0]), (vec![0], vec![1.0])], 1);
        let fit = fit_lbfgs(
            &Problem {
                x: &x,
                y: vec![1.0, -1.0],
                cost: vec![1.0, 1.0],
                scale: None,
            },
            100,
            1e-8,
        );
        assert!(fit.w[0].abs() < 1e-6 && fit.b.abs() < 1e-6);
        // Rows (x=1, y=+1) and (x=0, y=−1), C = 1: the optimum satisfies
        // w = σ(−(w + b)) and σ(−(w + b)) = σ(b) (gradient in b), so b = −(w + b) → w = −2b,
        // and w = σ(b). Solve w = σ(−w/2) numerically: w ≈ 0.4200.
        let x = Csr::from_rows(vec![(vec![0], vec![1.0]), (vec![], vec![])], 1);
        let fit = fit_lbfgs(
            &Problem {
                x: &x,
                y: vec![1.0, -1.0],
                cost: vec![1.0, 1.0],
                scale: None,
            },
            100,
            1e-10,
        );
        let mut w = 0.5f64;
        for _ in 0..200 {
            w = sigmoid(-w / 2.0);
        }
        let r4 = |x: f64| (x * 1e4).round() / 1e4;
        assert_eq!(r4(fit.w[0]), r4(w));
        assert_eq!(r4(fit.b), r4(-w / 2.0));
    }
}
