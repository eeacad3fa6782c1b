//! Fine-tuning throughput on the seed corpus:
//! `cargo run --release --example bench_finetune -- ENCODER_DIR [N] [MAX_LEN] [BATCH]`
//! trains one epoch on the first N sentences of data/Train.csv (default 320, seq 64, batch 16)
//! and prints examples/s and the loss of each step. EMOKNOW_DEFAULT_MALLOC=1 keeps glibc's
//! default allocator thresholds (the baseline for [`emoknow::model::tune_allocator`]);
//! CANDLE_NUM_THREADS=2 CANDLE_BARRIER_POOL_SPIN_LIMIT=25000 candle's own thread pool as it
//! comes (the baseline for [`emoknow::model::tune_candle_threads`]).
use emoknow::model::finetune::{train, FinetuneConfig, FinetuneEvent};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    emoknow::model::tune_allocator();
    emoknow::model::tune_candle_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .expect("usage: bench_finetune ENCODER_DIR [N] [MAX_LEN] [BATCH]");
    let n: usize = args.get(1).map_or(Ok(320), |s| s.parse())?;
    let max_len: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let batch: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let parsed = emoknow::corpus::read::read_file(Path::new("data/Train.csv"))?;
    let rows = &parsed.rows[..n.min(parsed.rows.len())];
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let labels: Vec<_> = rows.iter().map(|r| r.labels).collect();
    let cfg = FinetuneConfig {
        encoder: dir.into(),
        epochs: 1,
        max_len,
        batch,
        ..FinetuneConfig::default()
    };
    let t = std::time::Instant::now();
    train(&texts, &labels, &[], &[], &cfg, &mut |e| match e {
        FinetuneEvent::Step {
            step,
            total_steps,
            loss,
            ..
        } => {
            eprintln!(
                "step {step}/{total_steps} loss {loss:.4} ({:.1} ex/s)",
                (step * batch) as f64 / t.elapsed().as_secs_f64()
            )
        }
        FinetuneEvent::Epoch {
            examples_per_sec,
            secs,
            ..
        } => {
            println!("{{\"examples\": {}, \"secs\": {secs:.1}, \"examples_per_sec\": {examples_per_sec:.2}, \"max_len\": {max_len}, \"batch\": {batch}}}", texts.len())
        }
        _ => {}
    })?;
    Ok(())
}
