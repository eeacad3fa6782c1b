//! Models that travel (issue 28, part 1): a model directory holds what it reads for new text,
//! and `predict`, `eval --file` and `serve` run it with no store, giving what they give with
//! the store it was trained in.

use crate::model_cli::{setup, Setup};
use crate::serve_cli::Server;
use crate::util::{copy_dir, s, TestEnv};
use serde_json::Value;

const TEXTS: &str = "我很担心明天的考试。\n孩子们笑得很开心！\n这种行为令人厌恶\n";

/// `predict --json` of [`TEXTS`] as one document (so context models read context), and
/// `eval --json --file` of a small labelled file, with `env`'s store or with none (run in an
/// empty directory, `--store` naming nothing).
fn outputs(env: &TestEnv, model: &std::path::Path, with_store: bool) -> (Value, Value) {
    let file = env.write(
        "new.jsonl",
        "{\"text\": \"担心 考试 明天\", \"labels\": [\"Anxiety\"], \"doc\": \"a\"}\n\
         {\"text\": \"孩子开心地笑\", \"labels\": [\"Joy\", \"Love\"], \"doc\": \"a\"}\n\
         {\"text\": \"期待春天的旅行！\", \"labels\": [\"Expect\"], \"doc\": \"b\"}\n",
    );
    let store = if with_store {
        env.store()
    } else {
        env.path("nowhere")
    };
    let run = |args: &[&str], input: Option<&str>| -> Value {
        let mut c = std::process::Command::new(crate::util::bin());
        c.arg("--store").arg(&store).args(args);
        c.current_dir(env.dir.path()).env_remove("EMOKNOW_STORE");
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} (store: {with_store}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let predict = run(
        &[
            "--json",
            "predict",
            "--model",
            s(model),
            "--document",
            "--explain",
        ],
        Some(TEXTS),
    );
    let eval = run(
        &["--json", "eval", "--model", s(model), "--file", s(&file)],
        None,
    );
    (predict, eval)
}

fn train(env: &TestEnv, name: &str, args: &[&str]) -> std::path::PathBuf {
    let out = env.path(&format!("models/{name}"));
    let mut a = vec!["train"];
    a.extend(args);
    a.extend(["--out", s(&out)]);
    env.run(&a).ok();
    out
}

#[test]
fn every_kind_predicts_without_its_store_as_with_it() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["knowledge", "retrieve", "-k", "5"]).ok();
    let nb = [
        "--knowledge",
        "neighbours",
        "--neighbours-source",
        "knn-tiny",
    ];
    let mut linear_nb = vec!["--classifier", "linear"];
    linear_nb.extend(nb);
    let mut frozen = vec!["--classifier", "frozen", "--hidden", "16", "--epochs", "10"];
    frozen.extend(nb);
    frozen.extend(["--context", "2"]);
    let models = [
        train(&env, "linear", &["--classifier", "linear"]),
        train(&env, "linear_nb", &linear_nb),
        train(
            &env,
            "linear_ctx",
            &["--classifier", "linear", "--knowledge", "context"],
        ),
        train(&env, "frozen_nb_ctx", &frozen),
        train(&env, "knn", &["--classifier", "knn", "-k", "5"]),
        train(
            &env,
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
        ),
    ];
    let mut members = vec!["--classifier", "ensemble"];
    for m in &models {
        members.extend(["--member", s(m)]);
    }
    let ens = train(&env, "ensemble", &members);
    assert!(env.path("models/linear_nb/pool/vectors.bin").is_file());
    assert!(env.path("models/knn/pool/vectors.bin").is_file());
    assert!(!env.path("models/linear/pool").exists());
    for m in models.iter().chain([&ens]) {
        let with = outputs(&env, m, true);
        let without = outputs(&env, m, false);
        assert_eq!(with, without, "{}", m.display());
    }
    // Explain shows the packed pool's neighbours with their text, no store needed.
    let away = TestEnv::new();
    let explained = away
        .run(&["predict", "--model", s(&models[1]), "--explain", "担心考试"])
        .ok();
    let line = explained
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("neighbour #"))
        .unwrap_or_else(|| panic!("{}", explained.stdout));
    assert!(
        line.split(" — ").nth(1).is_some_and(|t| !t.is_empty()),
        "{line}"
    );
    // A packed file changed: refused, as any model file.
    let vectors = env.path("models/linear_nb/pool/vectors.bin");
    let mut bytes = std::fs::read(&vectors).unwrap();
    bytes[17] ^= 0x40;
    std::fs::write(&vectors, bytes).unwrap();
    away.run(&["predict", "--model", s(&models[1]), "担心"])
        .code(2)
        .stderr_has("pool/vectors.bin");
}

#[test]
fn a_model_trained_unpacked_is_packed_later_and_predicts_the_same() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["knowledge", "retrieve", "-k", "5"]).ok();
    let linear_nb = train(
        &env,
        "linear_nb",
        &[
            "--classifier",
            "linear",
            "--knowledge",
            "neighbours",
            "--neighbours-source",
            "knn-tiny",
            "--no-pack",
        ],
    );
    let linear = train(&env, "linear", &["--classifier", "linear"]);
    let ens = train(
        &env,
        "ens",
        &[
            "--classifier",
            "ensemble",
            "--member",
            s(&linear_nb),
            "--member",
            s(&linear),
        ],
    );
    assert!(!linear_nb.join("pool").exists());
    let before = outputs(&env, &ens, true);
    // Without its store it cannot retrieve, and says how to fix that.
    let away = TestEnv::new();
    let r = away.run(&["predict", "--model", s(&ens), "担心"]);
    let r = r.code(2);
    assert!(
        r.stderr.contains("emoknow model pack") && r.stderr.contains("linear_nb"),
        "{}",
        r.stderr
    );
    env.run(&["model", "pack", s(&ens)])
        .ok()
        .stderr_has("ensemble pinned to its packed members");
    assert!(linear_nb.join("pool/vectors.bin").is_file());
    assert_eq!(outputs(&env, &ens, false), before);
    assert_eq!(outputs(&env, &ens, true), before);
    // Packing again changes nothing.
    env.run(&["model", "pack", s(&linear_nb)])
        .ok()
        .stderr_has("packed already");
    // BM25 retrieval reads the store's index: it cannot be packed, and says so.
    env.run(&["knowledge", "retrieve", "-k", "5", "--by", "bm25"])
        .ok();
    let bm25 = train(
        &env,
        "linear_bm25",
        &[
            "--classifier",
            "linear",
            "--knowledge",
            "neighbours",
            "--neighbours-source",
            "knn-bm25",
        ],
    );
    assert!(!bm25.join("pool").exists());
    env.run(&["model", "pack", s(&bm25)])
        .code(2)
        .stderr_has("BM25");
    away.run(&["predict", "--model", s(&bm25), "担心"])
        .code(2)
        .stderr_has("BM25 reads the store's search index");
    // With the store it predicts as ever.
    env.run(&["predict", "--model", s(&bm25), "担心"]).ok();
}

#[test]
fn serve_runs_packed_models_without_a_store_twice_over() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["knowledge", "retrieve", "-k", "5"]).ok();
    let model = train(
        &env,
        "linear_nb",
        &[
            "--classifier",
            "linear",
            "--knowledge",
            "neighbours",
            "--neighbours-source",
            "knn-tiny",
        ],
    );
    let with_store = env
        .run(&[
            "--json",
            "predict",
            "--model",
            s(&model),
            "我很担心明天的考试。",
        ])
        .ok()
        .json();
    // An empty directory with the model alone: no store anywhere.
    let away = TestEnv::new();
    copy_dir(&model, &away.path("m"));
    let a = Server::start(&away, "127.0.0.1:0", &["--model", s(&away.path("m"))]);
    let b = Server::start(&away, "127.0.0.1:0", &["--model", s(&away.path("m"))]);
    for server in [&a, &b] {
        let (status, _, body) = server.post(
            "/api/predict",
            r#"{"texts": ["我很担心明天的考试。"]}"#.to_string(),
        );
        assert_eq!(status, 200, "{body}");
        let got: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got, with_store);
        let (status, _, page) = server.get("/classify?text=%E6%8B%85%E5%BF%83");
        assert_eq!(status, 200);
        assert!(page.contains(r#"id="read""#), "{page}");
        let (status, _, page) = server.get("/");
        assert!(page.contains("this server has no store"), "{status} {page}");
        let (status, _, body) = server.get("/api/stats");
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("no store"), "{body}");
    }
}
