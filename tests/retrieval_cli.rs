//! Retrieval of similar labelled examples (issue 4), BM25 path: works with no model.

use crate::util::{s, TestEnv};

const CORPUS: &str = "ID,Text,Labels
1,我 担心 明天 的 考试,['Anxiety']
2,明天 考试 让 我 担心 得 睡不着,\"['Anxiety', 'Sorrow']\"
3,考试 前 很 担心,['Anxiety']
4,孩子 们 笑 得 很 开心,\"['Joy', 'Love']\"
5,孩子 的 笑容 让 人 开心,['Joy']
6,我 担心 明天 的 考试,['Anxiety']
7,今天 天气 很 好,['Joy']
8,他 的 行为 令人 厌恶,['Hate']
";

fn env() -> TestEnv {
    let env = TestEnv::new();
    let f = env.write("c.csv", CORPUS);
    env.run(&["ingest", s(&f), "--test-rows", "1", "--val-fraction", "0"])
        .ok();
    env
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn similar_by_id_excludes_the_example_and_its_duplicates() {
    let env = env();
    let j = env
        .run(&["--json", "similar", "--id", "6", "-k", "3", "--by", "bm25"])
        .ok()
        .json();
    let got = ids(&j);
    assert!(!got.contains(&6), "the example itself: {got:?}");
    assert!(
        !got.contains(&1),
        "id 1 (test split, and the same text) must not come back: {got:?}"
    );
    assert_eq!(got[0], 2, "{j}");
    for h in j.as_array().unwrap() {
        assert!(h["score"].as_f64().unwrap() > 0.0);
        assert!(h["labels"].is_array() && h["text"].is_string());
    }
    // Scores are best first.
    let scores: Vec<f64> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
}

#[test]
fn similar_text_query_with_emotion_filter() {
    let env = env();
    let j = env
        .run(&["--json", "similar", "孩子", "开心", "--by", "bm25"])
        .ok()
        .json();
    let mut got = ids(&j);
    got.sort();
    assert_eq!(got, [4, 5]);
    let j = env
        .run(&[
            "--json",
            "similar",
            "孩子",
            "开心",
            "--by",
            "bm25",
            "--emotion",
            "Love",
        ])
        .ok()
        .json();
    assert_eq!(ids(&j), [4]);
    env.run(&["similar", "火星", "--by", "bm25"]).code(1);
}

#[test]
fn retrieved_neighbours_never_include_the_example_and_come_from_train() {
    let env = env();
    env.run(&["knowledge", "retrieve", "-k", "2", "--by", "bm25"])
        .ok();
    for id in 1..=8u64 {
        let show = env.run(&["--json", "show", &id.to_string()]).ok().json();
        let k = show["knowledge"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["source"] == "knn-bm25")
            .unwrap_or_else(|| panic!("example {id} has no neighbours: {show}"));
        assert_eq!(k["kind"], "neighbours");
        for n in k["neighbours"].as_array().unwrap() {
            let nid = n["id"].as_u64().unwrap();
            assert_ne!(nid, id, "example {id} is its own neighbour");
            assert_ne!(nid, 1, "id 1 is test, not a neighbour source");
            let other = env.run(&["--json", "show", &nid.to_string()]).ok().json();
            assert_ne!(other["text"], show["text"], "same-text duplicate leaked");
            assert_eq!(n["labels"], other["labels"]);
        }
        assert!(k["raw"].as_str().unwrap().starts_with("相似例句: "));
    }
    // Neighbour lists are not searchable text, and the store stays consistent.
    env.run(&["query", "--keyword", "相似例句"]).code(1);
    env.run(&["check"]).ok();
}

#[test]
fn exclude_within_keeps_nearby_ids_out() {
    let env = env();
    // Without the window, row 2 (same words) is among 3's matches.
    let j = env
        .run(&["--json", "similar", "--id", "3", "-k", "5", "--by", "bm25"])
        .ok()
        .json();
    assert!(ids(&j).contains(&2), "{j}");
    let j = env
        .run(&[
            "--json",
            "similar",
            "--id",
            "3",
            "-k",
            "5",
            "--by",
            "bm25",
            "--exclude-within",
            "1",
        ])
        .ok()
        .json();
    let got = ids(&j);
    assert!(!got.is_empty(), "{j}");
    assert!(
        got.iter().all(|&n| n.abs_diff(3) > 1),
        "ids 2..=4 are within 1 of 3: {got:?}"
    );
    env.run(&[
        "knowledge",
        "retrieve",
        "-k",
        "3",
        "--by",
        "bm25",
        "--exclude-within",
        "2",
    ])
    .ok();
    // The setting is recorded with the neighbours (a model trained on them depends on it).
    let retrieval = &env.stats()["sources"]["knn-bm25"]["retrieval"];
    assert_eq!(retrieval["exclude_within"], 2, "{retrieval}");
    assert_eq!(retrieval["by"], "bm25", "{retrieval}");
    for id in 1..=8u64 {
        let show = env.run(&["--json", "show", &id.to_string()]).ok().json();
        for k in show["knowledge"].as_array().unwrap() {
            assert_eq!(k["model"], "bm25", "{k}");
            for n in k["neighbours"].as_array().unwrap() {
                let nid = n["id"].as_u64().unwrap();
                assert!(nid.abs_diff(id) > 2, "{id} got neighbour {nid}");
            }
        }
    }
}
