//! Text as people write it (issue 25): the store learns how its corpus is written, every model
//! reads new text brought into that style, and what the user wrote is kept as written.

use crate::serve_cli::{enc, Server};
use crate::util::{copy_dir, s, TestEnv};
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use emoknow::testkit::tiny::{write_random_checkpoint, TinyBertSpec};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// A cleaned corpus in the seed's way: words separated by spaces, no punctuation, and 的, 了,
/// 是, 在 and 我 never written (the corpus's cleaning dropped them). 800 sentences: four label
/// patterns tied to words, each with eight words of jieba's dictionary drawn by frequency, so
/// that a word's absence means something (a style is learned from about 10,000 words on).
fn cleaned_corpus() -> String {
    let patterns = [
        ("很 担心 明天 考试 怕 考 不 好", "['Anxiety']"),
        ("孩子 们 笑 很 开心 他 也 笑", "\"['Joy', 'Love']\""),
        ("这种 行为 令人 厌恶 他 不 讲理", "\"['Hate', 'Anger']\""),
        ("期待 春天 旅行 他 说 一定 去", "['Expect']"),
    ];
    let dropped = ["的", "了", "是", "在", "我"];
    let frequent: Vec<(&str, u64)> = include_str!("../src/text/jieba_frequent.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .filter(|(w, _)| !dropped.contains(w))
        .collect();
    let total: u64 = frequent.iter().map(|f| f.1).sum();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut draw = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut r = (x >> 11) % total;
        frequent
            .iter()
            .find(|(_, f)| {
                if r < *f {
                    true
                } else {
                    r -= f;
                    false
                }
            })
            .map_or("很", |f| f.0)
    };
    let mut csv = String::from("ID,Text,Labels\n");
    for i in 1..=800 {
        let (w, l) = patterns[i % 4];
        let filler: Vec<&str> = (0..8).map(|_| draw()).collect();
        csv.push_str(&format!("{i},{w} {},{l}\n", filler.join(" ")));
    }
    csv
}

/// The model tests' split: 20 test rows, a fifth of the rest validation.
fn ingest(env: &TestEnv, file: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "--json",
        "ingest",
        s(file),
        "--test-rows",
        "20",
        "--val-fraction",
        "0.2",
    ];
    args.extend(extra);
    env.run(&args).ok().json()
}

fn probabilities(v: &Value) -> Vec<f64> {
    let p = v["probabilities"].as_object().unwrap();
    p.values().map(|x| x.as_f64().unwrap()).collect()
}

const AS_WRITTEN: &str = "我很担心明天的考试。";

#[test]
fn every_model_kind_reads_text_as_written_in_the_corpus_style() {
    let env = TestEnv::new();
    let f = env.write("c.csv", cleaned_corpus());
    let summary = ingest(&env, &f, &[]);
    let style = summary["text_style"].as_str().unwrap();
    assert!(
        style.starts_with("segmented with spaces; punctuation removed"),
        "{style}"
    );
    let stats = env.stats();
    let dropped: Vec<&str> = stats["text_style"]["style"]["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for w in ["的", "了", "是"] {
        assert!(dropped.contains(&w), "{w} not found dropped: {dropped:?}");
    }
    // The corpus's own words are not taken for dropped ones.
    for w in ["很", "不", "他", "也"] {
        assert!(!dropped.contains(&w), "{w} taken for dropped: {dropped:?}");
    }
    env.run(&["stats"])
        .ok()
        .stdout_has("text style: segmented with spaces");

    let encoder = env.path("tiny-bert");
    let texts: Vec<String> = cleaned_corpus().lines().map(str::to_string).collect();
    write_random_checkpoint(
        &encoder,
        &TinyBertSpec {
            texts,
            ..TinyBertSpec::default()
        },
        7,
    )
    .unwrap();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["knowledge", "retrieve", "-k", "5"]).ok();
    let m = |name: &str| env.path(&format!("models/{name}"));
    let nb = [
        "--knowledge",
        "neighbours",
        "--neighbours-source",
        "knn-tiny",
    ];
    let train = |name: &str, args: &[&str]| {
        let out = m(name);
        let mut a = vec!["train"];
        a.extend(args);
        a.extend(["--out", s(&out)]);
        env.run(&a).ok();
    };
    train("linear", &["--classifier", "linear"]);
    train(
        "linear_ctx",
        &["--classifier", "linear", "--knowledge", "context"],
    );
    let mut frozen = vec!["--classifier", "frozen", "--hidden", "16", "--epochs", "10"];
    frozen.extend(nb);
    frozen.extend(["--context", "2"]);
    train("frozen_nb_ctx", &frozen);
    train("knn", &["--classifier", "knn", "-k", "5"]);
    train(
        "finetune",
        &[
            "--classifier",
            "finetune",
            "--encoder-dir",
            s(&encoder),
            "--epochs",
            "1",
            "--batch",
            "16",
            "--max-len",
            "16",
        ],
    );
    let (l, f_, k, ft) = (m("linear"), m("frozen_nb_ctx"), m("knn"), m("finetune"));
    train(
        "ensemble",
        &[
            "--classifier",
            "ensemble",
            "--member",
            s(&l),
            "--member",
            s(&f_),
            "--member",
            s(&k),
            "--member",
            s(&ft),
        ],
    );
    for name in [
        "linear",
        "linear_ctx",
        "frozen_nb_ctx",
        "knn",
        "finetune",
        "ensemble",
    ] {
        let model = m(name);
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("meta.json")).unwrap())
                .unwrap();
        assert_eq!(meta["text_style"]["segmented"], true, "{name}");
        let raw = env
            .run(&[
                "--json",
                "predict",
                "--model",
                s(&model),
                "--explain",
                AS_WRITTEN,
            ])
            .ok()
            .json();
        assert_eq!(raw[0]["text"], AS_WRITTEN, "{name}: the text as given");
        assert_eq!(raw[0]["read"], "很 担心 明天 考试", "{name}: the text read");
        let cleaned = env
            .run(&[
                "--json",
                "predict",
                "--model",
                s(&model),
                "很 担心 明天 考试",
            ])
            .ok()
            .json();
        assert_eq!(cleaned[0]["read"], "很 担心 明天 考试", "{name}");
        for (a, b) in probabilities(&raw[0])
            .iter()
            .zip(probabilities(&cleaned[0]))
        {
            assert!((a - b).abs() <= 1e-6, "{name}: {raw} vs {cleaned}");
        }
        env.run(&["predict", "--model", s(&model), "--explain", AS_WRITTEN])
            .ok()
            .stdout_has(&format!("{AS_WRITTEN}\n"))
            .stdout_has("  read: 很 担心 明天 考试\n");
    }
    // A document as written: each sentence's context is the others, brought into the style.
    let doc = env
        .run_with_stdin(
            &[
                "--json",
                "predict",
                "--model",
                s(&m("linear_ctx")),
                "--document",
                "--explain",
            ],
            "孩子们笑得很开心。\n我很担心明天的考试！\n",
        )
        .ok()
        .json();
    assert_eq!(doc[1]["context"]["before"], doc[0]["read"]);
    assert_eq!(doc[0]["context"]["after"], "很 担心 明天 考试");
    assert!(!doc[0]["read"].as_str().unwrap().contains('。'), "{doc}");
    // The same through the API and the classify page.
    let server = Server::start(&env, "127.0.0.1:0", &["--model", s(&m("ensemble"))]);
    let (status, _, body) = server.post(
        "/api/predict",
        format!(r#"{{"texts": ["{AS_WRITTEN}"], "explain": true}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let api = &api[0];
    assert_eq!(api["read"], "很 担心 明天 考试", "{api}");
    let (status, _, page) = server.get(&format!("/classify?text={}", enc(AS_WRITTEN)));
    assert_eq!(status, 200);
    assert!(
        page.contains(r#"<code id="read" lang="zh">很 担心 明天 考试</code>"#),
        "{page}"
    );
}

#[test]
fn rows_as_written_in_a_cleaned_store_keep_their_text() {
    let env = TestEnv::new();
    let f = env.write("c.csv", cleaned_corpus());
    ingest(&env, &f, &[]);
    let raw = env.write(
        "raw.jsonl",
        "{\"id\": 1001, \"text\": \"我很担心明天的考试，怕考不好。\", \"labels\": [\"Anxiety\"]}\n\
         {\"id\": 1002, \"text\": \"孩子们笑得很开心！\", \"labels\": [\"Joy\", \"Love\"]}\n\
         {\"id\": 1003, \"text\": \"期待 春天\", \"labels\": [\"Expect\"]}\n",
    );
    let out = env
        .run(&["ingest", s(&raw), "--split", "train"])
        .ok()
        .stdout_has("2 sentence(s) not written in the store's text style");
    assert!(
        !out.stdout.contains("text style: segmented"),
        "{}",
        out.stdout
    );
    // Shown, searched and exported as given; models read it in the style.
    let show = env.run(&["--json", "show", "1001"]).ok().json();
    assert_eq!(show["text"], "我很担心明天的考试，怕考不好。");
    assert_eq!(show["read"], "很 担心 明天 考试 怕 考 不 好");
    let show_1003 = env.run(&["--json", "show", "1003"]).ok().json();
    assert!(
        show_1003.get("read").is_none(),
        "in style already: {show_1003}"
    );
    env.run(&["show", "1001"])
        .ok()
        .stdout_has("text     我很担心明天的考试，怕考不好。\n")
        .stdout_has("read as  很 担心 明天 考试 怕 考 不 好");
    let hits = env
        .run(&["--json", "query", "--keyword", "怕考不好"])
        .ok()
        .json();
    let found: Vec<&Value> = hits
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["id"] == 1001)
        .collect();
    assert_eq!(found.len(), 1, "{hits}");
    assert_eq!(found[0]["text"], "我很担心明天的考试，怕考不好。");
    assert_eq!(env.stats()["normalized"], 2);
    let dir = env.path("export");
    env.run(&["export", "parquet", "--out", s(&dir)]).ok();
    let file = std::fs::File::open(dir.join("examples.parquet")).unwrap();
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let mut exported = None;
    for b in &batches {
        let ids = b["id"].as_primitive::<UInt64Type>();
        let text = b["text"].as_string::<i32>();
        for i in 0..b.num_rows() {
            if ids.value(i) == 1002 {
                exported = Some(text.value(i).to_string());
            }
        }
    }
    assert_eq!(exported.as_deref(), Some("孩子们笑得很开心！"));
    // The example page shows it as given.
    let server = Server::start(&env, "127.0.0.1:0", &[]);
    let (status, _, page) = server.get("/examples/1002");
    assert_eq!(status, 200);
    assert!(page.contains("孩子们笑得很开心！"), "{page}");
    drop(server);
    // A store keeps one style.
    env.run(&["ingest", s(&raw), "--text-style", "as-written"])
        .code(2)
        .stderr_has("a store keeps one style");
    let declared = env.write("style.json", r#"{"segmented": false}"#);
    env.run(&["ingest", s(&raw), "--text-style", s(&declared)])
        .code(2)
        .stderr_has("a store keeps one style");
    let bad = env.write("bad.json", r#"{"segmented": "yes"}"#);
    env.run(&["ingest", s(&raw), "--text-style", s(&bad)])
        .code(2)
        .stderr_has("bad.json:1: not a text style");
}

/// A corpus written as people write: no spaces, punctuation kept.
fn raw_corpus() -> String {
    let patterns = [
        ("我很担心明天的考试，怕考不好。", "['Anxiety']"),
        ("孩子们笑得很开心，他也笑了！", "\"['Joy', 'Love']\""),
        ("这种行为令人厌恶，他不讲理。", "\"['Hate', 'Anger']\""),
        ("我期待春天的旅行，他说一定去。", "['Expect']"),
    ];
    let mut csv = String::from("ID,Text,Labels\n");
    for i in 1..=240 {
        let (w, l) = patterns[i % 4];
        csv.push_str(&format!("{i},第{}句{}{w},{l}\n", i % 7, i % 11));
    }
    csv
}

#[test]
fn a_corpus_written_raw_works_end_to_end_as_before() {
    let derived = TestEnv::new();
    let as_written = TestEnv::new();
    let mut results = Vec::new();
    for (env, extra) in [
        (&derived, &[][..]),
        (&as_written, &["--text-style", "as-written"][..]),
    ] {
        let f = env.write("raw.csv", raw_corpus());
        ingest(env, &f, extra);
        let model = env.path("models/linear");
        env.run(&["train", "--classifier", "linear", "--out", s(&model)])
            .ok();
        let eval = env
            .run(&["--json", "eval", "--model", s(&model)])
            .ok()
            .json();
        let pred = env
            .run(&["--json", "predict", "--model", s(&model), AS_WRITTEN])
            .ok()
            .json();
        results.push((eval, pred));
        let shown = env.run(&["--json", "show", "5"]).ok().json();
        assert_eq!(shown["text"], "第5句5孩子们笑得很开心，他也笑了！");
        assert!(shown.get("read").is_none());
    }
    let style = &derived.stats()["text_style"]["style"];
    assert_eq!(style["segmented"], false, "{style}");
    assert_eq!(style["punctuation"], "kept", "{style}");
    assert!(style.get("dropped").is_none(), "{style}");
    assert!(as_written.stats()["text_style"]["style"].is_null());
    // Learning the raw style changes nothing a raw corpus's models do.
    assert_eq!(results[0].0, results[1].0);
    assert_eq!(results[0].1[0]["read"], AS_WRITTEN);
    assert_eq!(
        probabilities(&results[0].1[0]),
        probabilities(&results[1].1[0])
    );
    // Segmented text typed into a raw-style model is joined as the corpus writes.
    let model = derived.path("models/linear");
    let p = derived
        .run(&[
            "--json",
            "predict",
            "--model",
            s(&model),
            "我 很 担心 明天 的 考试 。",
        ])
        .ok()
        .json();
    assert_eq!(p[0]["read"], AS_WRITTEN);
}

/// `tests/fixtures/pre_text_style`: a store and a linear model written by the release before
/// text styles (commit 7c87190), with what that release's `predict --json` and `eval --json`
/// printed for them.
#[test]
fn stores_and_models_written_before_styles_load_and_predict_as_before() {
    let env = TestEnv::new();
    let fixture = crate::util::repo().join("tests/fixtures/pre_text_style");
    copy_dir(&fixture, env.dir.path());
    let model = env.path("linear");
    let stats = env.stats();
    assert!(stats.get("text_style").is_none(), "{stats}");
    assert_eq!(stats["examples"], 120);
    assert_eq!(stats["normalized"], 0);
    env.run(&["stats"])
        .ok()
        .stdout_has("text style: not recorded");
    env.run(&["check"]).ok();
    let texts = "我很担心明天的考试。\n担心 考试 明天\n孩子们笑得很开心！\n";
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("predict.json")).unwrap()).unwrap();
    let same_as_before = |got: Value| {
        let mut got = got;
        for (g, e) in got
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip(expected.as_array().unwrap())
        {
            // The one addition: the text the model read, here the text as given.
            assert_eq!(g["read"], e["text"]);
            g.as_object_mut().unwrap().remove("read");
        }
        assert_eq!(got, expected);
    };
    same_as_before(
        env.run_with_stdin(&["--json", "predict", "--model", s(&model)], texts)
            .ok()
            .json(),
    );
    let mut eval = env
        .run(&["--json", "eval", "--model", s(&model)])
        .ok()
        .json();
    // The additions: calibration reported, the same before and after for a model without one.
    assert_eq!(eval["uncalibrated_ece"], eval["calibration"]["ece"]);
    let o = eval.as_object_mut().unwrap();
    o.remove("calibration");
    o.remove("uncalibrated_ece");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("eval.json")).unwrap()).unwrap();
    assert_eq!(eval, want);
    // Re-ingesting the corpus learns the style from the stored texts and the file; nothing
    // else changes, and the old model still reads text as given.
    let summary = ingest(&env, &env.path("corpus.csv"), &["--seed", "1"]);
    assert_eq!(summary["unchanged"], 120, "{summary}");
    assert_eq!(summary["normalized"], 0, "{summary}");
    assert!(
        summary["text_style"]
            .as_str()
            .unwrap()
            .contains("derived from 120 stored sentences and 120 of"),
        "{summary}"
    );
    same_as_before(
        env.run_with_stdin(&["--json", "predict", "--model", s(&model)], texts)
            .ok()
            .json(),
    );
    let new = env.path("linear-new");
    env.run(&["train", "--classifier", "linear", "--out", s(&new)])
        .ok();
    let p = env
        .run(&["--json", "predict", "--model", s(&new), AS_WRITTEN])
        .ok()
        .json();
    assert_ne!(p[0]["read"], AS_WRITTEN, "{p}");
}
