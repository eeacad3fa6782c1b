//! Careful-user findings, third round (issue 29): numbers that size a window, a k or a limit
//! are bounded (never a panic, never work that means nothing).

use crate::util::{generated_corpus, s, Rng, TestEnv};

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

fn write_parquet(env: &TestEnv, name: &str, columns: Vec<(&str, arrow_array::ArrayRef)>) -> String {
    let batch = arrow_array::RecordBatch::try_from_iter(columns).unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    s(&env.write(name, buf)).to_string()
}

/// Parquet files as pandas' `to_parquet()` writes them (large_string text, large_list labels,
/// int64 ids, a categorical doc) and as pyarrow does with narrower types (int32 or uint32 ids,
/// string text, list labels) ingest like the export's own; they were refused ("column `text`
/// is LargeUtf8, not Utf8"). A null id is refused with its row, not stored positionally.
#[test]
fn parquet_from_pandas_and_pyarrow_is_read_and_a_null_id_is_refused() {
    use arrow_array::builder::{LargeListBuilder, LargeStringBuilder, ListBuilder, StringBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, DictionaryArray, Int32Array, Int64Array, LargeStringArray, StringArray,
        UInt32Array,
    };
    use std::sync::Arc;
    let texts = ["我 很 担心 明天 考试", "孩子 们 笑 得 很 开心", "期待 春天"];
    let labels = [vec!["Anxiety"], vec!["Joy", "Love"], vec!["Expect"]];
    let mut large = LargeListBuilder::new(LargeStringBuilder::new());
    let mut list = ListBuilder::new(StringBuilder::new());
    for set in &labels {
        for l in set {
            large.values().append_value(l);
            list.values().append_value(l);
        }
        large.append(true);
        list.append(true);
    }
    let (large, list): (ArrayRef, ArrayRef) = (Arc::new(large.finish()), Arc::new(list.finish()));
    let doc: DictionaryArray<Int32Type> = ["a", "a", "b"].into_iter().collect();
    let files = [
        (
            "pandas",
            vec![
                (
                    "id",
                    Arc::new(Int64Array::from(vec![11, 12, 13])) as ArrayRef,
                ),
                ("text", Arc::new(LargeStringArray::from(texts.to_vec()))),
                ("labels", large),
                ("doc", Arc::new(doc)),
            ],
        ),
        (
            "pyarrow-int32",
            vec![
                (
                    "id",
                    Arc::new(Int32Array::from(vec![21, 22, 23])) as ArrayRef,
                ),
                ("text", Arc::new(StringArray::from(texts.to_vec()))),
                ("labels", list.clone()),
            ],
        ),
        (
            "pyarrow-uint32",
            vec![
                (
                    "id",
                    Arc::new(UInt32Array::from(vec![31, 32, 33])) as ArrayRef,
                ),
                ("text", Arc::new(StringArray::from(texts.to_vec()))),
                ("labels", list.clone()),
            ],
        ),
    ];
    let env = TestEnv::new();
    for (name, columns) in files {
        let f = write_parquet(&env, &format!("{name}.parquet"), columns);
        env.run(&["ingest", &f, "--test-rows", "1"]).ok();
    }
    for (first, with_doc) in [(11, true), (21, false), (31, false)] {
        for (i, text) in texts.iter().enumerate() {
            let id = (first + i).to_string();
            let shown = env.run(&["--json", "show", &id]).ok().json();
            assert_eq!(shown["text"], *text, "{shown}");
            let got: Vec<&str> = (shown["labels"].as_array().unwrap().iter())
                .map(|l| l.as_str().unwrap())
                .collect();
            let mut want = labels[i].clone();
            want.sort_by_key(|l| got.iter().position(|g| g == l));
            assert_eq!(got, want, "{shown}");
            assert_eq!(shown["context"]["doc"].is_null(), !with_doc, "{shown}");
        }
    }
    let before = env.stats();
    let nulls = write_parquet(
        &env,
        "null-id.parquet",
        vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![Some(100), None])) as ArrayRef,
            ),
            ("text", Arc::new(StringArray::from(vec!["一 句", "二 句"]))),
            ("labels", Arc::new(StringArray::from(vec!["Joy", "Joy"]))),
        ],
    );
    env.run(&["ingest", &nulls])
        .code(2)
        .stderr_has("id is null");
    assert_eq!(env.stats(), before, "a refused file changed the store");
}

/// A position given twice in one document, or on some of its rows only, is refused with the
/// line (JSON Lines and Parquet alike), as is a NUL in a document name; `predict` refuses
/// the same in its JSON Lines input. They were accepted (`show` printed "position 1" twice).
#[test]
fn conflicting_positions_and_damaged_document_names_are_refused_with_the_line() {
    let env = TestEnv::new();
    let row = |text: &str, doc: &str, pos: Option<u32>| {
        let p = pos.map_or(String::new(), |p| format!(", \"position\": {p}"));
        format!("{{\"text\": \"{text}\", \"labels\": [\"Joy\"], \"doc\": \"{doc}\"{p}}}\n")
    };
    let twice = [
        row("一 句", "d", Some(0)),
        row("二 句", "d", Some(1)),
        row("三 句", "d", Some(1)),
    ]
    .concat();
    let mixed = [row("一 句", "d", Some(1)), row("二 句", "d", None)].concat();
    let nul = row("一 句", "d\\u0000x", None);
    for (name, body, needle) in [
        ("twice.jsonl", twice.as_str(), "position 1 twice"),
        ("mixed.jsonl", mixed.as_str(), "a position on some rows"),
        ("nul.jsonl", nul.as_str(), "control character"),
    ] {
        let f = env.write(name, body);
        env.run(&["ingest", s(&f)])
            .code(2)
            .stderr_has(needle)
            .stderr_has("line");
    }
    assert!(!env.store().join("db").exists() || env.stats()["examples"] == 0);
    // predict's JSON Lines input: three sentences at position 0 of one document.
    let env = store_with_corpus();
    env.run(&["train", "--out", "m"]).ok();
    let input: String = (0..3)
        .map(|i| format!("{{\"text\": \"第{i}句\", \"doc\": \"d\", \"position\": 0}}\n"))
        .collect();
    env.run_with_stdin(&["predict", "--model", "m"], &input)
        .code(2)
        .stderr_has("position 0 twice")
        .stderr_has("line 2");
}

/// Sends `head` (and nothing more) on a new connection to `server` and reads what comes back
/// until the server closes it or `wait` passes: (the bytes read, whether it closed).
fn raw_http(
    server: &crate::serve_cli::Server,
    head: &str,
    wait: std::time::Duration,
) -> (String, bool) {
    use std::io::{Read, Write};
    let addr = server.base.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// `serve` drops a connection whose request header does not complete within its header
/// timeout (it was held open 200 s and more), answers a declared body over the limit with 413
/// before reading it (it said "100 Continue" to a 10 GB Content-Length), and refuses a
/// `text/plain` body to /api/predict with 415.
#[test]
fn serve_bounds_slow_headers_and_large_or_non_json_bodies() {
    let (env, model) = crate::serve_cli::setup();
    let server = crate::serve_cli::Server::start(&env, "127.0.0.1:0", &["--model", s(&model)]);
    let t = std::time::Instant::now();
    let (_, closed) = raw_http(
        &server,
        "GET /api/stats HTTP/1.1\r\nHost: x\r\n",
        std::time::Duration::from_secs(40),
    );
    assert!(
        closed,
        "a partial header was held open for {:?}",
        t.elapsed()
    );
    let (got, _) = raw_http(
        &server,
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n",
        std::time::Duration::from_secs(20),
    );
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(!got.contains("100 Continue"), "{got}");
    let (got, _) = raw_http(
        &server,
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
         Content-Length: 24\r\nConnection: close\r\n\r\n{\"texts\": [\"担心 考试\"]}",
        std::time::Duration::from_secs(20),
    );
    assert!(got.starts_with("HTTP/1.1 415"), "{got}");
    // A body refused unread closes its connection: a client that goes on (reusing its pooled
    // connection) is never answered by a connection the server has dropped.
    let big = "x".repeat((1 << 20) + (64 << 10));
    for _ in 0..20 {
        let (status, _, _) = server.post("/api/predict", big.clone());
        assert_eq!(status, 413);
        let (status, _, body) = server.get("/api/stats");
        assert_eq!(status, 200, "{body}");
    }
    // JSON still works, with or without a Content-Type.
    let (status, _, body) = server.post("/api/predict", r#"{"texts": ["担心 考试 明天"]}"#);
    assert_eq!(status, 200, "{body}");
    let body = "{\"texts\": [\"担心 考试\"]}";
    let (got, _) = raw_http(
        &server,
        &format!(
            "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        std::time::Duration::from_secs(20),
    );
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

/// Drops the `files` checksums from a model's `meta.json`, as a release before checksums
/// wrote it.
fn strip_checksums(dir: &std::path::Path) {
    let path = dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let obj = meta.as_object_mut().unwrap();
    assert!(obj.remove("files").is_some());
    // An ensemble of then did not pin its members either.
    obj.remove("member_meta_sha256");
    for v in obj.values_mut() {
        if let Some(o) = v.as_object_mut() {
            o.remove("member_meta_sha256");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}

/// A model written before checksums loads with one warning naming the command that adds
/// them (it loaded silently, unverified); `model verify` says which directories are
/// unverified (exit 1) and `--rewrite` records their checksums (an ensemble's members, then
/// the ensemble re-pinned), after which predictions are unchanged and a changed file is refused.
#[test]
fn models_written_before_checksums_warn_and_verify_rewrite_records_them() {
    let env = store_with_corpus();
    let (m1, m2, ens) = (env.path("m1"), env.path("m2"), env.path("ens"));
    env.run(&["train", "--out", s(&m1)]).ok();
    env.run(&["train", "--out", s(&m2), "--c", "0.5"]).ok();
    env.run(&[
        "train",
        "--classifier",
        "ensemble",
        "--member",
        s(&m1),
        "--member",
        s(&m2),
        "--out",
        s(&ens),
    ])
    .ok();
    let predict =
        |m: &std::path::Path| env.run(&["--json", "predict", "--model", s(m), "开心 的 一天"]);
    let before = predict(&ens).ok().json();
    env.run(&["model", "verify", s(&ens)])
        .ok()
        .stdout_has("verified");
    strip_checksums(&m1);
    strip_checksums(&ens);
    let r = predict(&ens).ok();
    assert_eq!(r.json(), before);
    assert_eq!(
        r.stderr.matches("written before checksums").count(),
        2,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("emoknow model verify --rewrite"),
        "{}",
        r.stderr
    );
    env.run(&["model", "verify", s(&ens)])
        .code(1)
        .stdout_has("not verified")
        .stdout_has("m1");
    env.run(&["model", "verify", "--rewrite", s(&ens)]).ok();
    let r = predict(&ens).ok();
    assert_eq!(r.json(), before);
    assert!(!r.stderr.contains("before checksums"), "{}", r.stderr);
    env.run(&["model", "verify", s(&ens)])
        .ok()
        .stdout_has("verified");
    // Now a changed file of m1 is refused.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m1.join("meta.json")).unwrap()).unwrap();
    let file = meta["files"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(m1.join(&file)).unwrap();
    bytes[0] ^= 1;
    std::fs::write(m1.join(&file), bytes).unwrap();
    predict(&ens).code(2);
}

/// Runs `cmd`, sends it one SIGINT after `delay`, and waits (at most 20 s): its exit code
/// (`None`: killed by the signal before its handler was installed) and how long it took to stop
/// after the signal.
fn interrupted_after(
    mut cmd: std::process::Command,
    delay: std::time::Duration,
) -> (Option<i32>, std::time::Duration) {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let sent = std::time::Instant::now();
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), sent.elapsed());
        }
        if sent.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("still running 20 s after one Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    (std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.contains(".old-"))
        .collect()
}

/// One Ctrl-C stops `train` (it trained on and replaced the model, exit 0), `ingest`,
/// `reindex`, `export` and `predict` reading stdin: exit 130 within a second, the old model,
/// store and export kept, no temporary file left. Each command is signalled at several moments
/// until one lands mid-run (bounded); moments that land before the handler is installed or after
/// the command finished are skipped.
#[test]
fn one_ctrl_c_stops_a_command_and_keeps_the_old_state() {
    use std::time::Duration;
    let env = TestEnv::new();
    let corpus = crate::util::repo().join("data/Train.csv");
    env.run(&["ingest", s(&corpus), "--test-rows", "1000"]).ok();
    let model = env.path("m");
    env.run(&["train", "--out", s(&model)]).ok();
    let meta = std::fs::read(model.join("meta.json")).unwrap();
    let stats = env.stats();
    env.run(&["export", "parquet", "--out", "ex"]).ok();
    let export = std::fs::read(env.path("ex/examples.parquet")).unwrap();
    let moments = [5, 20, 50, 100, 200, 400, 800, 1500].map(Duration::from_millis);
    let check_state = |what: &str| {
        assert_eq!(
            std::fs::read(model.join("meta.json")).unwrap(),
            meta,
            "{what}"
        );
        assert_eq!(leftovers(env.dir.path()), Vec::<String>::new(), "{what}");
        assert_eq!(leftovers(&env.path("ex")), Vec::<String>::new(), "{what}");
        assert_eq!(
            std::fs::read(env.path("ex/examples.parquet")).unwrap(),
            export,
            "{what}"
        );
    };
    let commands: Vec<(&str, Vec<String>)> = vec![
        (
            "train",
            vec![
                "train".into(),
                "--out".into(),
                s(&model).into(),
                "--c".into(),
                "0.5".into(),
            ],
        ),
        (
            "ingest",
            vec![
                "ingest".into(),
                s(&corpus).into(),
                "--test-rows".into(),
                "1000".into(),
            ],
        ),
        ("reindex", vec!["reindex".into()]),
        (
            "export",
            vec![
                "export".into(),
                "parquet".into(),
                "--out".into(),
                "ex".into(),
                "--replace".into(),
            ],
        ),
        (
            "predict",
            vec!["predict".into(), "--model".into(), s(&model).into()],
        ),
    ];
    for (name, args) in commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut landed = false;
        for &delay in &moments {
            let (code, took) = interrupted_after(env.cmd(&args), delay);
            check_state(&format!("{name} interrupted after {delay:?}"));
            env.run(&["check"]).ok();
            match code {
                Some(130) => {
                    assert!(
                        took < Duration::from_secs(2),
                        "{name} took {took:?} to stop"
                    );
                    landed = true;
                    break;
                }
                // Finished before the signal (ingest of an unchanged corpus, a fast export),
                // or signalled before its handler was installed.
                Some(0) | None => {}
                other => panic!("{name} interrupted after {delay:?} exited {other:?}"),
            }
        }
        assert!(landed, "no moment landed while {name} ran");
    }
    assert_eq!(env.stats(), stats);
}

/// `knowledge import` is one atomic batch, so one Ctrl-C stops it at once (exit 130) with none
/// of its records stored, and an import that finished first stored all of them; `similar` only
/// reads, and stops at once too. Each attempt imports under a source name of its own.
#[test]
fn one_ctrl_c_stops_an_import_whole_and_a_query_at_once() {
    use std::time::Duration;
    let env = TestEnv::new();
    let repo = crate::util::repo();
    let corpus = repo.join("data/Train.csv");
    let rationales = repo.join("data/generated_predictions.jsonl");
    env.run(&["ingest", s(&corpus), "--test-rows", "1000"]).ok();
    let records = |source: &str| -> Option<u64> {
        let stats = env.stats();
        stats["sources"][source]["records"].as_u64()
    };
    env.run(&[
        "knowledge",
        "import",
        s(&rationales),
        "--source",
        "whole",
        "--first-id",
        "1",
    ])
    .ok();
    let whole = records("whole").unwrap();
    assert!(whole > 1000, "{whole}");

    let moments = [5, 20, 50, 100, 150, 200, 300, 400, 800].map(Duration::from_millis);
    let mut landed = false;
    for (i, &delay) in moments.iter().enumerate() {
        let source = format!("attempt{i}");
        let args = [
            "knowledge",
            "import",
            s(&rationales),
            "--source",
            &source,
            "--first-id",
            "1",
        ];
        let (code, took) = interrupted_after(env.cmd(&args), delay);
        let stored = records(&source);
        match code {
            Some(130) => {
                assert!(
                    took < Duration::from_secs(2),
                    "import took {took:?} to stop"
                );
                assert_eq!(
                    stored, None,
                    "interrupted after {delay:?}, records were stored"
                );
                landed = true;
            }
            Some(0) => assert_eq!(stored, Some(whole), "finished after {delay:?}"),
            None => assert_eq!(stored, None, "killed after {delay:?}"),
            other => panic!("import interrupted after {delay:?} exited {other:?}"),
        }
        env.run(&["check"]).ok();
        if landed {
            break;
        }
    }
    assert!(landed, "no moment landed while the import ran");

    // `similar` reads only: stopped or finished, the store is as it was.
    let stats = env.stats();
    for &delay in &moments {
        let (code, took) = interrupted_after(
            env.cmd(&["similar", "很 担心 明天 的 考试", "-k", "5"]),
            delay,
        );
        match code {
            Some(130) => assert!(took < Duration::from_secs(2), "similar took {took:?}"),
            Some(0) | None => {}
            other => panic!("similar interrupted after {delay:?} exited {other:?}"),
        }
        assert_eq!(env.stats(), stats, "similar interrupted after {delay:?}");
    }
}

/// An export carries a CRC-32 of every column chunk in its footer, checked when it is read:
/// one flipped bit anywhere in its data is refused naming the chunk (it changed a sentence and
/// ingested with exit 0). An untouched export still round-trips.
#[test]
fn a_flipped_bit_in_an_export_is_refused_by_its_chunk_checksums() {
    let env = store_with_corpus();
    env.run(&["export", "parquet", "--out", "ex"]).ok();
    let file = env.path("ex/examples.parquet");
    let good = std::fs::read(&file).unwrap();
    let other = TestEnv::new();
    other.run(&["ingest", s(&file)]).ok();
    // The column chunks' bytes, where every page of the data lies.
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&bytes::Bytes::from(good.clone()))
        .unwrap();
    let chunks: Vec<(usize, usize)> = (meta.row_groups().iter())
        .flat_map(|rg| rg.columns().iter().map(|c| c.byte_range()))
        .map(|(start, len)| (start as usize, len as usize))
        .collect();
    let mut rng = Rng(0xB17_F11F);
    for _ in 0..16 {
        let mut bad = good.clone();
        let (start, len) = chunks[rng.below(chunks.len())];
        let at = start + rng.below(len);
        bad[at] ^= 1 << rng.below(8);
        std::fs::write(&file, &bad).unwrap();
        let fresh = TestEnv::new();
        let r = fresh.run(&["ingest", s(&file)]);
        assert_eq!(
            r.code, 2,
            "a flipped bit at byte {at} was ingested:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("does not match the checksum"),
            "{}",
            r.stderr
        );
    }
}

/// README: loading an ensemble follows members at most 8 deep and 64 directories in all.
/// Ensembles nested 8 deep predict; a 9th level is refused, naming the limit, by `train` (which
/// trained it before, unloadable) and, hand-written, by `predict`. An ensemble of 63 copies of
/// one linear model (64 directories with itself) predicts; 64 copies are refused.
#[test]
fn ensembles_nested_deeper_than_8_or_reading_more_than_64_directories_are_refused() {
    let env = store_with_corpus();
    let linear = env.path("l0");
    env.run(&["train", "--out", s(&linear)]).ok();
    for i in 1..=64 {
        crate::util::copy_dir(&linear, &env.path(&format!("l{i}")));
    }
    let predict = |m: &std::path::Path| env.run(&["predict", "--model", s(m), "好 开心"]);
    // Depth: e1 = (l0, l1), e_k = (e_{k-1}, l_k).
    let mut inner = linear.clone();
    for depth in 1..=9 {
        let out = env.path(&format!("e{depth}"));
        let member = env.path(&format!("l{depth}"));
        let r = env.run(&[
            "train",
            "--classifier",
            "ensemble",
            "--member",
            s(&inner),
            "--member",
            s(&member),
            "--out",
            s(&out),
        ]);
        if depth <= 8 {
            r.ok();
            predict(&out).ok();
        } else {
            r.code(2).stderr_has("ensembles nested more than 8 deep");
            assert!(!out.exists(), "nothing written");
            // The same written by hand: e8's directory, its members e8 and l9.
            crate::util::copy_dir(&inner, &out);
            let path = out.join("meta.json");
            let mut j: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            j["members"] = serde_json::json!([s(&inner), s(&member)]);
            j["member_meta_sha256"] = serde_json::json!([]);
            std::fs::write(&path, serde_json::to_vec(&j).unwrap()).unwrap();
            predict(&out)
                .code(2)
                .stderr_has("ensembles nested more than 8 deep");
        }
        inner = out;
    }
    // Count: the ensemble itself and its members.
    for (members, ok) in [(63, true), (64, false)] {
        let out = env.path(&format!("wide{members}"));
        let mut args = vec![
            "train".to_string(),
            "--classifier".into(),
            "ensemble".into(),
            "--out".into(),
            s(&out).into(),
        ];
        for i in 0..members {
            args.extend(["--member".into(), s(&env.path(&format!("l{i}"))).into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = env.run(&args);
        if ok {
            r.ok();
            predict(&out).ok();
        } else {
            r.code(2).stderr_has("more than 64 model directories");
            assert!(!out.exists(), "nothing written");
        }
    }
}

/// README: an import is one atomic batch. kill -9 of `knowledge import` of 26,000 rationales,
/// at moments counted from when its first bytes reached the store's files (until two land while
/// it still ran, bounded), leaves a store that passes `check` holding none or all of them; the
/// rerun imports them all.
#[test]
fn a_killed_knowledge_import_lands_whole_or_not_at_all() {
    use std::time::Duration;
    let base = TestEnv::new();
    let corpus = crate::util::repo().join("data/Train.csv");
    base.run(&["-q", "ingest", s(&corpus)]).ok();
    let lines: Vec<&str> = include_str!("../data/generated_predictions.jsonl")
        .lines()
        .collect();
    let preds: String = (0..26000)
        .map(|i| format!("{}\n", lines[i % lines.len()]))
        .collect();
    let file = base.write("p.jsonl", preds);
    let args = [
        "-q",
        "knowledge",
        "import",
        s(&file),
        "--source",
        "qwen",
        "--field",
        "label",
        "--first-id",
        "1",
    ];
    let stored = |env: &TestEnv| {
        let j = env.stats();
        let src = &j["sources"]["qwen"];
        src["records"].as_u64().unwrap_or(0) + src["missing"].as_u64().unwrap_or(0)
    };
    let before = crate::util::dir_bytes(&base.store());
    let mut outcomes = Vec::new();
    let mut landed = 0;
    for delay_ms in [0u64, 10, 30, 0, 60, 5, 100, 20] {
        if landed == 2 {
            break;
        }
        let env = TestEnv::new();
        crate::util::copy_dir(&base.store(), &env.store());
        let store = env.store();
        let mid = env.kill_when(
            &args,
            || crate::util::dir_bytes(&store) > before + (256 << 10),
            Duration::from_millis(delay_ms),
        );
        env.run(&["check"]).ok();
        let n = stored(&env);
        assert!(n == 0 || n == 26000, "{delay_ms} ms: partial import of {n}");
        landed += usize::from(mid);
        outcomes.push((delay_ms, mid, n));
        if mid && n == 0 {
            env.run(&args).ok();
            assert_eq!(stored(&env), 26000);
            env.run(&["check"]).ok();
        }
    }
    eprintln!("(delay ms, landed mid-write, stored): {outcomes:?}");
    assert_eq!(landed, 2, "no kill landed mid-write: {outcomes:?}");
}
