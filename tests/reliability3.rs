//! Careful-user findings, third round (issue 29): numbers that size a window, a k or a limit
//! are bounded (never a panic, never work that means nothing).

use crate::util::{generated_corpus, s, TestEnv};

fn store_with_corpus() -> TestEnv {
    let env = TestEnv::new();
    let csv = generated_corpus(60, 4, &["['Joy']", "\"['Anxiety', 'Love']\""], 7, |i| i);
    let f = env.write("c.csv", csv);
    env.run(&["ingest", s(&f), "--test-rows", "10"]).ok();
    env
}

/// Every option that sizes a context window, a neighbour count, a row limit or a block, at
/// zero and past its bound (up to 2^64 and beyond), exits 2 before any work with the bound in
/// its message; the largest value allowed works. `show --context 18446744073709551615` once
/// panicked (a slice index overflow); `knowledge retrieve -k 0` stored empty neighbour lists.
#[test]
fn window_k_and_limit_options_are_bounded_and_zero_is_refused() {
    let env = store_with_corpus();
    let before = env.stats();
    let corpus = s(&env.path("c.csv")).to_string();
    // (command before the number, option, the largest value allowed, zero taken by the parser)
    let cases: Vec<(Vec<&str>, &str, &str, bool)> = vec![
        (vec!["show", "5"], "--context", "64", true),
        (vec!["query"], "--limit", "1000000", false),
        (
            vec!["similar", "--id", "5", "--by", "bm25"],
            "-k",
            "1000",
            false,
        ),
        (
            vec!["knowledge", "retrieve", "--by", "bm25", "--source", "b"],
            "-k",
            "1000",
            false,
        ),
        (
            vec!["train", "--knowledge", "context", "--out", "c"],
            "--context",
            "64",
            true,
        ),
        (
            vec!["train", "--classifier", "knn", "--out", "n"],
            "-k",
            "1000",
            false,
        ),
        (vec!["annotate"], "--limit", "", false),
        (
            vec!["ingest", &corpus, "--val-fraction", "0.2"],
            "--val-block",
            "",
            false,
        ),
    ];
    for huge in [
        "18446744073709551615",
        "18446744073709551616",
        "4294967297",
        "1000001",
    ] {
        for (head, opt, _, _) in &cases {
            let mut args = head.clone();
            args.extend([*opt, huge]);
            let r = env.run(&args).code(2);
            assert!(
                r.stderr.contains("must be at most") && !r.stderr.contains("panicked"),
                "{args:?}: {}",
                r.stderr
            );
        }
    }
    for (head, opt, _, zero) in &cases {
        if *zero {
            continue;
        }
        let mut args = head.clone();
        args.extend([*opt, "0"]);
        env.run(&args).code(2).stderr_has("must be at least 1");
    }
    env.run(&[
        "train",
        "--knowledge",
        "context",
        "--out",
        "c",
        "--context",
        "0",
    ])
    .code(2)
    .stderr_has("--context 1 or more");
    assert_eq!(env.stats(), before, "a refused option changed the store");
    // The largest values work (the corpus has fewer rows and sentences than that).
    for (head, opt, max, _) in &cases[..3] {
        let mut args = head.clone();
        args.extend([*opt, max]);
        env.run(&args).ok();
    }
    env.run(&["show", "5", "--context", "0"]).ok();
}

/// xorshift64*: deterministic test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn hit_ids(v: &serde_json::Value) -> Vec<u64> {
    (v.as_array().unwrap().iter())
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

/// An ANN index file damaged without changing its size (runs of bytes overwritten, single bits
/// flipped, the header zeroed) is caught by its checksum: `check` names it with the fix,
/// `similar --ann` and `knowledge retrieve --ann` search exactly with a note and never crash
/// (damage of this kind once gave SIGSEGV), and `index build` repairs it.
#[test]
fn a_damaged_ann_file_is_caught_by_its_checksum_and_never_crashes() {
    let crate::model_cli::Setup { env, encoder } = crate::model_cli::setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["index", "build"]).ok();
    let file = env.stats()["ann"][0]["file"].as_str().unwrap().to_string();
    let good = std::fs::read(&file).unwrap();
    let q = "30";
    let similar = |how: &str| env.run(&["--json", "similar", "--id", q, "-k", "5", how]);
    let exact = hit_ids(&similar("--exact").ok().json());
    assert!(!similar("--ann").ok().stderr.contains("not usable"));
    let mut rng = Rng(0x5EED_A11A);
    for round in 0..16 {
        let mut bytes = good.clone();
        match round % 4 {
            0 | 1 => {
                for _ in 0..1 + rng.below(3) {
                    let run = 512.min(bytes.len() / 8);
                    let at = rng.below(bytes.len() - run);
                    for b in &mut bytes[at..at + run] {
                        *b = rng.next() as u8;
                    }
                }
            }
            2 => {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
            _ => bytes[..64].fill(0),
        }
        if bytes == good {
            continue;
        }
        std::fs::write(&file, &bytes).unwrap();
        env.run(&["check"])
            .code(1)
            .stdout_has("does not match the checksum")
            .stdout_has("emoknow index build");
        let r = similar("--ann").ok().stderr_has("not usable");
        assert_eq!(hit_ids(&r.json()), exact, "round {round}");
        if round < 2 {
            let source = format!("fuzz{round}");
            env.run(&[
                "knowledge",
                "retrieve",
                "--ann",
                "-k",
                "3",
                "--source",
                &source,
            ])
            .ok()
            .stderr_has("not usable");
        }
    }
    env.run(&["index", "build"]).ok();
    env.run(&["check"]).ok();
    assert!(!similar("--ann").ok().stderr.contains("not usable"));
}

/// An index whose record was written before checksums is stale (searched exactly, with the
/// fix named) until rebuilt: its bytes were never verified.
#[test]
fn an_ann_index_without_a_checksum_is_stale_until_rebuilt() {
    let crate::model_cli::Setup { env, encoder } = crate::model_cli::setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["index", "build"]).ok();
    {
        let store = emoknow::store::Store::open(&env.store()).unwrap();
        let mut r = store.ann_records().unwrap().pop().unwrap();
        r.crc32 = None;
        store.put_ann_record(&r).unwrap();
    }
    let st = env.stats()["ann"][0]["freshness"].clone();
    assert_eq!(st["state"], "stale", "{st}");
    assert!(st["reason"].as_str().unwrap().contains("checksum"), "{st}");
    env.run(&["similar", "--id", "30", "--ann"])
        .ok()
        .stderr_has("not usable");
    env.run(&["index", "build"]).ok();
    assert_eq!(env.stats()["ann"][0]["freshness"]["state"], "fresh");
}

/// `annotate` with no API key set refuses a remote endpoint before its first request, naming
/// the variables (it used to send six attempts with backoff and collect 401s); a server on
/// this machine still needs no key.
#[test]
fn annotate_without_a_key_refuses_a_remote_endpoint_before_any_request() {
    let env = store_with_corpus();
    let annotate = |endpoint: &str| {
        let mut c = env.cmd(&["annotate", "--endpoint", endpoint, "--limit", "2"]);
        c.env_remove("DASHSCOPE_API_KEY")
            .env_remove("OPENAI_API_KEY");
        let t = std::time::Instant::now();
        let out = c.output().unwrap();
        (out, t.elapsed())
    };
    // A non-routable address: a request would hang until its timeout.
    let (out, _) = annotate("http://10.255.255.1:9/v1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no API key") && stderr.contains("DASHSCOPE_API_KEY"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("attempt") && !stderr.contains("retry"),
        "{stderr}"
    );
    // Locally nothing listens on port 9: the refusal is a connection error, not a key one.
    let (out, _) = annotate("http://127.0.0.1:9/v1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no API key"), "{stderr}");
}
