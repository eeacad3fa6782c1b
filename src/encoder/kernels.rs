//! CPU inference kernels for [`crate::encoder::bert`]: a linear layer that calls gemm once and
//! finishes bias + exact GELU (or bias + residual) in one parallel, vectorized pass.
//!
//! Why: candle runs `x·wᵀ`, `+ b`, `gelu_erf` and `+ residual` as separate passes, each
//! allocating a new tensor, and its `gelu_erf` is a scalar, single-threaded loop that took as
//! long as a quarter of a BERT layer on 2 cores. These kernels have no backward pass: training
//! goes through `train_kernels`. Non-CPU or non-f32 tensors fall back to candle.

use candle_core::{CpuStorage, DType, Module, Storage, Tensor};
use rayon::prelude::*;

/// What to do with `x·wᵀ + b` before returning it.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// Nothing.
    None,
    /// Exact (erf) GELU.
    Gelu,
    /// Add a tensor of the output's shape (a residual connection).
    Residual(&'a Tensor),
}

/// `epilogue(x·wᵀ + b)` for `x` (.., k), `w` (n, k), `b` (n).
pub(crate) fn linear(
    x: &Tensor,
    lin: &candle_nn::Linear,
    epi: Epilogue,
) -> candle_core::Result<Tensor> {
    let w = lin.weight();
    let b = lin.bias();
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    let resid_ok = match epi {
        Epilogue::Residual(r) => cpu_f32(r),
        _ => true,
    };
    if !(cpu_f32(x) && cpu_f32(w) && b.is_none_or(cpu_f32) && resid_ok) {
        return fallback(x, lin, epi);
    }
    let k = x.dim(candle_core::D::Minus1)?;
    let (n, wk) = w.dims2()?;
    if wk != k {
        candle_core::bail!(
            "linear: input width {k} does not match weight {:?}",
            w.dims()
        );
    }
    let m = x.elem_count() / k.max(1);
    let mut out_dims = x.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = n;
    }

    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let resid = match epi {
        Epilogue::Residual(r) => {
            if r.dims() != out_dims.as_slice() {
                candle_core::bail!("linear: residual {:?} vs output {out_dims:?}", r.dims());
            }
            Some(r.contiguous()?)
        }
        _ => None,
    };
    let mut dst = uninit_vec(m * n);
    {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let xv = f32_slice(&xs, xl.start_offset(), m * k)?;
        let wv = f32_slice(&ws, wl.start_offset(), n * k)?;
        let threads = rayon::current_num_threads();
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: dst is m×n row-major (row stride n); lhs is x, m×k row-major; rhs is wᵀ,
        // k×n, read from w (n×k row-major): element (kk, j) at j*k + kk. All three buffers
        // hold exactly the elements addressed and stay borrowed for the call.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr() as *mut f32,
                1,
                n as isize,
                false,
                xv.as_ptr(),
                1,
                k as isize,
                wv.as_ptr(),
                k as isize,
                1,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            );
        }
    }
    // SAFETY: gemm with read_dst = false has written all m×n elements.
    let mut dst = unsafe { assume_init(dst) };
    let bias_guard = b.map(|b| b.contiguous()).transpose()?;
    let bias_sl = bias_guard.as_ref().map(|b| b.storage_and_layout());
    let bias: Option<&[f32]> = match &bias_sl {
        Some((s, l)) => Some(f32_slice(s, l.start_offset(), n)?),
        None => None,
    };
    let resid_sl = resid.as_ref().map(|r| r.storage_and_layout());
    let resid: Option<&[f32]> = match &resid_sl {
        Some((s, l)) => Some(f32_slice(s, l.start_offset(), m * n)?),
        None => None,
    };
    let gelu = matches!(epi, Epilogue::Gelu);
    if bias.is_some() || resid.is_some() || gelu {
        // Rows per task: enough work to amortize scheduling (~32k floats).
        let rows = (32 * 1024 / n.max(1)).max(1);
        dst.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(ci, chunk)| {
                for (ri, row) in chunk.chunks_mut(n).enumerate() {
                    let r = ci * rows + ri;
                    let res = resid.map(|v| &v[r * n..(r + 1) * n]);
                    epilogue_row(row, bias, res, gelu);
                }
            });
    }
    Tensor::from_vec(dst, out_dims, x.device())
}

/// A buffer for a kernel to fill through raw pointers: skips zeroing (and, for fresh pages,
/// touching) memory that is overwritten anyway.
pub(super) fn uninit_vec(n: usize) -> Vec<std::mem::MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: MaybeUninit needs no initialization.
    unsafe { v.set_len(n) };
    v
}

/// SAFETY: every element must have been written.
pub(super) unsafe fn assume_init(v: Vec<std::mem::MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same layout, length and capacity; the caller guarantees initialization.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used by `attention`, whose tasks write disjoint elements.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// Multi-head self-attention at inference: `softmax(q·kᵀ/√d + mask)·v` per (sentence, head)
/// in parallel, reading the heads straight out of `q`, `k`, `v` (batch, seq, hidden) and
/// writing the context in the same layout, so no transposes are materialized.
/// `mask` (batch, seq): 1 for real tokens, 0 for padding (masked keys get weight 0).
/// Returns `None` when the tensors are not CPU f32 (the caller then uses candle ops).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
) -> candle_core::Result<Option<Tensor>> {
    let ok = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(ok(q) && ok(k) && ok(v)) {
        return Ok(None);
    }
    let (b, s, h) = q.dims3()?;
    if k.dims() != q.dims() || v.dims() != q.dims() || h % heads != 0 {
        candle_core::bail!(
            "attention: shapes {:?} {:?} {:?}, {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let keep: Vec<f32> = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    if keep.len() != b * s {
        candle_core::bail!("attention: mask {:?} for {b}×{s}", mask.dims());
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let qv = f32_slice(&qs, ql.start_offset(), b * s * h)?;
    let kv = f32_slice(&ks, kl.start_offset(), b * s * h)?;
    let vv = f32_slice(&vs, vl.start_offset(), b * s * h)?;
    let mut out = uninit_vec(b * s * h);
    let dst = SharedMut(out.as_mut_ptr() as *mut f32);
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0f32; s * s],
        |scores, t| {
            let (i, j) = (t / heads, t % heads);
            let base = i * s * h + j * d;
            let keep = &keep[i * s..(i + 1) * s];
            // The closure captures the whole Sync wrapper, not its raw pointer field.
            #[allow(clippy::redundant_locals)]
            let dst = dst;
            // SAFETY (both calls): the head's rows of q/k/v start at `base` with row
            // stride h and d columns, inside the slices; `scores` is s×s row-major; the
            // context block written (rows of sentence i, columns of head j) is disjoint
            // from every other task's.
            unsafe {
                gemm::gemm(
                    s,
                    s,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    s as isize,
                    false,
                    qv.as_ptr().add(base),
                    1,
                    h as isize,
                    kv.as_ptr().add(base),
                    h as isize,
                    1,
                    0.0f32,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in scores.chunks_mut(s) {
                let mut max = f32::NEG_INFINITY;
                for (x, &m) in row.iter().zip(keep) {
                    if m > 0.0 && *x > max {
                        max = *x;
                    }
                }
                let mut sum = 0f32;
                for (x, &m) in row.iter_mut().zip(keep) {
                    *x = if m > 0.0 { (*x - max).exp() } else { 0.0 };
                    sum += *x;
                }
                // A sentence whose mask hides every key has no context: zeros, not NaN.
                let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                for x in row.iter_mut() {
                    *x *= inv;
                }
            }
            unsafe {
                gemm::gemm(
                    s,
                    d,
                    s,
                    dst.0.add(base),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    s as isize,
                    vv.as_ptr().add(base),
                    1,
                    h as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    drop((qs, ks, vs));
    // SAFETY: the tasks together wrote every (sentence, position, head, column) element.
    let out = unsafe { assume_init(out) };
    Ok(Some(Tensor::from_vec(out, (b, s, h), q.device())?))
}

fn fallback(x: &Tensor, lin: &candle_nn::Linear, epi: Epilogue) -> candle_core::Result<Tensor> {
    let y = lin.forward(x)?;
    match epi {
        Epilogue::None => Ok(y),
        Epilogue::Gelu => y.gelu_erf(),
        Epilogue::Residual(r) => y + r,
    }
}

fn f32_slice(s: &Storage, offset: usize, len: usize) -> candle_core::Result<&[f32]> {
    match s {
        Storage::Cpu(CpuStorage::F32(v)) if v.len() >= offset + len => Ok(&v[offset..offset + len]),
        _ => candle_core::bail!("expected {len} contiguous f32 values on the CPU"),
    }
}

fn epilogue_row(row: &mut [f32], bias: Option<&[f32]>, resid: Option<&[f32]>, gelu: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { epilogue_avx512(row, bias, resid, gelu) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { epilogue_avx2(row, bias, resid, gelu) };
        }
    }
    epilogue_generic(row, bias, resid, gelu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn epilogue_avx512(
    row: &mut [f32],
    bias: Option<&[f32]>,
    resid: Option<&[f32]>,
    gelu: bool,
) {
    epilogue_generic(row, bias, resid, gelu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn epilogue_avx2(row: &mut [f32], bias: Option<&[f32]>, resid: Option<&[f32]>, gelu: bool) {
    epilogue_generic(row, bias, resid, gelu)
}

// Written as simple loops so that LLVM vectorizes them for whatever features the caller enables.
#[inline(always)]
fn epilogue_generic(row: &mut [f32], bias: Option<&[f32]>, resid: Option<&[f32]>, gelu: bool) {
    if let Some(b) = bias {
        for (y, b) in row.iter_mut().zip(b) {
            *y += *b;
        }
    }
    if let Some(r) = resid {
        for (y, r) in row.iter_mut().zip(r) {
            *y += *r;
        }
    }
    if gelu {
        for y in row.iter_mut() {
            *y = gelu_f32(*y);
        }
    }
}

#[inline(always)]
pub(super) fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as a rational function on [-4, 4] (±1 outside, where f32 erf is ±1): the
/// approximation used by Eigen and XLA for f32; absolute error below 1e-6 (tested).
#[inline(always)]
pub(super) fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_5e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn erf_matches_reference_within_1e6() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            let want = candle_core::cpu::erf::erf_f64(x);
            let got = erf_f32(x as f32) as f64;
            worst = worst.max((want - got).abs());
        }
        assert!(worst < 1e-6, "max |erf error| = {worst:e}");
    }

    #[test]
    fn attention_matches_candle_ops() {
        let dev = Device::Cpu;
        let (b, s, h, heads) = (3, 7, 16, 4);
        let q = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let mask = Tensor::new(
            &[
                [1u32, 1, 1, 1, 1, 1, 1],
                [1, 1, 1, 0, 0, 0, 0],
                [1, 1, 1, 1, 1, 1, 0],
            ],
            &dev,
        )
        .unwrap();
        let got = attention(&q, &k, &v, &mask, heads).unwrap().unwrap();
        // Reference: the textbook formula with candle ops.
        let split = |t: &Tensor| {
            t.reshape((b, s, heads, h / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let add = mask
            .to_dtype(DType::F32)
            .unwrap()
            .affine(1e9, -1e9)
            .unwrap()
            .reshape((b, 1, 1, s))
            .unwrap();
        let scores = (split(&q).matmul(&split(&k).t().unwrap()).unwrap() / 2.0)
            .unwrap()
            .broadcast_add(&add)
            .unwrap();
        let p = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let want = p
            .matmul(&split(&v))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, s, h))
            .unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = crate::encoder::bert::tests::max_abs_diff(&flat(&got), &flat(&want));
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn fused_linear_matches_candle_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.5, (24, 16), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.5, 24, &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (3, 5, 24), &dev).unwrap();
        let lin = candle_nn::Linear::new(w, Some(b));
        // Inputs are random: compare with a tolerance, never rounded equality (a value near a
        // rounding boundary would make the test flaky).
        let close = |got: Tensor, want: Tensor| {
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = crate::encoder::bert::tests::max_abs_diff(&flat(&got), &flat(&want));
            assert!(diff < 1e-4, "max |difference| {diff}");
        };
        let base = lin.forward(&x).unwrap();
        close(linear(&x, &lin, Epilogue::None).unwrap(), base.clone());
        close(
            linear(&x, &lin, Epilogue::Gelu).unwrap(),
            base.gelu_erf().unwrap(),
        );
        close(
            linear(&x, &lin, Epilogue::Residual(&r)).unwrap(),
            (&base + &r).unwrap(),
        );
        // A non-contiguous input goes through the same path.
        let xt = x.transpose(0, 1).unwrap();
        close(
            linear(&xt, &lin, Epilogue::None).unwrap(),
            lin.forward(&xt.contiguous().unwrap()).unwrap(),
        );
    }
}
