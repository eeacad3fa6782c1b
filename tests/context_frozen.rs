//! Document context beyond linear (issue 12): a frozen head reading the context sentences'
//! stored vectors, a fine-tune reading them as a sentence pair, ensembles of context members,
//! and `ingest --test-last`.

use crate::util::{s, TestEnv};
use emoknow::testkit::tiny::{write_random_checkpoint, TinyBertSpec};
use serde_json::{json, Value};

const CUES: [&str; 2] = ["今天 传来 好消息", "今天 传来 坏消息"];
/// Texts of the document `z` (test rows, ids next to the first training sentence's).
const Z: [&str; 2] = ["别的 文章 开头", "完全 不同 句子"];

/// Document `d{i}`: a cue (test row) then "我 听 了 …" (Joy after good news, Sorrow after bad
/// news). The file holds the 40 cues, then document `z` (2 sentences), then the 40 answers:
/// with `--test-rows 42` every cue and `z` are test rows, and every training sentence's
/// context is a test sentence's text. `z` sits between the cues and the answers in file and
/// id order, so a context that crossed documents would read it.
fn corpus(swap_cues: bool, test_label: &str, z_variant: usize) -> String {
    let n = 40;
    let mut lines = Vec::new();
    for i in 0..n {
        let good = (i % 2 == 0) != swap_cues;
        lines.push(json!({"id": i + 1, "doc": format!("d{i}"), "position": 0,
            "text": format!("{} {i}", CUES[usize::from(!good)]), "labels": [test_label]}));
    }
    for (p, t) in Z.iter().enumerate() {
        let text = if z_variant == 0 {
            t.to_string()
        } else {
            format!("{} 改", Z[1 - p])
        };
        lines.push(
            json!({"id": n + p + 1, "doc": "z", "position": p, "text": text,
            "labels": [test_label]}),
        );
    }
    for i in 0..n {
        let label = if i % 2 == 0 { "Joy" } else { "Sorrow" };
        lines.push(
            json!({"id": n + 3 + i, "doc": format!("d{i}"), "position": 1,
            "text": format!("我 听 了 {}", i % 5), "labels": [label]}),
        );
    }
    lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A store of `corpus` and a tiny BERT in `tiny-bert` (the same in every store: its
/// vocabulary covers every variant).
fn store(corpus: &str) -> TestEnv {
    let env = TestEnv::new();
    let f = env.write("c.jsonl", corpus);
    env.run(&[
        "ingest",
        s(&f),
        "--test-rows",
        "42",
        "--val-fraction",
        "0.25",
    ])
    .ok();
    let mut texts: Vec<String> = CUES.iter().chain(&Z).map(|t| t.to_string()).collect();
    texts.push("我 听 了 0123456789 改".into());
    write_random_checkpoint(
        &env.path("tiny-bert"),
        &TinyBertSpec {
            texts,
            ..TinyBertSpec::default()
        },
        7,
    )
    .unwrap();
    env
}

/// [`store`], embedded with the tiny BERT, and a frozen model with one sentence of context on
/// each side in `m` (extra train arguments appended).
fn trained(corpus: &str, extra: &[&str]) -> TestEnv {
    let env = store(corpus);
    let enc = env.path("tiny-bert");
    env.run(&["embed", "--encoder", s(&enc), "--name", "tiny"])
        .ok();
    let mut args = vec![
        "train",
        "--classifier",
        "frozen",
        "--knowledge",
        "context",
        "--context",
        "1",
        "--hidden",
        "16",
        "--epochs",
        "40",
        "--out",
    ];
    let out = env.path("m");
    args.push(s(&out));
    args.extend_from_slice(extra);
    env.run(&args).ok();
    env
}

fn meta(env: &TestEnv, model: &str) -> Value {
    serde_json::from_slice(&std::fs::read(env.path(model).join("meta.json")).unwrap()).unwrap()
}

/// `predict --json --explain` of `lines` on stdin (with `--document` when asked).
fn predict(env: &TestEnv, model: &str, lines: &str, document: bool) -> Value {
    let m = env.path(model);
    let mut args = vec!["--json", "predict", "--model", s(&m), "--explain"];
    if document {
        args.push("--document");
    }
    env.run_with_stdin(&args, lines).ok().json()
}

fn eval_val(env: &TestEnv, model: &str) -> Value {
    env.run(&[
        "--json",
        "eval",
        "--model",
        s(&env.path(model)),
        "--split",
        "val",
    ])
    .ok()
    .json()
}

/// `model`'s meta.json and its validation metrics evaluated anew, after checking that it is
/// a `kind` model reading one sentence of context on each side and that, reloaded, it
/// reproduces the validation metrics it was saved with, exactly.
fn one_sentence_context_model(env: &TestEnv, model: &str, kind: &str) -> (Value, Value) {
    let m = meta(env, model);
    assert_eq!(m["kind"], kind);
    assert_eq!(m["attach"]["mode"], "context");
    assert_eq!(m["attach"]["context"], 1);
    let v = eval_val(env, model);
    for k in ["hamming_accuracy", "exact_match", "micro_f1", "macro_f1"] {
        assert_eq!(v[k], m["val"][k], "{k}");
    }
    (m, v)
}

const DOC: &str = "今天 传来 好消息 7\n我 听 了 3\n";

#[test]
fn frozen_context_reads_text_vectors_never_labels_nor_other_documents() {
    let a = trained(&corpus(false, "Surprise", 0), &[]);
    let (ma, va) = one_sentence_context_model(&a, "m", "frozen");
    let pa = predict(&a, "m", DOC, true);
    assert_eq!(pa[1]["context"]["before"], "今天 传来 好消息 7");
    // Other labels on the context sentences (test rows): the same model, bit for bit.
    let b = trained(&corpus(false, "Anger", 0), &[]);
    assert_eq!(meta(&b, "m")["train_hash"], ma["train_hash"]);
    assert_eq!(eval_val(&b, "m"), va);
    assert_eq!(predict(&b, "m", DOC, true), pa);
    // Other text in another document lying between them in file and id order: the same
    // model (no context crosses a document boundary).
    let z = trained(&corpus(false, "Surprise", 1), &[]);
    assert_eq!(meta(&z, "m")["train_hash"], ma["train_hash"]);
    assert_eq!(eval_val(&z, "m"), va);
    assert_eq!(predict(&z, "m", DOC, true), pa);
    // Other text on the context sentences: another model.
    let c = trained(&corpus(true, "Surprise", 0), &[]);
    assert_ne!(meta(&c, "m")["train_hash"], ma["train_hash"]);
    assert_ne!(
        predict(&c, "m", DOC, true)[1]["probabilities"],
        pa[1]["probabilities"]
    );
}

#[test]
fn frozen_context_predicts_documents_and_joins_ensembles() {
    let env = trained(&corpus(false, "Surprise", 0), &["--context-pool", "mean"]);
    assert_eq!(meta(&env, "m")["attach"]["context_pool"], "mean");
    // The same sentence alone and within a document: other context vectors, other
    // probabilities; a document's sentences are embedded once, as a batch.
    let alone = predict(&env, "m", "我 听 了 3\n", false);
    assert_eq!(alone[0]["context"], json!({"before": "", "after": ""}));
    let within = predict(&env, "m", DOC, true);
    assert_eq!(within[1]["context"]["before"], "今天 传来 好消息 7");
    assert_ne!(within[1]["probabilities"], alone[0]["probabilities"]);
    // Another sentence before it (the batch padded alike, so its own vector is the same):
    // other probabilities.
    let other = predict(&env, "m", "今天 传来 坏消息 7\n我 听 了 3\n", true);
    assert_ne!(other[1]["probabilities"], within[1]["probabilities"]);
    // Sentences of other documents in the batch change nothing.
    let jsonl = "{\"text\": \"今天 传来 好消息 7\", \"doc\": \"p\"}\n{\"text\": \"完全 不同 句子\", \"doc\": \"q\"}\n{\"text\": \"我 听 了 3\", \"doc\": \"p\"}\n";
    let mixed = predict(&env, "m", jsonl, false);
    assert_eq!(mixed[2]["probabilities"], within[1]["probabilities"]);
    assert_eq!(mixed[1]["context"], json!({"before": "", "after": ""}));

    // An ensemble of context members: each member gets the context it was trained with.
    env.run(&[
        "train",
        "--classifier",
        "linear",
        "--knowledge",
        "context",
        "--context",
        "1",
        "--out",
        s(&env.path("lin")),
    ])
    .ok();
    let ens = env
        .run(&[
            "--json",
            "train",
            "--classifier",
            "ensemble",
            "--member",
            s(&env.path("lin")),
            "--member",
            s(&env.path("m")),
            "--out",
            s(&env.path("ens")),
        ])
        .ok()
        .json();
    let v = eval_val(&env, "ens");
    for k in ["hamming_accuracy", "exact_match", "micro_f1", "macro_f1"] {
        assert_eq!(v[k], ens["val"][k], "{k}");
    }
    let e_alone = predict(&env, "ens", "我 听 了 3\n", false);
    let e_within = predict(&env, "ens", DOC, true);
    assert_eq!(e_within[1]["context"]["before"], "今天 传来 好消息 7");
    assert_ne!(e_within[1]["probabilities"], e_alone[0]["probabilities"]);
    // Before its own calibration: the average of its members' (calibrated) probabilities,
    // each with its context.
    crate::util::copy_dir(&env.path("ens"), &env.path("ens_raw"));
    let path = env.path("ens_raw/meta.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    j.as_object_mut().unwrap().remove("calibration");
    std::fs::write(&path, serde_json::to_vec(&j).unwrap()).unwrap();
    let raw_within = predict(&env, "ens_raw", DOC, true);
    let lin = predict(&env, "lin", DOC, true);
    for (i, name) in ["Love", "Joy", "Sorrow"].iter().enumerate() {
        let avg = (lin[1]["probabilities"][name].as_f64().unwrap()
            + within[1]["probabilities"][name].as_f64().unwrap())
            / 2.0;
        let got = raw_within[1]["probabilities"][name].as_f64().unwrap();
        assert!((avg - got).abs() < 1e-5, "{i} {name}: {avg} vs {got}");
    }

    // Kinds that do not read context refuse it; a decay outside (0, 1] is refused.
    env.run(&[
        "train",
        "--classifier",
        "knn",
        "--context",
        "1",
        "--out",
        s(&env.path("knn")),
    ])
    .code(2)
    .stderr_has("linear, frozen and finetune");
    env.run(&[
        "train",
        "--classifier",
        "frozen",
        "--context",
        "1",
        "--context-decay",
        "0",
        "--out",
        s(&env.path("bad")),
    ])
    .code(2)
    .stderr_has("(0, 1]");
}

/// [`store`] and a fine-tune of the tiny BERT reading one sentence of context on each side
/// (the default) as a sentence pair, in `ft`.
fn finetuned(corpus: &str) -> TestEnv {
    let env = store(corpus);
    let (enc, out) = (env.path("tiny-bert"), env.path("ft"));
    env.run(&[
        "train",
        "--classifier",
        "finetune",
        "--encoder-dir",
        s(&enc),
        "--knowledge",
        "context",
        "--epochs",
        "3",
        "--batch",
        "8",
        "--lr",
        "1e-3",
        "--max-len",
        "32",
        "--out",
        s(&out),
    ])
    .ok();
    env
}

#[test]
fn finetune_reads_the_context_as_a_sentence_pair_never_labels_nor_other_documents() {
    let a = finetuned(&corpus(false, "Surprise", 0));
    let (ma, va) = one_sentence_context_model(&a, "ft", "finetune");
    // The context reaches the network: the same sentence alone, after good news and after bad
    // news, three different outputs; a sentence of another document in between changes
    // nothing.
    let alone = predict(&a, "ft", "我 听 了 3\n", false);
    let good = predict(&a, "ft", DOC, true);
    let bad = predict(&a, "ft", "今天 传来 坏消息 7\n我 听 了 3\n", true);
    assert_eq!(good[1]["context"]["before"], "今天 传来 好消息 7");
    assert_ne!(good[1]["probabilities"], alone[0]["probabilities"]);
    assert_ne!(good[1]["probabilities"], bad[1]["probabilities"]);
    let jsonl = "{\"text\": \"今天 传来 好消息 7\", \"doc\": \"p\"}\n{\"text\": \"完全 不同 句子\", \"doc\": \"q\"}\n{\"text\": \"我 听 了 3\", \"doc\": \"p\"}\n";
    assert_eq!(
        predict(&a, "ft", jsonl, false)[2]["probabilities"],
        good[1]["probabilities"]
    );
    // Other labels on the context sentences, or other text in a document lying between them:
    // the same training inputs, the same model.
    for other in [corpus(false, "Anger", 0), corpus(false, "Surprise", 1)] {
        let b = finetuned(&other);
        assert_eq!(meta(&b, "ft")["train_hash"], ma["train_hash"]);
        assert_eq!(eval_val(&b, "ft"), va);
    }
    // Other text on the context sentences: other training inputs.
    let c = finetuned(&corpus(true, "Surprise", 0));
    assert_ne!(meta(&c, "ft")["train_hash"], ma["train_hash"]);
}

#[test]
fn test_last_rows_are_held_out_and_evaluated_by_id_range() {
    let env = TestEnv::new();
    let mut csv = String::from("ID,Text,Labels\n");
    for i in 1..=200 {
        let (w, l) = if i % 2 == 0 {
            ("开心 笑", "['Joy']")
        } else {
            ("担心 考试", "['Anxiety']")
        };
        csv.push_str(&format!("{i},{w} {i},{l}\n"));
    }
    let f = env.write("c.csv", csv);
    let j = env
        .run(&[
            "--json",
            "ingest",
            s(&f),
            "--test-rows",
            "10",
            "--test-last",
            "30",
            "--val-fraction",
            "0.2",
            "--val-block",
            "8",
        ])
        .ok()
        .json();
    assert_eq!(
        j["splits"],
        json!({"test": 40, "train": 128, "val": 32}),
        "{j}"
    );
    for id in [1u64, 10, 171, 200] {
        let e = env.run(&["--json", "show", &id.to_string()]).ok().json();
        assert_eq!(e["split"], "test", "{id}: {e}");
    }
    for id in [11u64, 170] {
        let e = env.run(&["--json", "show", &id.to_string()]).ok().json();
        assert_ne!(e["split"], "test", "{id}: {e}");
    }
    env.run(&["train", "--out", s(&env.path("lin"))]).ok();
    let m = env.path("lin");
    let all = env.run(&["--json", "eval", "--model", s(&m)]).ok().json();
    let last = env
        .run(&["--json", "eval", "--model", s(&m), "--ids", "171-200"])
        .ok()
        .json();
    let support = |j: &Value| -> u64 {
        j["per_label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["support"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(support(&all), 40);
    assert_eq!(support(&last), 30);
    env.run(&["eval", "--model", s(&m), "--ids", "171-200"])
        .ok()
        .stdout_has("ids 171-200 (30 examples)");
    env.run(&["eval", "--model", s(&m), "--ids", "300-400"])
        .code(2)
        .stderr_has("no example with an id in 300-400");
    env.run(&["eval", "--model", s(&m), "--ids", "9-3"])
        .code(2)
        .stderr_has("FIRST-LAST");
}
