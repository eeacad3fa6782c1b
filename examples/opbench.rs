use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    let d = Device::Cpu;
    for (m, k, n) in [(2304usize, 512usize, 2048usize), (2304, 2048, 512), (2304, 512, 512)] {
        let x = Tensor::randn(0f32, 1., (m, k), &d).unwrap();
        let w = Tensor::randn(0f32, 1., (n, k), &d).unwrap();
        let wt = w.t().unwrap();
        let _ = x.matmul(&wt).unwrap();
        let reps = 10;
        let s = Instant::now();
        for _ in 0..reps { let _ = x.matmul(&wt).unwrap(); }
        let secs = s.elapsed().as_secs_f64() / reps as f64;
        println!("{m}x{k}x{n}: {:.1} ms, {:.1} GFLOP/s", secs * 1e3, 2.0 * (m * k * n) as f64 / secs / 1e9);
    }
}
