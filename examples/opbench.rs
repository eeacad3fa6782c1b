use candle_core::{Device, Tensor, DType};
use std::time::Instant;
fn t<F: FnMut() -> Tensor>(name: &str, n: usize, mut f: F) {
    let _ = f();
    let s = Instant::now();
    for _ in 0..n { let _ = f(); }
    println!("{name}: {:.2} ms", s.elapsed().as_secs_f64() * 1e3 / n as f64);
}
fn main() {
    let d = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (64, 36, 512), &d).unwrap();
    let h = Tensor::randn(0f32, 1., (64, 36, 2048), &d).unwrap();
    let w1 = Tensor::randn(0f32, 1., (2048, 512), &d).unwrap();
    let w2 = Tensor::randn(0f32, 1., (512, 512), &d).unwrap();
    let wqkv = Tensor::randn(0f32, 1., (1536, 512), &d).unwrap();
    let g = Tensor::ones(512, DType::F32, &d).unwrap();
    let b = Tensor::zeros(512, DType::F32, &d).unwrap();
    let l1 = candle_nn::Linear::new(w1.clone(), Some(Tensor::zeros(2048, DType::F32, &d).unwrap()));
    let l2 = candle_nn::Linear::new(w2.clone(), Some(b.clone()));
    let l3 = candle_nn::Linear::new(wqkv.clone(), None);
    use candle_core::Module;
    t("linear 512->2048", 10, || l1.forward(&x).unwrap());
    t("linear 512->512", 10, || l2.forward(&x).unwrap());
    t("linear 512->1536 (no bias)", 10, || l3.forward(&x).unwrap());
    t("gelu_erf 2048", 10, || h.gelu_erf().unwrap());
    t("gelu tanh 2048", 10, || h.gelu().unwrap());
    t("layer_norm fused", 10, || candle_nn::ops::layer_norm(&x, &g, &b, 1e-12).unwrap());
    let q = Tensor::randn(0f32, 1., (64, 8, 36, 64), &d).unwrap();
    let k = Tensor::randn(0f32, 1., (64, 8, 36, 64), &d).unwrap();
    t("qk^T", 10, || q.matmul(&k.t().unwrap()).unwrap());
    let s = q.matmul(&k.t().unwrap()).unwrap();
    t("softmax_last_dim", 10, || candle_nn::ops::softmax_last_dim(&s).unwrap());
    t("pv", 10, || s.matmul(&k).unwrap());
    t("transpose+contig", 10, || q.transpose(1,2).unwrap().contiguous().unwrap());
    t("add", 10, || (&x + &x).unwrap());
    t("broadcast_add mask", 10, || s.broadcast_add(&Tensor::zeros((64,1,1,36), DType::F32, &d).unwrap()).unwrap());
}
