//! Neighbours as a typed concept: a model uses, for new text, exactly the retrieval its stored
//! neighbours came from, whatever the source is called.

use crate::model_cli::{metrics, setup, Setup};
use crate::util::{s, TestEnv};

/// The validation rows of the store as a seed-layout file (id, text, labels).
fn val_file(env: &TestEnv) -> std::path::PathBuf {
    let val = env
        .run(&["--json", "query", "--split", "val", "-n", "1000"])
        .ok()
        .json();
    let mut csv = String::from("Text,Labels\n");
    for h in val.as_array().unwrap() {
        let labels: Vec<String> = h["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("'{}'", l.as_str().unwrap()))
            .collect();
        csv.push_str(&format!(
            "{},\"[{}]\"\n",
            h["text"].as_str().unwrap(),
            labels.join(", ")
        ));
    }
    env.write("val_as_new.csv", csv)
}

#[test]
fn dense_neighbours_under_a_custom_source_name_are_found_the_same_way_for_new_text() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["knowledge", "retrieve", "-k", "5", "--source", "my-nb"])
        .ok();
    let model = env.path("models/linear_nb");
    let meta = env
        .run(&[
            "--json",
            "train",
            "--classifier",
            "linear",
            "--knowledge",
            "neighbours",
            "--neighbours-source",
            "my-nb",
            "--neighbours-k",
            "5",
            "--out",
            s(&model),
        ])
        .ok()
        .json();
    // The model records how its neighbours were found.
    assert_eq!(
        meta["attach"]["neighbours"]["by"]["dense"]["encoder_id"],
        env.stats()["encoders"][0]["encoder"]["id"],
        "{meta}"
    );
    // The validation rows, given as new text: neighbours retrieved now, densely, give the
    // same predictions as the stored ones did in training.
    let f = val_file(&env);
    let again = env
        .run(&["--json", "eval", "--model", s(&model), "--file", s(&f)])
        .ok()
        .json();
    assert_eq!(
        metrics(&again),
        metrics(&meta["val"]),
        "{again}\n{}",
        meta["val"]
    );
    // predict explains with cosine scores (BM25's are unbounded) and the stored neighbours.
    let val = env
        .run(&["--json", "query", "--split", "val", "-n", "1"])
        .ok()
        .json();
    let id = val[0]["id"].as_u64().unwrap();
    let text = val[0]["text"].as_str().unwrap();
    let p = env
        .run(&["--json", "predict", "--model", s(&model), "--explain", text])
        .ok()
        .json();
    let got: Vec<u64> = p[0]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert!(n["score"].as_f64().unwrap() <= 1.0 + 1e-6, "{n}");
            n["id"].as_u64().unwrap()
        })
        .collect();
    let stored = env.run(&["--json", "show", &id.to_string()]).ok().json();
    let want: Vec<u64> = stored["knowledge"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["source"] == "my-nb")
        .unwrap()["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
    // Neighbours stored again another way no longer match what the model was trained on.
    env.run(&[
        "knowledge",
        "retrieve",
        "-k",
        "5",
        "--by",
        "bm25",
        "--source",
        "my-nb",
    ])
    .ok();
    env.run(&["eval", "--model", s(&model)])
        .code(2)
        .stderr_has("retrieve them again with the model's settings");
}

#[test]
fn a_model_directory_of_the_first_format_still_loads() {
    let Setup { env, .. } = setup();
    let model = env.path("models/linear");
    env.run(&["train", "--classifier", "linear", "--out", s(&model)])
        .ok();
    let before = env
        .run(&["--json", "eval", "--model", s(&model)])
        .ok()
        .json();
    // meta.json as the first format wrote it: every kind's settings present, null but one.
    let path = model.join("meta.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (k, null) in [
        ("encoder", serde_json::Value::Null),
        ("encoder_dir", serde_json::Value::Null),
        ("mlp", serde_json::Value::Null),
        ("stack_folds", 0.into()),
        ("knn", serde_json::Value::Null),
        ("finetune", serde_json::Value::Null),
        ("members", serde_json::json!([])),
    ] {
        v[k] = null;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let after = env
        .run(&["--json", "eval", "--model", s(&model)])
        .ok()
        .json();
    assert_eq!(metrics(&before), metrics(&after));
}
