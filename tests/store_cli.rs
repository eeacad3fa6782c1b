//! The store, ingest, import and query CLI (issue 2).

use crate::util::{repo, s, TestEnv};
use std::time::Duration;

/// A small corpus in the seed's layout (UTF-8 here; GB18030 variants are made from it).
const SEED: &str = "ID,Text,Labels
1,我 很 担忧 孩子 的 未来,\"['Anxiety', 'Love']\"
2,现在 好 终于 如愿以偿,['Joy']
3,他 对 未来 充满 期待,['Expect']
4,这种 行为 令人 厌恶,\"['Hate', 'Anger']\"
5,听到 消息 后 她 非常 难过,['Sorrow']
6,没想到 他 会 来,['Surprise']
7,我们 担忧 天气 会 更 糟糕,['Anxiety']
8,孩子 们 笑 得 很 开心,\"['Joy', 'Love']\"
9,对 这 件 事 感到 愤怒 和 失望,\"['Anger', 'Sorrow']\"
10,期待 明天 的 比赛,['Expect']
";

/// LLaMA-Factory style predictions for ids 1..=4: one `nan`.
const PREDICTIONS: &str = r#"{"label": "这段评论包含以下分类:\nAnxiety, Love\n\n理由:\n\n\"很担忧孩子的未来\"表达了对孩子的关爱和担忧，属于Anxiety和Love情绪。", "predict": "这段评论包含以下分类:\nAnxiety\n\n理由:\n\n作者担心孩子前途，属于Anxiety情绪分类。"}
{"label": "这段评论包含以下分类:\nJoy\n\n理由:\n\n\"终于如愿以偿\"表达了喜悦之情。", "predict": "nan"}
{"label": "这段评论包含以下分类:\nExpect\n\n理由:\n\n对前途的憧憬与期待，属于Expect。", "predict": "这段评论包含以下分类:\nExpect, Joy\n\n理由:\n\n充满期待。"}
{"label": "这段评论包含以下分类:\nHate, Anger\n\n理由:\n\n\"令人厌恶\"直接表达了厌恶，体现出愤怒。", "predict": ""}
"#;

fn ingested(env: &TestEnv) -> std::path::PathBuf {
    let f = env.write("seed.csv", SEED);
    env.run(&[
        "ingest",
        s(&f),
        "--test-rows",
        "2",
        "--val-fraction",
        "0.25",
    ])
    .ok();
    f
}

fn gb18030(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GB18030.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

#[test]
fn ingest_seed_format_in_gb18030_with_splits() {
    let env = TestEnv::new();
    let f = env.write("Train.csv", gb18030(SEED));
    let r = env
        .run(&[
            "--json",
            "ingest",
            s(&f),
            "--test-rows",
            "3",
            "--val-fraction",
            "0.3",
            "--seed",
            "7",
        ])
        .ok();
    let j = r.json();
    assert_eq!(j["encoding"], "gb18030");
    assert_eq!(j["format"], "seed-list-csv");
    assert_eq!(j["added"], 10);
    let st = env.stats();
    assert_eq!(st["examples"], 10);
    assert_eq!(st["by_split"]["test"], 3);
    assert_eq!(st["by_split"]["val"], 2, "round(0.3 × 7)");
    assert_eq!(st["by_split"]["train"], 5);
    // The first rows are test, and the text survived the decoding.
    let show = env.run(&["--json", "show", "1"]).ok().json();
    assert_eq!(show["split"], "test");
    assert_eq!(show["text"], "我 很 担忧 孩子 的 未来");
    assert_eq!(show["labels"], serde_json::json!(["Love", "Anxiety"]));
    assert_eq!(show["origin"]["line"], 2);
}

#[test]
fn the_seed_layout_defaults_to_1000_test_rows() {
    let env = TestEnv::new();
    let mut csv = String::from("ID,Text,Labels\n");
    for i in 1..=1200 {
        csv.push_str(&format!("{i},句子 {i},['Joy']\n"));
    }
    let f = env.write("big.csv", csv);
    env.run(&["ingest", s(&f), "--val-fraction", "0"]).ok();
    let st = env.stats();
    assert_eq!(st["by_split"]["test"], 1000);
    assert_eq!(st["by_split"]["train"], 200);
    // Reproducible: a second store with the same seed draws the same validation rows.
    let a = TestEnv::new();
    let b = TestEnv::new();
    for e in [&a, &b] {
        let f = e.write("big.csv", std::fs::read(env.path("big.csv")).unwrap());
        e.run(&["ingest", s(&f), "--val-fraction", "0.1", "--seed", "3"])
            .ok();
    }
    let ids = |e: &TestEnv| -> Vec<u64> {
        e.run(&["--json", "query", "--split", "val", "-n", "100"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(ids(&a).len(), 20);
    // --val-block 10: the same count, drawn as runs of ten consecutive rows.
    a.run(&[
        "ingest",
        s(&a.path("big.csv")),
        "--val-fraction",
        "0.1",
        "--val-block",
        "10",
    ])
    .ok();
    let mut rows: Vec<u64> = ids(&a);
    rows.sort();
    assert_eq!(rows.len(), 20);
    assert!(
        rows.chunks(10).all(|r| r[0] % 10 == 1 && r[9] == r[0] + 9),
        "{rows:?}"
    );
}

#[test]
fn ingest_one_hot_with_bom_and_jsonl() {
    let env = TestEnv::new();
    let onehot = "\u{feff}Text,'Love','Joy','Anxiety','Sorrow','Expect','Hate','Surprise','Anger'\n孩子 们 很 开心,1,1,0,0,0,0,0,0\n令人 愤怒,0,0,0,0,0,0,0,1\n";
    let f = env.write("test.csv", onehot);
    let j = env
        .run(&["--json", "ingest", s(&f), "--split", "test"])
        .ok()
        .json();
    assert_eq!(j["encoding"], "utf-8-bom");
    assert_eq!(j["format"], "one-hot-csv");
    let jl = env.write(
        "more.jsonl",
        "{\"text\": \"期待 明天\", \"labels\": [\"Expect\"]}\n{\"id\": 50, \"text\": \"好 难过\", \"labels\": \"Sorrow\"}\n",
    );
    let j = env
        .run(&["--json", "ingest", s(&jl), "--val-fraction", "0"])
        .ok()
        .json();
    assert_eq!(j["format"], "jsonl");
    let st = env.stats();
    assert_eq!(st["examples"], 4);
    assert_eq!(st["by_split"]["test"], 2);
    // Ids: assigned in file order after the highest id, or the file's own.
    let show = env.run(&["--json", "show", "2"]).ok().json();
    assert_eq!(show["labels"], serde_json::json!(["Anger"]));
    env.run(&["show", "50"]).ok().stdout_has("好 难过");
}

#[test]
fn reingest_is_idempotent_for_files_with_and_without_ids() {
    let env = TestEnv::new();
    let f = ingested(&env);
    let j = env
        .run(&[
            "--json",
            "ingest",
            s(&f),
            "--test-rows",
            "2",
            "--val-fraction",
            "0.25",
        ])
        .ok()
        .json();
    assert_eq!(
        (j["added"].as_u64(), j["unchanged"].as_u64()),
        (Some(0), Some(10))
    );
    let jl = env.write("x.jsonl", "{\"text\": \"甲\", \"labels\": [\"Joy\"]}\n");
    env.run(&["ingest", s(&jl)]).ok();
    let j = env.run(&["--json", "ingest", s(&jl)]).ok().json();
    assert_eq!(j["added"], 0);
    assert_eq!(env.stats()["examples"], 11);
    env.run(&["check"]).ok();
}

#[test]
fn bad_lines_are_named_and_nothing_is_written() {
    let env = TestEnv::new();
    ingested(&env);
    let before = env.stats();
    let bad = env.write(
        "bad.csv",
        "ID,Text,Labels\n20,好,['Joy']\n21,,['Joy']\n22,坏,['Happy']\n23,好,['Joy'],x\n",
    );
    let r = env.run(&["ingest", s(&bad)]).code(2);
    let r = r
        .stderr_has("line 3: empty text")
        .stderr_has("line 4:")
        .stderr_has("Happy");
    r.stderr_has("line 5: 4 columns");
    assert_eq!(env.stats(), before, "the batch is all or nothing");

    let mut bytes = b"ID,Text,Labels\n30,ok,['Joy']\n31,".to_vec();
    bytes.extend_from_slice(&[0x81, 0x20, 0xFF]);
    bytes.extend_from_slice(b",['Joy']\n");
    let undecodable = env.write("undecodable.csv", bytes);
    env.run(&["ingest", s(&undecodable)])
        .code(2)
        .stderr_has("line 3");
    assert_eq!(env.stats(), before);

    let j = env
        .run(&["--json", "ingest", s(&bad), "--skip-bad"])
        .ok()
        .json();
    assert_eq!(j["added"], 1);
    let lines: Vec<u64> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 5]);
    assert_eq!(env.stats()["examples"], 11);
}

#[test]
fn an_id_from_another_file_is_not_overwritten_silently() {
    let env = TestEnv::new();
    ingested(&env);
    let other = env.write("other.csv", "ID,Text,Labels\n1,完全 不同 的 句子,['Joy']\n");
    env.run(&["ingest", s(&other)])
        .code(2)
        .stderr_has("ID 1 already holds a different sentence from ")
        .stderr_has("seed.csv:2");
    env.run(&["ingest", s(&other), "--replace"]).ok();
    env.run(&["show", "1"]).ok().stdout_has("完全 不同 的 句子");
}

#[test]
fn import_aligns_rows_to_ids_and_records_nan_as_missing() {
    let env = TestEnv::new();
    ingested(&env);
    let p = env.write("generated_predictions.jsonl", PREDICTIONS);
    let j = env
        .run(&[
            "--json",
            "knowledge",
            "import",
            s(&p),
            "--source",
            "glm",
            "--field",
            "predict",
            "--first-id",
            "1",
        ])
        .ok()
        .json();
    assert_eq!(
        (j["imported"].as_u64(), j["missing"].as_u64()),
        (Some(2), Some(2))
    );
    let show = env.run(&["--json", "show", "3"]).ok().json();
    assert_eq!(show["knowledge"][0]["source"], "glm");
    assert_eq!(
        show["knowledge"][0]["asserted"],
        serde_json::json!(["Joy", "Expect"])
    );
    let show2 = env.run(&["--json", "show", "2"]).ok().json();
    assert_eq!(show2["knowledge"].as_array().unwrap().len(), 0);
    assert_eq!(show2["missing"][0]["source"], "glm");
    let st = env.stats();
    assert_eq!(st["sources"]["glm"]["records"], 2);
    assert_eq!(st["sources"]["glm"]["missing"], 2);

    // Shifted so the last rows point past the corpus: refused, nothing written.
    env.import(&p, "late", "label", 9)
        .code(2)
        .stderr_has("2 example id(s) not in the store (first: 11, 12)");
    assert!(env.stats()["sources"].get("late").is_none());
    env.run(&["check"]).ok();
}

#[test]
fn sanitized_knowledge_keeps_the_reason_and_drops_emotion_words() {
    let env = TestEnv::new();
    ingested(&env);
    let p = env.write("p.jsonl", PREDICTIONS);
    env.import(&p, "qwen", "label", 1).ok();
    let k = &env.run(&["--json", "show", "1"]).ok().json()["knowledge"][0];
    assert_eq!(k["asserted"], serde_json::json!(["Love", "Anxiety"]));
    let san = k["sanitized"].as_str().unwrap();
    assert_eq!(san, "很孩子的未来\"表达了对孩子的和，属于和情绪。");
    let lexicon = std::fs::read_to_string(repo().join("data/lexicon/emotions.txt")).unwrap();
    for line in lexicon.lines().filter(|l| !l.starts_with('#')) {
        let (name, words) = line.split_once(':').unwrap();
        assert!(!san.contains(name.trim()));
        for w in words.split_whitespace() {
            assert!(!san.contains(w), "{w} left in {san}");
        }
    }
    assert!(k["raw"]
        .as_str()
        .unwrap()
        .starts_with("这段评论包含以下分类"));
}

#[test]
fn keyword_queries_segment_chinese_and_filter_by_label() {
    let env = TestEnv::new();
    ingested(&env);
    let ids = |args: &[&str]| -> Vec<u64> {
        let mut a = vec!["--json", "query"];
        a.extend_from_slice(args);
        let r = env.run(&a);
        if r.code == 1 {
            return vec![];
        }
        r.ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect()
    };
    // Unsegmented keyword: both words must occur.
    assert_eq!(ids(&["--keyword", "担忧未来"]), [1]);
    // Segmented keyword, same meaning.
    assert_eq!(ids(&["--keyword", "担忧 未来"]), [1]);
    let mut both = ids(&["--keyword", "担忧"]);
    both.sort();
    assert_eq!(both, [1, 7]);
    assert_eq!(ids(&["--keyword", "担忧", "--emotion", "Love"]), [1]);
    assert_eq!(ids(&["--keyword", "未来", "--emotion", "期待"]), [3]);
    assert_eq!(ids(&["--emotion", "Joy", "--emotion", "Love"]), [8]);
    assert!(ids(&["--keyword", "火星"]).is_empty());
    env.run(&["query", "--keyword", "火星"]).code(1);

    // The table shows highlighted snippets.
    env.run(&["query", "--keyword", "担忧未来"])
        .ok()
        .stdout_has("我 很 【担忧】 孩子 的 【未来】");

    // Knowledge matches count, and --source restricts to that source.
    let p = env.write("p.jsonl", PREDICTIONS);
    env.import(&p, "qwen", "label", 1).ok();
    assert_eq!(
        ids(&["--keyword", "憧憬"]),
        [3],
        "found in the raw rationale"
    );
    assert_eq!(ids(&["--keyword", "前途", "--source", "qwen"]), [3]);
    assert!(ids(&["--keyword", "前途", "--source", "other"]).is_empty());
    let hits = env
        .run(&["--json", "query", "--keyword", "憧憬"])
        .ok()
        .json();
    assert_eq!(hits[0]["matched"], "knowledge");
}

#[test]
fn the_store_survives_reopening_and_check_passes_after_reindex() {
    let env = TestEnv::new();
    ingested(&env);
    {
        let store = emoknow::store::Store::open(&env.store()).unwrap();
        assert_eq!(store.count_examples(), 10);
        let ex = store.example(4).unwrap().unwrap();
        assert_eq!(ex.labels.to_string(), "Hate,Anger");
    }
    {
        // Reopen after drop in the same process.
        let store = emoknow::store::Store::open(&env.store()).unwrap();
        assert_eq!(store.examples(None).unwrap().len(), 10);
    }
    env.run(&["check"]).ok().stdout_has("ok");
    env.run(&["reindex"])
        .ok()
        .stdout_has("reindexed 10 examples");
    let j = env.run(&["--json", "check"]).ok().json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["indexed_examples"], 10);

    // A store that lost its index fails the check until reindexed.
    std::fs::remove_dir_all(env.store().join("index")).unwrap();
    env.run(&["check"])
        .code(1)
        .stdout_has("is damaged (the directory is missing)");
    env.run(&["reindex"]).ok();
    env.run(&["check"]).ok();
    env.run(&["query", "--keyword", "担忧未来"]).ok();
}

#[test]
fn a_second_process_gets_a_clear_lock_error() {
    let env = TestEnv::new();
    ingested(&env);
    let _held = emoknow::store::Store::open(&env.store()).unwrap();
    env.run(&["stats"])
        .code(2)
        .stderr_has("is in use by another process");
}

#[test]
fn no_store_is_a_clear_error() {
    let env = TestEnv::new();
    env.run(&["stats"]).code(2).stderr_has("no store at");
}

/// Issue 2: kill -9 during ingest of the full corpus leaves a store that opens, passes
/// `check`, and holds either none or all of the batch. Kills come at fixed moments from the
/// start (before, during and after the write) and at moments counted from when the batch's
/// first megabyte reached the store's files; at least two of those must land while the command
/// still ran (retrying other moments, bounded), so a kill mid-write is tested, not hoped for.
#[test]
fn kill_during_full_corpus_ingest_leaves_all_or_nothing() {
    let train = repo().join("data/Train.csv");
    let args = ["-q", "ingest", s(&train)];
    let mut outcomes = Vec::new();
    let all_or_nothing = |env: &TestEnv, what: &str| -> u64 {
        if !env.store().join("db").exists() {
            return 0;
        }
        let j = env.run(&["--json", "check"]).ok().json();
        assert_eq!(j["ok"], true, "{what}: {j}");
        let n = j["examples"].as_u64().unwrap();
        assert!(n == 0 || n == 26000, "{what}: partial batch of {n}");
        assert_eq!(j["indexed_examples"].as_u64(), Some(n), "{what}");
        n
    };
    for delay_ms in [150u64, 700, 1400, 3000] {
        let env = TestEnv::new();
        let finished = env.run_killed_after(&args, Duration::from_millis(delay_ms));
        let n = all_or_nothing(&env, &format!("{delay_ms} ms from the start"));
        outcomes.push((format!("{delay_ms} ms from the start"), finished, n));
    }
    let mut mid_write = 0;
    for delay_ms in [0u64, 10, 30, 0, 60, 5, 100, 20] {
        if mid_write == 2 {
            break;
        }
        let env = TestEnv::new();
        let db = env.store().join("db");
        let landed = env.kill_when(
            &args,
            || crate::util::dir_bytes(&db) > 1 << 20,
            Duration::from_millis(delay_ms),
        );
        let what = format!("{delay_ms} ms into the write");
        let n = all_or_nothing(&env, &what);
        mid_write += usize::from(landed);
        outcomes.push((what, landed, n));
    }
    eprintln!("(moment, finished or landed mid-write, examples): {outcomes:?}");
    assert_eq!(mid_write, 2, "no kill landed mid-write: {outcomes:?}");
}
