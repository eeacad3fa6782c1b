//! Reliability of `knowledge retrieve` (issue 10, item 5): a killed retrieval is reported as
//! partial, trainers refuse examples without neighbours, and a rerun resumes.

use crate::util::{generated_corpus, s, TestEnv};
use std::time::Duration;

/// `n` rows of six words each, five label patterns.
fn corpus(n: usize) -> String {
    let labels = [
        "['Anxiety']",
        "\"['Joy', 'Love']\"",
        "\"['Hate', 'Anger']\"",
        "['Expect']",
        "['Sorrow']",
    ];
    generated_corpus(n, 6, &labels, 7, |i| i % 97)
}

fn source_stats(env: &TestEnv) -> serde_json::Value {
    env.stats()["sources"]["knn-bm25"].clone()
}

fn train_on_neighbours(env: &TestEnv) -> crate::util::Run {
    let out = env.path("m");
    env.run(&[
        "train",
        "--classifier",
        "linear",
        "--knowledge",
        "neighbours",
        "--neighbours-source",
        "knn-bm25",
        "--neighbours-k",
        "3",
        "--out",
        s(&out),
    ])
}

#[test]
fn a_killed_retrieval_is_partial_refused_by_trainers_and_resumed() {
    let env = TestEnv::new();
    let f = env.write("c.csv", corpus(5000));
    env.run(&["ingest", s(&f), "--test-rows", "250"]).ok();
    // Kill at later and later moments until one leaves some but not all neighbours stored.
    let mut partial_with_records = None;
    for delay_ms in [300u64, 700, 1200, 2000, 3000, 4500, 6000] {
        let finished = env.run_killed_after(
            &[
                "-q",
                "knowledge",
                "retrieve",
                "-k",
                "5",
                "--by",
                "bm25",
                "--fresh",
            ],
            Duration::from_millis(delay_ms),
        );
        let src = source_stats(&env);
        let records = src["records"].as_u64().unwrap_or(0);
        if finished || records == 5000 && src["partial"] == false {
            continue;
        }
        // Whatever moment the kill hit, a partial retrieval is reported and refused.
        if src["partial"] == true {
            env.run(&["check"]).code(1).stdout_has("stopped part-way");
            let r = train_on_neighbours(&env);
            if records < 5000 {
                r.code(2)
                    .stderr_has("has no neighbours of source knn-bm25")
                    .stderr_has("knowledge retrieve");
            }
            if records > 0 && records < 5000 {
                partial_with_records = Some(records);
                break;
            }
        }
    }
    let done = partial_with_records.expect("no kill moment left a partial retrieval");
    let j = env
        .run(&["--json", "knowledge", "retrieve", "-k", "5", "--by", "bm25"])
        .ok()
        .json();
    assert_eq!(j["already_done"], done, "{j}");
    assert_eq!(j["examples"], 5000 - done, "{j}");
    let src = source_stats(&env);
    assert_eq!(
        (src["records"].as_u64(), src["partial"].as_bool()),
        (Some(5000), Some(false))
    );
    env.run(&["check"]).ok();
    train_on_neighbours(&env).ok();
    // Another setting starts afresh rather than mixing two kinds of neighbours in one source.
    let j = env
        .run(&["--json", "knowledge", "retrieve", "-k", "3", "--by", "bm25"])
        .ok()
        .json();
    assert_eq!(
        (j["examples"].as_u64(), j["already_done"].as_u64()),
        (Some(5000), Some(0))
    );
}

#[test]
fn retrieval_covering_one_split_is_refused_for_another_and_a_changed_pool_is_reported() {
    let env = TestEnv::new();
    let f = env.write("c.csv", corpus(300));
    env.run(&["ingest", s(&f), "--test-rows", "30"]).ok();
    env.run(&[
        "knowledge",
        "retrieve",
        "-k",
        "3",
        "--by",
        "bm25",
        "--split",
        "train",
    ])
    .ok();
    // Training needs validation neighbours (thresholds are tuned there).
    train_on_neighbours(&env)
        .code(2)
        .stderr_has("(val) has no neighbours");
    env.run(&["knowledge", "retrieve", "-k", "3", "--by", "bm25"])
        .ok();
    train_on_neighbours(&env).ok();
    env.run(&["check"]).ok();
    // A new validation draw changes the pool: check says so.
    env.run(&["ingest", s(&f), "--test-rows", "30", "--seed", "9"])
        .ok();
    env.run(&["check"])
        .code(1)
        .stdout_has("the train split changed since they were retrieved");
    // Neighbours are never stored over a source of rationales.
    let p = env.write(
        "p.jsonl",
        "{\"label\": \"这段评论包含以下分类:\\nJoy\\n\\n理由:\\n\\n开心。\"}\n",
    );
    env.import(&p, "qwen-max", "label", 1).ok();
    env.run(&[
        "knowledge",
        "retrieve",
        "--by",
        "bm25",
        "--source",
        "qwen-max",
    ])
    .code(2)
    .stderr_has("holds rationales");
    assert_eq!(env.stats()["sources"]["qwen-max"]["records"], 1);
}
