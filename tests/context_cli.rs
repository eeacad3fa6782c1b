//! Document context as knowledge (issue 12, first slice): documents in the store, `show`'s
//! context, the linear model's context block, and `predict --document`.

use crate::util::{s, TestEnv};
use serde_json::{json, Value};

/// Ids and texts of a `show --json` context side.
fn side(v: &Value) -> Vec<(u64, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            // Text only: a context sentence carries its id and text, never its labels.
            let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["id", "text"], "{c}");
            (
                c["id"].as_u64().unwrap(),
                c["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn texts(v: &Value) -> Vec<String> {
    side(v).into_iter().map(|(_, t)| t).collect()
}

#[test]
fn context_documents_are_stored_and_shown_in_order_same_document_only() {
    let env = TestEnv::new();
    // Two documents interleaved, positions out of file order.
    let jsonl = [
        (1, "a", 2, "甲三"),
        (2, "b", 0, "乙一"),
        (3, "a", 0, "甲一"),
        (4, "b", 1, "乙二"),
        (5, "a", 1, "甲二"),
        (6, "a", 3, "甲四"),
    ]
    .iter()
    .map(|(id, doc, pos, text)| {
        json!({"id": id, "doc": doc, "position": pos, "text": text, "labels": ["Joy"]}).to_string()
    })
    .collect::<Vec<_>>()
    .join("\n");
    let f = env.write("docs.jsonl", jsonl);
    env.run(&["ingest", s(&f), "--split", "train"]).ok();
    let shown = env.run(&["--json", "show", "1"]).ok().json();
    assert_eq!(shown["context"]["doc"], "a");
    assert_eq!(shown["context"]["position"], 2);
    assert_eq!(texts(&shown["context"]["before"]), ["甲一", "甲二"]);
    assert_eq!(texts(&shown["context"]["after"]), ["甲四"]);
    let one = env
        .run(&["--json", "show", "5", "--context", "1"])
        .ok()
        .json();
    assert_eq!(side(&one["context"]["before"]), [(3, "甲一".to_string())]);
    assert_eq!(side(&one["context"]["after"]), [(1, "甲三".to_string())]);
    let b = env.run(&["--json", "show", "4"]).ok().json();
    assert_eq!(texts(&b["context"]["before"]), ["乙一"]);
    assert!(b["context"]["after"].as_array().unwrap().is_empty());
    // The text view prints it too.
    env.run(&["show", "1"])
        .ok()
        .stdout_has("甲二")
        .stdout_has("document a, position 2");

    // A CSV with a document column (rows of a document in file order).
    let csv = env.write(
        "docs.csv",
        "ID,Doc,Text,Labels\n11,x,子一,['Joy']\n12,y,丑一,['Joy']\n13,x,子二,['Joy']\n14,x,子三,['Joy']\n",
    );
    env.run(&["ingest", s(&csv), "--split", "train"])
        .code(2)
        .stderr_has("Doc")
        .stderr_has("--doc-column");
    env.run(&["ingest", s(&csv), "--split", "train", "--doc-column", "doc"])
        .ok();
    let x = env.run(&["--json", "show", "13"]).ok().json();
    assert_eq!(x["context"]["doc"], "x");
    assert_eq!(texts(&x["context"]["before"]), ["子一"]);
    assert_eq!(texts(&x["context"]["after"]), ["子三"]);

    // A file without document ids is one stream in id order (and no other file's).
    let plain = env.write(
        "plain.csv",
        "ID,Text,Labels\n21,寅一,['Joy']\n22,寅二,['Joy']\n23,寅三,['Joy']\n",
    );
    env.run(&["ingest", s(&plain), "--split", "train"]).ok();
    let p = env.run(&["--json", "show", "21"]).ok().json();
    assert_eq!(p["context"]["doc"], Value::Null);
    assert!(p["context"]["before"].as_array().unwrap().is_empty());
    assert_eq!(texts(&p["context"]["after"]), ["寅二", "寅三"]);

    // Re-ingesting the CSV without its document column puts its rows back into the stream.
    let nodoc = env.write(
        "docs.csv",
        "ID,Text,Labels\n11,子一,['Joy']\n12,丑一,['Joy']\n13,子二,['Joy']\n14,子三,['Joy']\n",
    );
    let j = env
        .run(&["--json", "ingest", s(&nodoc), "--split", "train"])
        .ok()
        .json();
    assert_eq!(j["updated"], 4, "{j}");
    let x = env.run(&["--json", "show", "13"]).ok().json();
    assert_eq!(x["context"]["doc"], Value::Null);
    assert_eq!(texts(&x["context"]["before"]), ["子一", "丑一"]);
}

/// A corpus where a sentence's emotion is told only by the sentence before it: document `d{i}`
/// is a cue (好消息 or 坏消息, position 0) and the ambiguous "我 听 了 第 i" (position 1). The
/// cues come first in the file, so with `--test-rows 40` every cue is a test example and every
/// training sentence's context is a test sentence's text.
fn cue_corpus(swap_cues: bool, test_label: &str) -> String {
    let n = 40;
    let mut lines = Vec::new();
    for i in 0..n {
        let good = (i % 2 == 0) != swap_cues;
        let cue = if good {
            "今天 传来 好消息"
        } else {
            "今天 传来 坏消息"
        };
        lines.push(json!({"id": i + 1, "doc": format!("d{i}"), "position": 0,
            "text": format!("{cue} {i}"), "labels": [test_label]}));
    }
    for i in 0..n {
        let label = if i % 2 == 0 { "Joy" } else { "Sorrow" };
        lines.push(
            json!({"id": n + i + 1, "doc": format!("d{i}"), "position": 1,
            "text": format!("我 听 了 {}", i % 5), "labels": [label]}),
        );
    }
    lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A store of `corpus` and a linear model with context trained on it; returns the env.
fn trained(corpus: &str) -> TestEnv {
    let env = TestEnv::new();
    let f = env.write("c.jsonl", corpus);
    env.run(&[
        "ingest",
        s(&f),
        "--test-rows",
        "40",
        "--val-fraction",
        "0.25",
    ])
    .ok();
    env.run(&[
        "train",
        "--classifier",
        "linear",
        "--knowledge",
        "context",
        "--context",
        "1",
        "--out",
        s(&env.path("m")),
    ])
    .ok();
    env
}

/// `predict --json --document --explain` of a two-sentence document.
fn predict_doc(env: &TestEnv, lines: &str) -> Value {
    let m = env.path("m");
    env.run_with_stdin(
        &[
            "--json",
            "predict",
            "--model",
            s(&m),
            "--document",
            "--explain",
        ],
        lines,
    )
    .ok()
    .json()
}

#[test]
fn context_uses_test_texts_but_never_labels_of_other_examples() {
    let doc = "今天 传来 好消息 7\n我 听 了 3\n";
    let a = trained(&cue_corpus(false, "Surprise"));
    let pa = predict_doc(&a, doc);
    // The context decides: after good news, Joy.
    assert_eq!(pa[1]["labels"], json!(["Joy"]), "{pa}");
    assert_eq!(pa[1]["context"]["before"], "今天 传来 好消息 7");
    let val = |env: &TestEnv| {
        env.run(&[
            "--json",
            "eval",
            "--model",
            s(&env.path("m")),
            "--split",
            "val",
        ])
        .ok()
        .json()
    };
    // Other labels on the context sentences (test rows, never trained on): the same model.
    let b = trained(&cue_corpus(false, "Anger"));
    assert_eq!(predict_doc(&b, doc), pa);
    assert_eq!(val(&b), val(&a));
    let meta = |env: &TestEnv| -> Value {
        serde_json::from_slice(&std::fs::read(env.path("m/meta.json")).unwrap()).unwrap()
    };
    assert_eq!(meta(&a)["train_hash"], meta(&b)["train_hash"]);
    // Other texts on them (the cues swapped): another model, which learned the swap.
    let c = trained(&cue_corpus(true, "Surprise"));
    let pc = predict_doc(&c, doc);
    assert_ne!(meta(&a)["train_hash"], meta(&c)["train_hash"]);
    assert_ne!(pc[1]["probabilities"], pa[1]["probabilities"]);
    assert_eq!(pc[1]["labels"], json!(["Sorrow"]), "{pc}");
}

#[test]
fn context_predict_document_alone_and_old_models() {
    let env = trained(&cue_corpus(false, "Surprise"));
    let m = env.path("m");
    // The same sentence alone and within a declared document: different context, different
    // probabilities; --explain shows it.
    let alone = env
        .run(&[
            "--json",
            "predict",
            "--model",
            s(&m),
            "--explain",
            "我 听 了 3",
        ])
        .ok()
        .json();
    assert_eq!(alone[0]["context"], json!({"before": "", "after": ""}));
    let within = predict_doc(&env, "今天 传来 坏消息 9\n我 听 了 3\n");
    assert_eq!(within[1]["text"], "我 听 了 3");
    assert_eq!(within[1]["context"]["before"], "今天 传来 坏消息 9");
    assert_eq!(within[0]["context"]["after"], "我 听 了 3");
    assert_ne!(within[1]["probabilities"], alone[0]["probabilities"]);
    assert_eq!(within[1]["labels"], json!(["Sorrow"]), "{within}");
    env.run(&[
        "predict",
        "--model",
        s(&m),
        "--explain",
        "--file",
        s(&env.write("doc.txt", "今天 传来 坏消息 9\n我 听 了 3\n")),
        "--document",
    ])
    .ok()
    .stdout_has("context before: 今天 传来 坏消息 9");
    // JSON Lines grouped by doc: the same as the declared document.
    let jsonl = env.write(
        "p.jsonl",
        "{\"text\": \"我 听 了 3\", \"doc\": \"z\", \"position\": 1}\n{\"text\": \"别的\", \"doc\": \"y\"}\n{\"text\": \"今天 传来 坏消息 9\", \"doc\": \"z\", \"position\": 0}\n",
    );
    let j = env
        .run(&[
            "--json",
            "predict",
            "--model",
            s(&m),
            "--explain",
            "--file",
            s(&jsonl),
        ])
        .ok()
        .json();
    assert_eq!(j[0]["probabilities"], within[1]["probabilities"]);
    assert_eq!(j[1]["context"], json!({"before": "", "after": ""}));
    // eval --file reads documents the same way (a file without ids is one stream).
    let held = env.write(
        "held.jsonl",
        "{\"text\": \"今天 传来 坏消息 9\", \"doc\": \"q\", \"labels\": [\"Surprise\"]}\n{\"text\": \"我 听 了 3\", \"doc\": \"q\", \"labels\": [\"Sorrow\"]}\n",
    );
    env.run(&["--json", "eval", "--model", s(&m), "--file", s(&held)])
        .ok();

    // A text-only model whose meta.json predates context (no `context` in its attach, no
    // context settings in its config) loads and predicts exactly as before.
    let plain = env.path("plain");
    env.run(&["train", "--classifier", "linear", "--out", s(&plain)])
        .ok();
    let before = env
        .run(&[
            "--json",
            "predict",
            "--model",
            s(&plain),
            "今天 传来 坏消息",
        ])
        .ok()
        .json();
    let mpath = plain.join("meta.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    assert_eq!(meta["attach"]["context"], 0);
    meta["attach"].as_object_mut().unwrap().remove("context");
    let strip = |v: &mut Value| {
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !k.starts_with("context"));
        }
    };
    strip(&mut meta["linear"]);
    std::fs::write(&mpath, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    assert!(!String::from_utf8(std::fs::read(&mpath).unwrap())
        .unwrap()
        .contains("context"));
    let after = env
        .run(&[
            "--json",
            "predict",
            "--model",
            s(&plain),
            "今天 传来 坏消息",
        ])
        .ok()
        .json();
    assert_eq!(after, before);
    // kNN does not read context: it refuses it, naming the setting.
    env.run(&[
        "train",
        "--classifier",
        "knn",
        "--context",
        "2",
        "--out",
        s(&env.path("knn")),
    ])
    .code(2)
    .stderr_has("only the linear, frozen and finetune classifiers read the context");
}
