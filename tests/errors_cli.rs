//! How errors are printed: `emoknow: <what>: <cause>` says what is wrong in the library's
//! terms, and a second line `hint: …` names the flag that fixes it. The flag is in the hint,
//! not in the error.

use crate::util::{s, Run, TestEnv};

const CORPUS: &str = "ID,Text,Labels
1,我 很 担忧 孩子 的 未来,\"['Anxiety', 'Love']\"
2,现在 好 终于 如愿以偿,['Joy']
3,他 对 未来 充满 期待,['Expect']
4,这种 行为 令人 厌恶,\"['Hate', 'Anger']\"
5,听到 消息 后 她 非常 难过,['Sorrow']
6,真 没想到 会 这样,['Surprise']
7,我 爱 我 的 家人,['Love']
8,他 气 得 说不出话,['Anger']
";

/// The error (everything before the hint) and the hint of a failed run, asserting the shape:
/// exit code 2, stderr starts with `emoknow: `, the last line is `hint: …`.
#[track_caller]
fn error_and_hint(r: Run) -> (String, String) {
    let r = r.code(2);
    let stderr = r.stderr.trim_end();
    assert!(stderr.starts_with("emoknow: "), "{stderr}");
    let (error, hint) = stderr
        .rsplit_once("\nhint: ")
        .unwrap_or_else(|| panic!("no hint line after the error:\n{stderr}"));
    assert!(!hint.contains('\n'), "the hint is one line:\n{stderr}");
    (error.to_string(), hint.to_string())
}

fn ingested(env: &TestEnv) {
    let f = env.write("a/corpus.csv", CORPUS);
    env.run(&[
        "ingest",
        s(&f),
        "--test-rows",
        "2",
        "--val-fraction",
        "0.25",
    ])
    .ok();
}

#[test]
fn an_id_conflict_hints_at_replace() {
    let env = TestEnv::new();
    ingested(&env);
    let other = env.write(
        "b/corpus.csv",
        "ID,Text,Labels\n1,完全 不同 的 句子,['Joy']\n",
    );
    let (error, hint) = error_and_hint(env.run(&["ingest", s(&other)]));
    assert!(error.contains("1 id conflict(s)"), "{error}");
    assert!(
        error.contains("ID 1 already holds a different sentence"),
        "{error}"
    );
    assert!(!error.contains("--"), "no flag in the error: {error}");
    assert!(hint.contains("--replace"), "{hint}");
}

#[test]
fn bad_lines_hint_at_skip_bad() {
    let env = TestEnv::new();
    let f = env.write("bad.csv", "ID,Text,Labels\n1,好,['Joy']\n2,,['Joy']\n");
    let (error, hint) = error_and_hint(env.run(&["ingest", s(&f)]));
    assert!(error.contains("nothing was written"), "{error}");
    assert!(error.contains("line 3"), "{error}");
    assert!(!error.contains("--"), "no flag in the error: {error}");
    assert!(hint.contains("--skip-bad"), "{hint}");
}

#[test]
fn a_store_in_use_or_missing_hints_at_store() {
    let env = TestEnv::new();
    let (error, hint) = error_and_hint(env.run(&["stats"]));
    assert!(error.contains("no store at"), "{error}");
    assert!(!error.contains("--store"), "{error}");
    assert!(hint.contains("--store"), "{hint}");

    ingested(&env);
    let held = emoknow::store::Store::open(&env.store()).unwrap();
    let (error, hint) = error_and_hint(env.run(&["stats"]));
    assert!(error.contains("is in use by another process"), "{error}");
    assert!(!error.contains("--store"), "{error}");
    assert!(hint.contains("--store"), "{hint}");
    drop(held);
}

#[test]
fn an_ensemble_of_one_member_hints_at_member() {
    let env = TestEnv::new();
    ingested(&env);
    let a = env.path("models/a");
    env.run(&["train", "--classifier", "linear", "--out", s(&a)])
        .ok();
    let (error, hint) = error_and_hint(env.run(&[
        "train",
        "--classifier",
        "ensemble",
        "--member",
        s(&a),
        "--out",
        s(&env.path("models/e")),
    ]));
    assert!(
        error.contains("an ensemble needs at least two members (1 given)"),
        "{error}"
    );
    assert!(!error.contains("--member"), "{error}");
    assert!(hint.contains("--member"), "{hint}");

    // An output directory that would overwrite a member: the library speaks of the model
    // output and the member, the hint of --out and --member.
    let (error, hint) = error_and_hint(env.run(&[
        "train",
        "--classifier",
        "ensemble",
        "--member",
        s(&a),
        "--member",
        s(&a.join("../b")),
        "--out",
        s(&a),
    ]));
    assert!(error.contains("would overwrite the member"), "{error}");
    assert!(!error.contains("--"), "{error}");
    assert!(hint.contains("--out is --member"), "{hint}");
}

#[test]
fn an_unknown_knowledge_source_hints_at_its_flag() {
    let env = TestEnv::new();
    ingested(&env);
    let (error, hint) = error_and_hint(env.run(&[
        "train",
        "--classifier",
        "linear",
        "--knowledge",
        "rationale",
        "--source",
        "nobody",
        "--out",
        s(&env.path("m")),
    ]));
    assert!(
        error.contains("no knowledge from source \"nobody\" (rationale); the store has: none"),
        "{error}"
    );
    assert!(hint.contains("--source"), "{hint}");
}

#[test]
fn more_neighbours_than_stored_hints_at_neighbours_k() {
    let env = TestEnv::new();
    ingested(&env);
    env.run(&["knowledge", "retrieve", "--by", "bm25", "-k", "2"])
        .ok();
    let train = |k: &str| {
        env.run(&[
            "train",
            "--classifier",
            "linear",
            "--knowledge",
            "neighbours",
            "--neighbours-source",
            "knn-bm25",
            "--neighbours-k",
            k,
            "--out",
            s(&env.path("m")),
        ])
    };
    let (error, hint) = error_and_hint(train("3"));
    assert!(
        error.contains("3 neighbours asked for, but the store holds 2 per example"),
        "{error}"
    );
    assert!(hint.contains("--neighbours-k"), "{hint}");
    assert!(!env.path("m").exists());
    train("2").ok();
}

#[test]
fn an_error_without_a_flag_to_fix_it_has_no_hint() {
    let env = TestEnv::new();
    ingested(&env);
    let r = env.run(&["show", "99"]).code(2);
    assert!(r.stderr.starts_with("emoknow: "), "{}", r.stderr);
    assert!(!r.stderr.contains("hint:"), "{}", r.stderr);
    // An I/O error names the file and its cause once.
    let r = env.run(&["ingest", "missing.csv"]).code(2);
    assert_eq!(
        r.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        r.stderr
    );
}

/// An option the chosen classifier would not read is refused before anything is opened or
/// written, naming the classifiers that read it: a silently ignored `--pos-weight auto` would
/// leave a model that is not what was asked for.
#[test]
fn an_option_the_classifier_ignores_is_refused() {
    let env = TestEnv::new();
    let out = env.path("models/m");
    let cases: [(&[&str], &str, &str); 10] = [
        (
            &[
                "--classifier",
                "ensemble",
                "--member",
                "a",
                "--pos-weight",
                "auto",
            ],
            "--pos-weight is not read by --classifier ensemble",
            "it is for linear, frozen, finetune",
        ),
        (
            &["--classifier", "linear", "--max-len", "96"],
            "--max-len is not read by --classifier linear",
            "it is for finetune",
        ),
        (
            &["--classifier", "frozen", "--c", "2"],
            "--c is not read by --classifier frozen",
            "it is for linear (and by frozen with --stack-linear)",
        ),
        (
            &[
                "--classifier",
                "finetune",
                "--encoder-dir",
                "enc",
                "-k",
                "5",
            ],
            "-k is not read by --classifier finetune",
            "it is for knn",
        ),
        (
            &["--classifier", "knn", "--member", "a"],
            "--member is not read by --classifier knn",
            "it is for ensemble",
        ),
        (
            &["--classifier", "knn", "--knowledge", "neighbours"],
            "--knowledge is not read by --classifier knn",
            "it is for linear, frozen, finetune",
        ),
        (
            &[
                "--classifier",
                "frozen",
                "--stack-linear",
                "3",
                "--context-weight",
                "1",
            ],
            "--context-weight is not read by --classifier frozen",
            "it is for linear;",
        ),
        // Options of one kind of knowledge, without it.
        (
            &["--classifier", "linear", "--source", "qwen-max"],
            "--source is only read with --knowledge rationale or all, or --only-with-knowledge",
            "drop it or add that",
        ),
        (
            &["--classifier", "linear", "--seed", "7"],
            "--seed is only read with --classifier frozen or finetune, or --max-train",
            "drop it or add that",
        ),
        (
            &["--classifier", "frozen", "--context-pool", "mean"],
            "--context-pool or --context-decay is only read with a context",
            "--knowledge context, or --context W",
        ),
    ];
    for (args, error, readers) in cases {
        let mut all = vec!["train", "--out", s(&out)];
        all.extend_from_slice(args);
        let r = env.run(&all).code(2);
        assert!(r.stderr.starts_with("emoknow: "), "{}", r.stderr);
        assert!(r.stderr.contains(error), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(readers), "{args:?}: {}", r.stderr);
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
        assert!(!env.path("store").exists(), "{args:?} created the store");
    }
}

/// Options that another option overrides, or that a format does not read, are refused rather
/// than dropped: the run would otherwise do something else than the command line says.
#[test]
fn options_that_would_be_dropped_are_refused() {
    let env = TestEnv::new();
    let csv = env.write("c.csv", CORPUS);
    let jsonl = env.write(
        "c.jsonl",
        "{\"text\": \"我 爱 我 的 家人\", \"labels\": [\"Love\"]}\n",
    );
    for args in [
        // --split puts every row in one split: the split-drawing options would be ignored.
        &[
            "ingest",
            s(&csv),
            "--split",
            "test",
            "--val-fraction",
            "0.2",
        ][..],
        &["ingest", s(&csv), "--split", "train", "--test-rows", "2"],
        // eval --file evaluates the file, not a split; --ids picks stored examples.
        &["eval", "--model", "m", "--file", s(&csv), "--split", "val"],
        &["eval", "--source", "qwen-max", "--ids", "1-4"],
        // Arguments are one sentence; --document is for lines.
        &["predict", "--model", "m", "--document", "我 很 难过"],
        // Blind answers are never retried with the guided prompt.
        &["annotate", "--blind-only", "--max-guided", "3"],
    ] {
        env.run(args).code(2).stderr_has("cannot be used with");
    }
    env.run(&["annotate", "--jobs", "0"])
        .code(2)
        .stderr_has("--jobs");
    ingested(&env);
    env.run(&["embed", "--encoder", "enc", "--source", "qwen-max"])
        .code(2)
        .stderr_has("add --what knowledge");
    // BM25 reads words: an encoder or a dense search mode would be ignored.
    env.run(&["similar", "--id", "3", "--by", "bm25", "--encoder", "m3e"])
        .code(2)
        .stderr_has("named for BM25 retrieval");
    env.run(&["knowledge", "retrieve", "--by", "bm25", "--exact"])
        .code(2)
        .stderr_has("is for dense retrieval");
    // The store holds no vectors, so retrieval is BM25 without being asked.
    env.run(&["similar", "--id", "3", "--ann"])
        .code(2)
        .stderr_has("is for dense retrieval");
    // Without vectors a kNN votes by BM25, which reads no encoder.
    env.run(&[
        "train",
        "--classifier",
        "knn",
        "--encoder-dir",
        "enc",
        "--out",
        s(&env.path("m")),
    ])
    .code(2)
    .stderr_has("not read by a BM25 kNN");
    // A query text has no id to exclude the neighbourhood of.
    env.run(&["similar", "他 对 未来 充满 期待", "--exclude-within", "2"])
        .code(2)
        .stderr_has("query by --id");
    env.run(&[
        "similar",
        "--id",
        "3",
        "--by",
        "bm25",
        "--exclude-within",
        "2",
    ])
    .ok();
    // JSON Lines carry their document in `doc`: a CSV column name is refused, naming the file.
    let r = env
        .run(&["ingest", s(&jsonl), "--doc-column", "doc", "--replace"])
        .code(2);
    assert!(r.stderr.contains("c.jsonl"), "{}", r.stderr);
    assert!(r.stderr.contains("is for CSV files"), "{}", r.stderr);
}

/// A reader that closes the pipe before reading (`emoknow completions bash | head -0`) is not
/// an error: the generated scripts, pages and reference end quietly with success.
#[test]
fn generated_references_end_quietly_when_the_reader_is_gone() {
    use std::os::fd::FromRawFd;
    let env = TestEnv::new();
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
        &["help-markdown"],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills both descriptors; each is owned by exactly one value below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        drop(unsafe { std::fs::File::from_raw_fd(fds[0]) }); // the reader is gone
        let write_end = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let out = env
            .cmd(args)
            .stdout(write_end)
            .output()
            .expect("run emoknow");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
