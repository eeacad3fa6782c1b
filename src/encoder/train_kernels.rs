//! CPU training kernels for [`crate::encoder::bert`]: linear layers, multi-head attention,
//! LayerNorm, exact GELU and dropout (+ residual) as candle custom ops whose forward and backward
//! are each one parallel, vectorized pass (or one gemm per product).
//!
//! Why: through candle's differentiable ops, GELU's backward is five full-size passes with a
//! scalar, single-threaded `erf` and `exp`; the tensor-op LayerNorm is eight passes forward and
//! about twenty backward (broadcasts, reductions, a new buffer for each); a linear layer
//! broadcasts its weight over the batch and sums the gradient after; attention materializes
//! the head transposes, scores and mask; dropout draws its mask serially. Non-CPU or non-f32
//! tensors fall back to candle's ops; both give the same numbers and the same gradients
//! (tested against them).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Storage, Tensor, D};
use rayon::prelude::*;

/// Rows of at least this many floats go to one task.
const TASK_FLOATS: usize = 16 * 1024;

/// Defines `fn $name(args)` whose body is compiled three times — for AVX-512, for AVX2 + FMA
/// and for the baseline — and picks one at run time, so that LLVM vectorizes its plain loops
/// for the widest vectors the CPU has. (A closure passed to a `#[target_feature]` function is
/// not inlined into it, and ran at the baseline: hence a macro.)
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name($($a: $t),*) {
            #[inline(always)]
            fn body($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($a: $t),*) {
                    body($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($a: $t),*) {
                    body($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { avx512($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}

/// Exact (erf) GELU, differentiable.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !cpu_f32(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(Gelu)
}

/// LayerNorm over the last dimension with weight `w` and bias `b`, differentiable in all three.
pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    if !(cpu_f32(x) && cpu_f32(w) && cpu_f32(b)) {
        return candle_nn::ops::layer_norm_slow(x, w, b, eps);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })
}

/// `x·wᵀ + b` for `x` (.., k), `w` (n, k), `b` (n), differentiable in all three: one gemm
/// forward; backward two gemms (dx = g·w, dw = gᵀ·x, written straight into w's layout) and
/// one pass of column sums (db), where candle broadcasts w per sentence and reduces after.
pub(crate) fn linear(x: &Tensor, lin: &candle_nn::Linear) -> candle_core::Result<Tensor> {
    let (w, b) = (lin.weight(), lin.bias());
    let Some(b) = b.filter(|b| cpu_f32(x) && cpu_f32(w) && cpu_f32(b)) else {
        return candle_core::Module::forward(lin, x);
    };
    let k = x.dim(D::Minus1)?;
    let flat = x.contiguous()?.reshape(((), k))?;
    let y = flat.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)?;
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = y.dim(1)?;
    }
    y.reshape(dims)
}

/// [`gemm`] into a new m×n buffer (not zeroed first: gemm writes every element).
fn matmul(
    (m, n, k): (usize, usize, usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    parallel: bool,
) -> Vec<f32> {
    let mut dst = super::kernels::uninit_vec(m * n);
    // SAFETY: MaybeUninit<f32> has f32's layout; gemm only writes `dst` (read_dst = false).
    let view = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, m * n) };
    gemm_into((m, n, k), view, lhs, rhs, parallel);
    // SAFETY: gemm with read_dst = false has written all m×n elements.
    unsafe { super::kernels::assume_init(dst) }
}

/// `dst (m×n) = lhs (m×k) · rhs (k×n)`, each given as (values, row stride, column stride).
/// `parallel`: split the product over rayon's threads (when it is big enough to gain). `dst` is
/// only written, never read.
fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    parallel: bool,
) {
    assert!(dst.len() >= m * n);
    let reach = |(v, rs, cs): (&[f32], usize, usize), rows: usize, cols: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < v.len()
    };
    assert!(
        reach(lhs, m, k) && reach(rhs, k, n),
        "gemm operands out of bounds"
    );
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 && m * n * k > 1 << 15 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: dst holds m×n row-major elements; every element of lhs and rhs addressed by the
    // strides lies inside its slice (asserted above); the slices outlive the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "emoknow-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (m, k) = l1.shape().dims2()?;
        let (n, wk) = l2.shape().dims2()?;
        if wk != k || b.len() != n {
            candle_core::bail!(
                "linear: input {:?}, weight {:?}, bias {}",
                l1.dims(),
                l2.dims(),
                b.len()
            );
        }
        let mut y = if k > n {
            // gemm reads a transposed right-hand side slowly when it is deep (measured 125
            // against 210 GFLOP/s for BERT's 2048 → 512 output layer): transpose w first.
            let mut wt = vec![0f32; k * n];
            wt.par_chunks_mut(n * 64).enumerate().for_each(|(c, rows)| {
                for (r, row) in rows.chunks_mut(n).enumerate() {
                    let kk = c * 64 + r;
                    row.iter_mut()
                        .enumerate()
                        .for_each(|(j, v)| *v = w[j * k + kk]);
                }
            });
            matmul((m, n, k), (x, k, 1), (&wt, n, 1), true)
        } else {
            // wᵀ (k×n): element (kk, j) at j·k + kk.
            matmul((m, n, k), (x, k, 1), (w, 1, k), true)
        };
        y.par_chunks_mut(rows_per_task(n) * n)
            .for_each(|y| add_rows(y, b));
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let (n, _) = w.dims2()?;
        let (dx, dw, db) = with_values(x, |xv| {
            with_values(w, |wv| {
                with_values(grad, |g| {
                    let dx = matmul((m, k, n), (g, n, 1), (wv, k, 1), true);
                    // gᵀ (n×m): element (j, r) at r·n + j.
                    let dw = matmul((n, k, m), (g, 1, n), (xv, k, 1), true);
                    let db = g
                        .par_chunks(rows_per_task(n) * n)
                        .map(|g| {
                            let mut db = vec![0f32; n];
                            add_rows_into(&mut db, g);
                            db
                        })
                        .reduce(
                            || vec![0f32; n],
                            |mut a, b| {
                                add_rows_into(&mut a, &b);
                                a
                            },
                        );
                    Ok((dx, dw, db))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (m, k), dev)?),
            Some(Tensor::from_vec(dw, (n, k), dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

/// Dropout of `x` with probability `p`, plus `res` when given; differentiable. The mask comes
/// from a hash of `seed` and each element's position ([`keep_factor`]), so the backward pass
/// regenerates it instead of storing it, and one pass replaces candle's mask, multiply and add.
pub(crate) fn dropout(
    x: &Tensor,
    res: Option<&Tensor>,
    p: f32,
    seed: u64,
) -> candle_core::Result<Tensor> {
    let plain = |x: &Tensor| -> candle_core::Result<Tensor> {
        let f: Vec<f32> = (0..x.elem_count())
            .map(|i| keep_factor(seed, i as u64, p))
            .collect();
        x * Tensor::from_vec(f, x.shape(), x.device())?.to_dtype(x.dtype())?
    };
    if p <= 0.0 {
        return match res {
            Some(r) => x + r,
            None => Ok(x.clone()),
        };
    }
    match res {
        Some(r) if cpu_f32(x) && cpu_f32(r) && r.dims() == x.dims() => x
            .contiguous()?
            .apply_op2(&r.contiguous()?, Dropout { p, seed }),
        Some(r) => plain(x)? + r,
        None if cpu_f32(x) => x.contiguous()?.apply_op1(Dropout { p, seed }),
        None => plain(x),
    }
}

/// The dropout factor of element `idx` under `seed`: 0 with probability `p`, else 1/(1-p).
#[inline(always)]
fn keep_factor(seed: u64, idx: u64, p: f32) -> f32 {
    // Element idx of the splitmix64 stream started at `seed`.
    let u = (mix(seed.wrapping_add(idx.wrapping_mul(0x9E37_79B9_7F4A_7C15))) >> 40) as f32
        / (1u64 << 24) as f32;
    if u < p {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

struct Dropout {
    p: f32,
    seed: u64,
}

impl Dropout {
    /// `x ∘ mask (+ res)` into a new buffer.
    fn apply(&self, x: &[f32], res: Option<&[f32]>) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(TASK_FLOATS)
            .enumerate()
            .for_each(|(c, y)| {
                let start = c * TASK_FLOATS;
                let x = &x[start..start + y.len()];
                for (i, (y, &x)) in y.iter_mut().zip(x).enumerate() {
                    *y = x * keep_factor(self.seed, (start + i) as u64, self.p);
                }
                if let Some(r) = res {
                    // One row as long as the chunk: y += r.
                    add_rows(y, &r[start..start + y.len()]);
                }
            });
        y
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "emoknow-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((
            CpuStorage::F32(self.apply(slice(s, l)?, None)),
            l.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dx = with_values(grad, |g| Ok(self.apply(g, None)))?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

impl candle_core::CustomOp2 for Dropout {
    fn name(&self) -> &'static str {
        "emoknow-dropout-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.apply(slice(s1, l1)?, Some(slice(s2, l2)?));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = with_values(grad, |g| Ok(self.apply(g, None)))?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(grad.clone()),
        ))
    }
}

/// Multi-head self-attention for training, differentiable in `qkv` (batch, seq, 3·hidden: the
/// query, key and value projections side by side, as one linear layer with the three weight
/// matrices stacked makes them): per (sentence, head), `dropout(softmax(q·kᵀ/√d + mask))·v`,
/// returned as (batch, seq, hidden). `keep` (batch, seq): 1 for real tokens, 0 for padding
/// (those keys get weight 0). Dropout zeroes each attention weight with probability `p` (and
/// scales the rest by 1/(1-p)) by a hash of `seed` and the weight's position, so the backward
/// pass regenerates the mask instead of storing it. One task per (sentence, head), forward and
/// backward, each with its own small gemms reading the heads in place: candle's path
/// materializes the head transposes, the scores, the mask and every intermediate, and runs its
/// batched matmuls head by head. Returns `None` for tensors that are not CPU f32 (the caller
/// then uses candle's ops).
pub(crate) fn attention(
    qkv: &Tensor,
    keep: &Tensor,
    heads: usize,
    p: f32,
    seed: u64,
) -> candle_core::Result<Option<Tensor>> {
    if !cpu_f32(qkv) {
        return Ok(None);
    }
    let (b, s, h3) = qkv.dims3()?;
    let h = h3 / 3;
    if h3 % 3 != 0 || heads == 0 || h % heads != 0 {
        candle_core::bail!("attention: qkv {:?}, {heads} heads", qkv.dims());
    }
    let keep: Vec<f32> = keep.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    if keep.len() != b * s {
        candle_core::bail!("attention: mask {:?} for {b}×{s}", keep.len());
    }
    let op = Attention {
        keep,
        b,
        s,
        h,
        heads,
        p,
        seed,
    };
    Ok(Some(qkv.contiguous()?.apply_op1(op)?))
}

struct Attention {
    keep: Vec<f32>,
    b: usize,
    s: usize,
    /// Hidden size (qkv rows hold 3 × h).
    h: usize,
    heads: usize,
    p: f32,
    seed: u64,
}

/// splitmix64's output function: a well-mixed 64-bit hash of `x`.
#[inline(always)]
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Attention {
    fn d(&self) -> usize {
        self.h / self.heads
    }

    /// Offset of task `t`'s query block in qkv (its key block is `h` further, value `2h`).
    fn base(&self, t: usize) -> usize {
        (t / self.heads) * self.s * 3 * self.h + (t % self.heads) * self.d()
    }

    /// The dropout factor of weight (row, col) of task `t`: 0 or 1/(1-p).
    #[inline(always)]
    fn drop_factor(&self, t: usize, row: usize, col: usize) -> f32 {
        if self.p <= 0.0 {
            return 1.0;
        }
        keep_factor(
            self.seed,
            ((t * self.s + row) * self.s + col) as u64,
            self.p,
        )
    }

    /// Softmax weights of task `t` (sentence t / heads, head t % heads) into `probs` (s×s),
    /// before dropout.
    fn probs(&self, qkv: &[f32], t: usize, probs: &mut [f32]) {
        let (s, h, d) = (self.s, self.h, self.d());
        let base = self.base(t);
        // kᵀ (d×s): element (dd, c) at c·3h + dd.
        gemm_into(
            (s, s, d),
            probs,
            (&qkv[base..], 3 * h, 1),
            (&qkv[base + h..], 1, 3 * h),
            false,
        );
        let i = t / self.heads;
        let keep = &self.keep[i * s..(i + 1) * s];
        masked_softmax_rows(probs, keep, 1.0 / (d as f32).sqrt());
    }

    /// Copies per-task (s×d) blocks into a (b, s, width) buffer at column `offset` of each
    /// head's slot.
    fn scatter(&self, out: &mut [f32], width: usize, offset: usize, blocks: &[&[f32]]) {
        let (s, d) = (self.s, self.d());
        out.par_chunks_mut(s * width)
            .enumerate()
            .for_each(|(i, sent)| {
                for j in 0..self.heads {
                    let block = blocks[i * self.heads + j];
                    for (r, row) in sent.chunks_mut(width).enumerate() {
                        let col = offset + j * d;
                        row[col..col + d].copy_from_slice(&block[r * d..(r + 1) * d]);
                    }
                }
            });
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "emoknow-attention"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = slice(st, l)?;
        let (s, h, d) = (self.s, self.h, self.d());
        if qkv.len() != self.b * s * 3 * h {
            candle_core::bail!("attention: qkv {:?}", l.dims());
        }
        let blocks: Vec<Vec<f32>> = (0..self.b * self.heads)
            .into_par_iter()
            .map(|t| {
                let mut probs = vec![0f32; s * s];
                self.probs(qkv, t, &mut probs);
                for (r, row) in probs.chunks_mut(s).enumerate() {
                    for (c, x) in row.iter_mut().enumerate() {
                        *x *= self.drop_factor(t, r, c);
                    }
                }
                let v = &qkv[self.base(t) + 2 * h..];
                matmul((s, d, s), (&probs, s, 1), (v, 3 * h, 1), false)
            })
            .collect();
        let mut out = vec![0f32; self.b * s * h];
        let refs: Vec<&[f32]> = blocks.iter().map(Vec::as_slice).collect();
        self.scatter(&mut out, h, 0, &refs);
        Ok((CpuStorage::F32(out), Shape::from((self.b, s, h))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (s, h, d) = (self.s, self.h, self.d());
        let scale = 1.0 / (d as f32).sqrt();
        let blocks: Vec<[Vec<f32>; 3]> = with_values(arg, |qkv| {
            with_values(grad, |g| {
                Ok((0..self.b * self.heads)
                    .into_par_iter()
                    .map(|t| {
                        let base = self.base(t);
                        let (q, k, v) = (&qkv[base..], &qkv[base + h..], &qkv[base + 2 * h..]);
                        let g = &g[(t / self.heads) * s * h + (t % self.heads) * d..];
                        let mut probs = vec![0f32; s * s];
                        self.probs(qkv, t, &mut probs);
                        let mut dropped = probs.clone();
                        for (r, row) in dropped.chunks_mut(s).enumerate() {
                            for (c, x) in row.iter_mut().enumerate() {
                                *x *= self.drop_factor(t, r, c);
                            }
                        }
                        // dv = dropped(P)ᵀ·g
                        let dv = matmul((s, d, s), (&dropped, 1, s), (g, h, 1), false);
                        // dP = (g·vᵀ) ∘ dropout factors
                        let mut ds = matmul((s, s, d), (g, h, 1), (v, 1, 3 * h), false);
                        for (r, (row, p)) in ds.chunks_mut(s).zip(probs.chunks(s)).enumerate() {
                            let mut dot = 0f32;
                            for (c, (x, &p)) in row.iter_mut().zip(p).enumerate() {
                                *x *= self.drop_factor(t, r, c);
                                dot += *x * p;
                            }
                            // dS = P ∘ (dP − Σ dP∘P), times the 1/√d of the scores
                            for (x, &p) in row.iter_mut().zip(p) {
                                *x = p * (*x - dot) * scale;
                            }
                        }
                        let dq = matmul((s, d, s), (&ds, s, 1), (k, 3 * h, 1), false);
                        let dk = matmul((s, d, s), (&ds, 1, s), (q, 3 * h, 1), false);
                        [dq, dk, dv]
                    })
                    .collect())
            })
        })?;
        let mut dqkv = vec![0f32; self.b * s * 3 * h];
        for part in 0..3 {
            let refs: Vec<&[f32]> = blocks.iter().map(|b| b[part].as_slice()).collect();
            self.scatter(&mut dqkv, 3 * h, part * h, &refs);
        }
        Ok(Some(Tensor::from_vec(dqkv, arg.shape(), arg.device())?))
    }
}

fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The values of a contiguous CPU f32 storage.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("expected contiguous f32 values"),
    }
}

/// Runs `f` on the f32 values of `t` (made contiguous first): in place for a CPU f32 tensor,
/// else on a copy.
pub(crate) fn with_values<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    {
        let (s, l) = t.storage_and_layout();
        if let Storage::Cpu(c @ CpuStorage::F32(_)) = &*s {
            return f(slice(c, l)?);
        }
    }
    f(&t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Rows (of `n` floats) per parallel task.
fn rows_per_task(n: usize) -> usize {
    (TASK_FLOATS / n.max(1)).max(1)
}

simd_fn! {
    /// Adds `b` to every row of `y` (rows of `b.len()`).
    fn add_rows(y: &mut [f32], b: &[f32]) {
        for row in y.chunks_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
}

simd_fn! {
    /// Adds every row of `g` (rows of `acc.len()`) to `acc`.
    fn add_rows_into(acc: &mut [f32], g: &[f32]) {
        for row in g.chunks(acc.len()) {
            acc.iter_mut().zip(row).for_each(|(a, g)| *a += g);
        }
    }
}

simd_fn! {
    /// Softmax of each row of `probs` (rows of `keep.len()`) after scaling by `scale`; keys
    /// whose `keep` is 0 get weight 0.
    fn masked_softmax_rows(probs: &mut [f32], keep: &[f32], scale: f32) {
        for row in probs.chunks_mut(keep.len()) {
            let mut max = f32::NEG_INFINITY;
            for (x, &kp) in row.iter_mut().zip(keep) {
                *x *= scale;
                if kp > 0.0 {
                    max = max.max(*x);
                }
            }
            let mut sum = 0f32;
            for (x, &kp) in row.iter_mut().zip(keep) {
                let e = exp_f32(*x - max);
                *x = if kp > 0.0 { e } else { 0.0 };
                sum += *x;
            }
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

simd_fn! {
    fn gelu_fwd(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = super::kernels::gelu_f32(x);
        }
    }
}

simd_fn! {
    fn gelu_bwd(dx: &mut [f32], x: &[f32], g: &[f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            *d = g * gelu_grad(x);
        }
    }
}

simd_fn! {
    /// LayerNorm of each row of `x` (rows of `w.len()`) into `y`.
    fn layer_norm_rows(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let n = w.len();
        for (y, x) in y.chunks_mut(n).zip(x.chunks(n)) {
            let (mean, rstd) = row_stats(x, eps);
            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - mean) * rstd * w + b;
            }
        }
    }
}

simd_fn! {
    /// LayerNorm's backward for the rows of `x` and `g`: dx written, dw and db accumulated.
    fn layer_norm_grad_rows(
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
        x: &[f32],
        g: &[f32],
        w: &[f32],
        eps: f32,
    ) {
        let n = w.len();
        let mut xhat = vec![0f32; n];
        for ((dx, x), g) in dx.chunks_mut(n).zip(x.chunks(n)).zip(g.chunks(n)) {
            let (mean, rstd) = row_stats(x, eps);
            let (mut sum_gy, mut sum_gy_xhat) = (0f32, 0f32);
            for ((((h, &x), &g), &w), (dw, db)) in xhat
                .iter_mut()
                .zip(x)
                .zip(g)
                .zip(w)
                .zip(dw.iter_mut().zip(db.iter_mut()))
            {
                *h = (x - mean) * rstd;
                let gy = g * w;
                sum_gy += gy;
                sum_gy_xhat += gy * *h;
                *dw += g * *h;
                *db += g;
            }
            let (a, c) = (sum_gy / n as f32, sum_gy_xhat / n as f32);
            for (((dx, &h), &g), &w) in dx.iter_mut().zip(&xhat).zip(g).zip(w) {
                *dx = rstd * (g * w - a - h * c);
            }
        }
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "emoknow-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(TASK_FLOATS)
            .zip(x.par_chunks(TASK_FLOATS))
            .for_each(|(y, x)| gelu_fwd(y, x));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dx = with_values(arg, |x| {
            with_values(grad, |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(TASK_FLOATS)
                    .zip(x.par_chunks(TASK_FLOATS).zip(g.par_chunks(TASK_FLOATS)))
                    .for_each(|(dx, (x, g))| gelu_bwd(dx, x, g));
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// d/dx of x·Φ(x): Φ(x) + x·φ(x).
#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + super::kernels::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * INV_SQRT_2PI * exp_f32(-0.5 * x * x)
}

/// exp for f32 by range reduction (x = n·ln2 + r, |r| ≤ ln2/2) and a degree-6 polynomial,
/// written so that LLVM vectorizes it: relative error below 2e-7 on [-87, 88] (tested); 0 below
/// -87.3 (where f32 exp leaves the normal range) and clamped at 88.
#[inline(always)]
fn exp_f32(x_in: f32) -> f32 {
    let x = x_in.clamp(-87.3, 88.0);
    // Round to nearest by the 1.5·2²³ trick (no call to floorf, which does not vectorize
    // without SSE4.1).
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // ln2 split in two for an exact product with n (Cody–Waite).
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    p = p * r * r + r + 1.0;
    // 2^n through the exponent bits; n ∈ [-126, 127] after the clamp.
    let y = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x_in < -87.3 {
        0.0
    } else {
        y
    }
}

struct LayerNorm {
    eps: f32,
}

/// Mean and 1/std of one row.
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "emoknow-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let n = l1.dims().last().copied().unwrap_or(0);
        if n == 0 || w.len() != n || b.len() != n {
            candle_core::bail!(
                "layer_norm: input {:?}, weight {}, bias {}",
                l1.dims(),
                w.len(),
                b.len()
            );
        }
        let eps = self.eps;
        let mut y = vec![0f32; x.len()];
        let chunk = rows_per_task(n) * n;
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(y, x)| layer_norm_rows(y, x, w, b, eps));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(D::Minus1)?;
        let eps = self.eps;
        let (dx, dw, db) = with_values(x, |xv| {
            with_values(w, |wv| {
                with_values(grad, |gv| {
                    let mut dx = vec![0f32; xv.len()];
                    let chunk = rows_per_task(n) * n;
                    // Each task sums its rows' dw and db; the sums are added after.
                    let (dw, db) = dx
                        .par_chunks_mut(chunk)
                        .zip(xv.par_chunks(chunk).zip(gv.par_chunks(chunk)))
                        .map(|(dx, (x, g))| {
                            let mut dw = vec![0f32; n];
                            let mut db = vec![0f32; n];
                            layer_norm_grad_rows(dx, &mut dw, &mut db, x, g, wv, eps);
                            (dw, db)
                        })
                        .reduce(
                            || (vec![0f32; n], vec![0f32; n]),
                            |(mut aw, mut ab), (bw, bb)| {
                                add_rows_into(&mut aw, &bw);
                                add_rows_into(&mut ab, &bb);
                                (aw, ab)
                            },
                        );
                    Ok((dx, dw, db))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, n, dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::bert::tests::max_abs_diff;
    use candle_core::{Device, Var};

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Forward values and the gradients of sum(y · r) (r random, so every output element
    /// weighs differently) agree with candle's ops.
    fn same_as_candle(
        vars: &[Var],
        ours: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        theirs: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        tol: f32,
    ) {
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (ours(&ts).unwrap(), theirs(&ts).unwrap());
        assert_eq!(a.dims(), b.dims());
        let d = max_abs_diff(&flat(&a), &flat(&b));
        assert!(d < tol, "forward differs by {d}");
        let r = Tensor::randn(0f32, 1.0, a.shape(), &Device::Cpu).unwrap();
        let ga = (a * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).unwrap(), gb.get(v).unwrap());
            let d = max_abs_diff(&flat(x), &flat(y));
            assert!(d < tol, "gradient of input {i} differs by {d}");
        }
    }

    #[test]
    fn linear_matches_candle_forward_and_backward() {
        let dev = Device::Cpu;
        // Wider out than in, and deeper in than out (w transposed first, over two blocks).
        for (k, n) in [(24, 40), (150, 24)] {
            let x = Var::randn(0f32, 1.0, (3, 7, k), &dev).unwrap();
            let w = Var::randn(0f32, 0.5, (n, k), &dev).unwrap();
            let b = Var::randn(0f32, 0.5, n, &dev).unwrap();
            let lin = |t: &[Tensor]| candle_nn::Linear::new(t[1].clone(), Some(t[2].clone()));
            same_as_candle(
                &[x, w, b],
                |t| linear(&t[0], &lin(t)),
                |t| candle_core::Module::forward(&lin(t), &t[0]),
                1e-4,
            );
        }
    }

    /// Candle's ops with the same dropout mask as [`Attention::drop_factor`].
    fn reference_attention(
        t: &[Tensor],
        keep: &Tensor,
        heads: usize,
        p: f32,
        seed: u64,
    ) -> candle_core::Result<Tensor> {
        let (b, s, h) = t[0].dims3()?;
        let d = h / heads;
        let split = |x: &Tensor| x.reshape((b, s, heads, d))?.transpose(1, 2)?.contiguous();
        let add = keep
            .to_dtype(DType::F32)?
            .affine(1e9, -1e9)?
            .reshape((b, 1, 1, s))?;
        let scores = (split(&t[0])?.matmul(&split(&t[1])?.t()?)? / (d as f64).sqrt())?
            .broadcast_add(&add)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let op = Attention {
            keep: vec![],
            b,
            s,
            h,
            heads,
            p,
            seed,
        };
        let mut f = Vec::new();
        for task in 0..b * heads {
            for r in 0..s {
                for c in 0..s {
                    f.push(op.drop_factor(task, r, c));
                }
            }
        }
        let mask = Tensor::from_vec(f, (b, heads, s, s), &Device::Cpu)?;
        (probs * mask)?
            .matmul(&split(&t[2])?)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))
    }

    #[test]
    fn attention_matches_candle_forward_and_backward_with_padding_and_dropout() {
        let dev = Device::Cpu;
        let (b, s, h, heads) = (3, 7, 16, 4);
        let keep = Tensor::new(
            &[
                [1u32, 1, 1, 1, 1, 1, 1],
                [1, 1, 1, 0, 0, 0, 0],
                [1, 1, 1, 1, 1, 1, 0],
            ],
            &dev,
        )
        .unwrap();
        for p in [0.0, 0.3] {
            let vars: Vec<Var> = (0..3)
                .map(|_| Var::randn(0f32, 1.0, (b, s, h), &dev).unwrap())
                .collect();
            same_as_candle(
                &vars,
                |t| Ok(attention(&Tensor::cat(t, 2)?, &keep, heads, p, 7)?.unwrap()),
                |t| reference_attention(t, &keep, heads, p, 7),
                1e-4,
            );
        }
        // About p of the weights are dropped, and another seed drops others.
        let op = |seed| Attention {
            keep: vec![],
            b,
            s: 50,
            h,
            heads,
            p: 0.3,
            seed,
        };
        let (a, c) = (op(1), op(2));
        let dropped = (0..2500)
            .filter(|&i| a.drop_factor(0, i / 50, i % 50) == 0.0)
            .count();
        assert!(
            (600..900).contains(&dropped),
            "{dropped} of 2500 dropped at p 0.3"
        );
        let differ = (0..2500)
            .filter(|&i| a.drop_factor(0, i / 50, i % 50) != c.drop_factor(0, i / 50, i % 50))
            .count();
        assert!(differ > 500, "{differ}");
    }

    #[test]
    fn dropout_matches_candle_with_the_same_mask() {
        let dev = Device::Cpu;
        let vars: Vec<Var> = (0..2)
            .map(|_| Var::randn(0f32, 1.0, (5, 9, 8000), &dev).unwrap())
            .collect();
        let (p, seed) = (0.25f32, 11);
        let mask = |t: &Tensor| {
            let f: Vec<f32> = (0..t.elem_count())
                .map(|i| keep_factor(seed, i as u64, p))
                .collect();
            Tensor::from_vec(f, t.shape(), &dev).unwrap()
        };
        same_as_candle(
            &vars,
            |t| dropout(&t[0], Some(&t[1]), p, seed),
            |t| (&t[0] * mask(&t[0]))? + &t[1],
            1e-5,
        );
        same_as_candle(
            &vars[..1],
            |t| dropout(&t[0], None, p, seed),
            |t| &t[0] * mask(&t[0]),
            1e-5,
        );
        let kept = (0..100_000)
            .filter(|&i| keep_factor(seed, i, p) > 0.0)
            .count();
        assert!(
            (74_000..76_000).contains(&kept),
            "{kept} of 100,000 kept at p 0.25"
        );
    }

    #[test]
    fn exp_matches_std_within_2e7_relative() {
        let mut worst = 0f32;
        for i in -8700..8800 {
            let x = i as f32 / 100.0 + 0.003;
            let (want, got) = (x.exp(), exp_f32(x));
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2e-7, "max relative error {worst:e}");
        assert_eq!(exp_f32(f32::MIN), 0.0);
        assert_eq!(exp_f32(-90.0), 0.0);
    }

    #[test]
    fn gelu_matches_candle_forward_and_backward() {
        let x = Var::randn(0f32, 2.0, (3, 7, 40), &Device::Cpu).unwrap();
        same_as_candle(&[x], |t| gelu(&t[0]), |t| t[0].gelu_erf(), 1e-5);
    }

    #[test]
    fn layer_norm_matches_candle_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::randn(0.5f32, 3.0, (4, 9, 48), &dev).unwrap();
        let w = Var::randn(1f32, 0.3, 48, &dev).unwrap();
        let b = Var::randn(0f32, 0.3, 48, &dev).unwrap();
        same_as_candle(
            &[x, w, b],
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-12),
            |t| candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-12),
            1e-4,
        );
    }

    /// candle's backward pass, as patched in vendor/candle-core (a node's first gradient is
    /// stored, not added into zeros), against gradients worked out by hand: fan-in through
    /// `x + x` and `x · x`, the subtracting rules (`-`, `/`, `neg`), a node read twice
    /// downstream, a transposed view, and a variable that gets no gradient.
    #[test]
    fn patched_backward_matches_hand_gradients() {
        let dev = Device::Cpu;
        let xs = [0.5f32, -1.0, 2.0];
        let ys = [1.5f32, 2.0, -0.5];
        let x = Var::from_slice(&xs, 3, &dev).unwrap();
        let y = Var::from_slice(&ys, 3, &dev).unwrap();
        let unused = Var::from_slice(&[1f32, 2.0], 2, &dev).unwrap();
        let (xt, yt) = (x.as_tensor(), y.as_tensor());
        // f = Σ x·x + (x + x) − y − x/y + neg(x·y) + (x·y)·(x·y)
        let h = (xt * yt).unwrap();
        let f = ((xt * xt).unwrap() + (xt + xt).unwrap()).unwrap();
        let f = ((f - yt).unwrap() - (xt / yt).unwrap()).unwrap();
        let f = ((f + h.neg().unwrap()).unwrap() + (&h * &h).unwrap()).unwrap();
        let g = f.sum_all().unwrap().backward().unwrap();
        let gx = flat(g.get(xt).unwrap());
        let gy = flat(g.get(yt).unwrap());
        for i in 0..3 {
            let (a, b) = (xs[i], ys[i]);
            // ∂f/∂x = 2x + 2 − 1/y − y + 2(xy)·y;  ∂f/∂y = −1 + x/y² − x + 2(xy)·x
            let want_x = 2.0 * a + 2.0 - 1.0 / b - b + 2.0 * a * b * b;
            let want_y = -1.0 + a / (b * b) - a + 2.0 * a * b * a;
            assert!(
                (gx[i] - want_x).abs() < 1e-5,
                "x[{i}]: {} vs {want_x}",
                gx[i]
            );
            assert!(
                (gy[i] - want_y).abs() < 1e-5,
                "y[{i}]: {} vs {want_y}",
                gy[i]
            );
        }
        assert!(g.get(unused.as_tensor()).is_none());

        // A transposed view: Σ (mᵀ ⊙ w) has gradient wᵀ with m's shape, contiguous.
        let m = Var::from_slice(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &dev).unwrap();
        let w = Tensor::from_slice(&[1f32, -2.0, 3.0, -4.0, 5.0, -6.0], (3, 2), &dev).unwrap();
        let s = (m.as_tensor().t().unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = s.backward().unwrap();
        let gm = g.get(m.as_tensor()).unwrap();
        assert_eq!(gm.dims(), &[2, 3]);
        assert!(gm.is_contiguous());
        assert_eq!(flat(gm), vec![1.0, 3.0, 5.0, -2.0, -4.0, -6.0]);
    }
}
