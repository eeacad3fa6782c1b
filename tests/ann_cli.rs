//! The ANN index behind dense retrieval (issue 13): `index build`, `similar --ann` against
//! `--exact`, filters through the index, stale and damaged indexes, `embed` keeping it up to
//! date, and a kill -9 during a build. A tiny random BERT makes the vectors.

use crate::model_cli::{setup, Setup};
use crate::util::{generated_corpus, s, TestEnv};
use emoknow::testkit::tiny::{write_random_checkpoint, TinyBertSpec};
use std::time::Duration;

fn ids(hits: &serde_json::Value) -> Vec<u64> {
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

fn train_ids(env: &TestEnv) -> Vec<u64> {
    ids(&env
        .run(&["--json", "query", "--split", "train", "-n", "1000"])
        .ok()
        .json())
}

fn ann_state(env: &TestEnv) -> serde_json::Value {
    env.stats()["ann"][0]["freshness"]["state"].clone()
}

/// The tiny store, every split embedded, with its ANN index built.
fn indexed() -> Setup {
    let st = setup();
    st.env
        .run(&["embed", "--encoder", s(&st.encoder), "--name", "tiny"])
        .ok();
    let j = st.env.run(&["--json", "index", "build"]).ok().json();
    assert_eq!(j["index"]["vectors"], 120, "{j}");
    assert_eq!(ann_state(&st.env), "fresh");
    st.env.run(&["check"]).ok();
    st
}

#[test]
fn similar_through_the_index_agrees_with_exact_and_honours_filters() {
    let Setup { env, .. } = indexed();
    let train: Vec<u64> = train_ids(&env);
    let mut same = 0;
    let mut total = 0;
    for &id in train.iter().step_by(7) {
        let q = id.to_string();
        let exact = env
            .run(&["--json", "similar", "--id", &q, "-k", "5", "--exact"])
            .ok()
            .json();
        let ann = env
            .run(&["--json", "similar", "--id", &q, "-k", "5", "--ann"])
            .ok();
        assert!(!ann.stderr.contains("not usable"), "{}", ann.stderr);
        let (e, a) = (ids(&exact), ids(&ann.json()));
        assert_eq!(a.len(), 5);
        same += a.iter().filter(|x| e.contains(x)).count();
        total += 5;
        // Filters go through the index: never itself, never within W, only train examples,
        // only the emotion asked for.
        let hits = env
            .run(&[
                "--json",
                "similar",
                "--id",
                &q,
                "-k",
                "5",
                "--ann",
                "--exclude-within",
                "3",
                "--emotion",
                "Joy",
            ])
            .ok()
            .json();
        for h in hits.as_array().unwrap() {
            let hid = h["id"].as_u64().unwrap();
            assert!(hid.abs_diff(id) > 3, "{hid} within 3 of {id}");
            assert!(train.contains(&hid), "{hid} is not a train example");
            assert!(
                h["labels"].as_array().unwrap().iter().any(|l| l == "Joy"),
                "{h}"
            );
        }
    }
    // 80 train examples: the graph search is as good as exact here.
    assert!(same as f64 / total as f64 >= 0.98, "{same} of {total}");
}

/// `--ef` sets how many candidates the index search keeps (and asks for the index): at this
/// size a wide search finds exactly what exact search finds, the narrowest still answers k;
/// 0, past 4096, with `--exact` or for BM25 it is refused before any work (exit 2).
#[test]
fn ef_sets_the_index_search_and_is_refused_where_it_means_nothing() {
    let Setup { env, .. } = indexed();
    for &id in train_ids(&env).iter().step_by(9) {
        let q = id.to_string();
        let exact = env
            .run(&["--json", "similar", "--id", &q, "-k", "5", "--exact"])
            .ok()
            .json();
        let wide = env
            .run(&["--json", "similar", "--id", &q, "-k", "5", "--ef", "4096"])
            .ok();
        assert!(!wide.stderr.contains("not usable"), "{}", wide.stderr);
        let sorted = |mut v: Vec<u64>| {
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(ids(&wide.json())), sorted(ids(&exact)));
        let narrow = env
            .run(&["--json", "similar", "--id", &q, "-k", "5", "--ef", "1"])
            .ok()
            .json();
        assert_eq!(ids(&narrow).len(), 5);
    }
    env.run(&["knowledge", "retrieve", "-k", "3", "--ef", "64"])
        .ok();
    for (args, says) in [
        (vec!["--ef", "0"], "at least 1"),
        (vec!["--ef", "4097"], "at most 4096"),
        (vec!["--ef", "10", "--exact"], "--exact"),
        (vec!["--ef", "10", "--by", "bm25"], "ef"),
    ] {
        let mut a = vec!["similar", "--id", "5"];
        a.extend(args);
        env.run(&a).code(2).stderr_has(says);
    }
}

#[test]
fn knowledge_retrieve_through_the_index_agrees_with_exact() {
    let Setup { env, .. } = indexed();
    let get = |source: &str| {
        let mut v = Vec::new();
        for id in train_ids(&env).iter().take(30) {
            let shown = env.run(&["--json", "show", &id.to_string()]).ok().json();
            v.push(
                shown["knowledge"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|k| k["source"] == source)
                    .cloned(),
            );
        }
        v
    };
    env.run(&[
        "knowledge",
        "retrieve",
        "-k",
        "3",
        "--exact",
        "--source",
        "nb-exact",
    ])
    .ok();
    env.run(&[
        "knowledge",
        "retrieve",
        "-k",
        "3",
        "--ann",
        "--source",
        "nb-ann",
    ])
    .ok();
    let (e, a) = (get("nb-exact"), get("nb-ann"));
    assert!(e.iter().chain(&a).all(Option::is_some), "{e:?}\n{a:?}");
    let nb = |k: &Option<serde_json::Value>| -> Vec<(u64, f64)> {
        k.as_ref().unwrap()["neighbours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_u64().unwrap(), n["score"].as_f64().unwrap()))
            .collect()
    };
    // The graph is approximate (near-duplicate vectors can leave a node unreachable), so the
    // lists agree on most neighbours, not all; what the index returns is never better than
    // exact and scores agree where the ids do.
    let (mut same, mut total) = (0, 0);
    for (e, a) in e.iter().zip(&a) {
        let (e, a) = (nb(e), nb(a));
        assert_eq!((e.len(), a.len()), (3, 3), "{e:?} {a:?}");
        for &(id, score) in &a {
            assert!(score <= e[0].1 + 1e-4, "{a:?} beats exact {e:?}");
            if let Some(&(_, es)) = e.iter().find(|x| x.0 == id) {
                assert!((es - score).abs() < 1e-4, "{e:?} {a:?}");
                same += 1;
            }
        }
        total += 3;
    }
    assert!(same as f64 / total as f64 >= 0.9, "{same} of {total}");
}

#[test]
fn a_stale_or_damaged_index_is_reported_and_never_used() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--split", "train"])
        .ok();
    env.run(&["index", "build"]).ok();
    let q = train_ids(&env)[0].to_string();
    // Embedding more text extends the index at the end of the run.
    let j = env
        .run(&["--json", "embed", "--encoder", s(&encoder)])
        .ok()
        .json();
    assert_eq!(j["ann"]["incremental"], true, "{j}");
    assert_eq!(j["ann"]["vectors"], 120, "{j}");
    assert_eq!(ann_state(&env), "fresh");
    env.run(&["check"]).ok();

    // Re-ingesting a sentence with new text drops its vector: the index is stale.
    let csv = crate::model_cli::corpus().replacen("1,孩子 开心 笑", "1,孩子 很 开心 地 笑", 1);
    assert_ne!(csv, crate::model_cli::corpus());
    let f = env.write("c2.csv", csv);
    env.run(&[
        "ingest",
        s(&f),
        "--replace",
        "--test-rows",
        "20",
        "--val-fraction",
        "0.2",
        "--seed",
        "1",
    ])
    .ok();
    assert_eq!(ann_state(&env), "stale");
    env.run(&["check"])
        .code(1)
        .stdout_has("ANN index of encoder")
        .stdout_has("stale")
        .stdout_has("emoknow index build");
    // A search asked to use it says so and searches exactly.
    env.run(&["similar", "--id", &q, "--ann"])
        .ok()
        .stderr_has("not usable")
        .stderr_has("emoknow index build");
    // embed re-embeds the sentence and rebuilds the stale index whole.
    let j = env
        .run(&["--json", "embed", "--encoder", s(&encoder)])
        .ok()
        .json();
    assert_eq!(j["ann"]["incremental"], false, "{j}");
    assert_eq!(ann_state(&env), "fresh");
    env.run(&["check"]).ok();

    // A damaged file is reported by check and not used.
    let file = env.stats()["ann"][0]["file"].as_str().unwrap().to_string();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    env.run(&["check"])
        .code(1)
        .stdout_has("ANN index of encoder");
    let out = env.run(&["--json", "similar", "--id", &q, "--ann"]).ok();
    assert!(out.stderr.contains("not usable"), "{}", out.stderr);
    let exact = env.run(&["--json", "similar", "--id", &q, "--exact"]).ok();
    assert_eq!(ids(&out.json()), ids(&exact.json()));
    // reindex rebuilds it.
    env.run(&["reindex"]).ok();
    env.run(&["check"]).ok();
    assert_eq!(ann_state(&env), "fresh");

    // An index written by an earlier layout (other parameters) is stale until rebuilt.
    {
        let store = emoknow::store::Store::open(&env.store()).unwrap();
        let mut r = store.ann_records().unwrap().pop().unwrap();
        r.version -= 1;
        store.put_ann_record(&r).unwrap();
    }
    assert_eq!(ann_state(&env), "stale");
    assert!(
        env.stats()["ann"][0]["freshness"]["reason"]
            .as_str()
            .unwrap()
            .contains("layout version"),
        "{}",
        env.stats()["ann"][0]
    );
    env.run(&["similar", "--id", &q, "--ann"])
        .ok()
        .stderr_has("not usable");
    env.run(&["index", "build"]).ok();
    assert_eq!(ann_state(&env), "fresh");
}

/// `n` sentences of eight words each (labels cycle through three patterns).
fn big_corpus(n: usize) -> String {
    let labels = ["['Anxiety']", "\"['Joy', 'Love']\"", "['Expect']"];
    generated_corpus(n, 8, &labels, 11, |i| i)
}

#[test]
fn a_build_killed_at_any_moment_leaves_a_store_that_checks_and_rebuilds() {
    let env = TestEnv::new();
    let csv = big_corpus(3000);
    let f = env.write("c.csv", &csv);
    env.run(&["ingest", s(&f), "--test-rows", "100"]).ok();
    let encoder = env.path("tiny-bert");
    write_random_checkpoint(
        &encoder,
        &TinyBertSpec {
            hidden_size: 256,
            num_attention_heads: 4,
            intermediate_size: 64,
            texts: csv.lines().map(str::to_string).collect(),
            ..TinyBertSpec::default()
        },
        3,
    )
    .unwrap();
    env.run(&["embed", "--encoder", s(&encoder)]).ok();
    let q = train_ids(&env)[0].to_string();
    let mut killed_unbuilt = 0;
    for (round, delay_ms) in [30u64, 80, 150, 250, 400, 600, 900, 30, 150, 400]
        .into_iter()
        .enumerate()
    {
        let finished =
            env.run_killed_after(&["-q", "index", "build"], Duration::from_millis(delay_ms));
        // Whatever moment the kill hit: the store opens, check passes, and the index is
        // either the one of a finished build or absent — never a record over a bad file.
        env.run(&["check"]).ok();
        let state = ann_state(&env);
        if round < 7 && !finished {
            assert!(
                state == "absent" || state == serde_json::Value::Null || state == "fresh",
                "{state}"
            );
            if state != "fresh" {
                killed_unbuilt += 1;
            }
        } else {
            assert!(
                state == "fresh" || state == "absent" || state.is_null(),
                "{state}"
            );
        }
        // Searches work either way (through the index, or exactly with a note).
        env.run(&["similar", "--id", &q, "--ann"]).ok();
        // Later rounds kill a rebuild over an existing index.
        if round == 6 {
            env.run(&["index", "build"]).ok();
        }
    }
    assert!(killed_unbuilt > 0, "no kill landed before a build finished");
    env.run(&["index", "build"]).ok();
    env.run(&["check"]).ok();
    assert_eq!(ann_state(&env), "fresh");
    let dir = env.store().join("ann");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.len() <= 1, "{leftovers:?}");
}

/// `similar TEXT` over dense vectors embeds the text with the encoder the stored vectors were
/// made with (loaded from where `embed` read it): the text of a stored example finds what
/// `similar --id` finds for that example (the same vector; a text query, like a query by id,
/// never returns a sentence with its very text). The encoder's directory names it too, and a
/// directory that is gone is an error naming the fix.
#[test]
fn a_query_text_is_embedded_by_the_encoder_its_vectors_came_from() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    for id in train_ids(&env).into_iter().step_by(9) {
        let q = id.to_string();
        let text = env.run(&["--json", "show", &q]).ok().json()["text"]
            .as_str()
            .unwrap()
            .to_string();
        let by_id = env
            .run(&["--json", "similar", "--id", &q, "-k", "4", "--exact"])
            .ok()
            .json();
        for key in ["tiny", s(&encoder)] {
            let by_text = env
                .run(&[
                    "--json",
                    "similar",
                    &text,
                    "-k",
                    "4",
                    "--exact",
                    "--encoder",
                    key,
                ])
                .ok()
                .json();
            assert_eq!(ids(&by_text), ids(&by_id), "#{id} {text:?} --encoder {key}");
            for (t, i) in by_text
                .as_array()
                .unwrap()
                .iter()
                .zip(by_id.as_array().unwrap())
            {
                let (t, i) = (t["score"].as_f64().unwrap(), i["score"].as_f64().unwrap());
                assert!((t - i).abs() < 1e-4, "#{id}: {t} against {i}");
            }
        }
    }
    let text = "担心 考试 明天";
    let id = train_ids(&env)[0].to_string();
    let moved = encoder.with_file_name("moved-encoder");
    std::fs::rename(&encoder, &moved).unwrap();
    let out = env.run(&["similar", text, "--exact"]).code(2);
    assert!(out.stderr.contains("is gone"), "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: `emoknow embed --encoder DIR`"),
        "{}",
        out.stderr
    );
    env.run(&["embed", "--encoder", s(&moved), "--name", "tiny"])
        .ok();
    env.run(&["similar", text, "--exact"]).ok();
    // By id needs no encoder at all.
    std::fs::remove_dir_all(&moved).unwrap();
    env.run(&["similar", "--id", &id, "--exact"]).ok();
}
