//! Embedding throughput on the seed corpus until `emoknow bench embed` exists:
//! `cargo run --release --example bench_embed -- ENCODER_DIR [N] [MAX_LEN] [THREADS]`
//! (N = first N sentences of data/Train.csv, 0 = all; prints EmbedBench as JSON).
use emoknow::model::encoder::{bench_embed, EncoderOptions};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .expect("usage: bench_embed ENCODER_DIR [N] [MAX_LEN] [THREADS]");
    let n: usize = args.get(1).map_or(Ok(2000), |s| s.parse())?;
    let max_len: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let threads: usize = args.get(3).map_or(Ok(0), |s| s.parse())?;
    let parsed = emoknow::corpus::read::read_file(Path::new("data/Train.csv"))?;
    let mut texts: Vec<&str> = parsed.rows.iter().map(|r| r.text.as_str()).collect();
    if n > 0 {
        texts.truncate(n);
    }
    let opts = EncoderOptions {
        max_len,
        threads,
        ..EncoderOptions::default()
    };
    let r = bench_embed(Path::new(dir), &texts, &opts, &mut |_, _| {})?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}
