//! Vectors in flat memory-mapped files (issue 13): round trip, a crashed batch's tail cut at
//! open, kill -9 during `embed`, removal by `ingest --replace` and compaction, migration of a
//! format-1 store (vectors in sled), and damaged files reported by `check` and repaired by
//! `reindex`. Uses the tiny random BERT of `model_cli`.

use crate::model_cli::{corpus, ingest_split, setup, Setup};
use crate::util::{s, RawDb, TestEnv};
use emoknow::store::vectors::{EncoderInfo, What};
use emoknow::store::Store;
use emoknow::testkit::tiny::{write_random_checkpoint, TinyBertSpec};
use std::path::{Path, PathBuf};

/// The text vector file (`vectors/<encoder>/text.<gen>.f32`) of the store's only encoder.
fn text_file(store: &Path) -> PathBuf {
    let mut found = Vec::new();
    for enc in std::fs::read_dir(store.join("vectors")).unwrap() {
        for f in std::fs::read_dir(enc.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with("text.") && name.ends_with(".f32") {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// Embeds every split with the tiny encoder; returns (vectors, dimension).
fn embed_all(env: &TestEnv, encoder: &Path) -> (u64, u64) {
    let j = env
        .run(&["--json", "embed", "--encoder", s(encoder), "--name", "tiny"])
        .ok()
        .json();
    (
        j["embedded"].as_u64().unwrap(),
        j["encoder"]["dim"].as_u64().unwrap(),
    )
}

/// Every text vector of the store's only encoder, by id.
fn all_vectors(store: &Path) -> (EncoderInfo, Vec<(u64, Vec<f32>)>) {
    let st = Store::open(store).unwrap();
    let info = st.encoders().unwrap().pop().unwrap();
    let set = st.vectors(&info, &What::Text, None).unwrap();
    assert!(set.is_mapped(), "read in place");
    let out = (0..set.len())
        .map(|i| (set.ids[i], set.row(i).to_vec()))
        .collect();
    (info, out)
}

/// A 3-dimensional encoder no directory holds (vectors are put by hand), and a knowledge
/// source's `what`.
fn three_dim_encoder() -> (EncoderInfo, What) {
    let info = EncoderInfo {
        id: "enc-1".into(),
        name: "e".into(),
        dim: 3,
        pooling: "mean".into(),
        max_len: 8,
        dir: "/nowhere".into(),
    };
    (info, What::Knowledge("src:1/x".into()))
}

#[test]
fn vectors_round_trip_supersede_and_an_uncommitted_tail_is_cut_at_open() {
    let env = TestEnv::new();
    let (info, k) = three_dim_encoder();
    {
        let st = Store::open_or_create(&env.store()).unwrap();
        st.put_encoder(&info).unwrap();
        st.put_vectors(
            &info,
            &What::Text,
            &[(7, vec![1.0, 2.0, 3.0]), (3, vec![4.0, 5.0, 6.0])],
        )
        .unwrap();
        // Re-embedding 7 supersedes its first row; another `what` gets its own files.
        st.put_vectors(&info, &What::Text, &[(7, vec![-1.0, 0.5, 1e-7])])
            .unwrap();
        st.put_vectors(&info, &k, &[(3, vec![9.0, 9.0, 9.0])])
            .unwrap();
        assert!(st.put_vectors(&info, &k, &[(4, vec![1.0])]).is_err());
        assert!(st.has_vector("enc-1", &What::Text, 7).unwrap());
        assert!(!st.has_vector("enc-1", &k, 7).unwrap());
    }
    let st = Store::open(&env.store()).unwrap();
    let set = st.vectors(&info, &What::Text, None).unwrap();
    assert!(set.is_mapped());
    assert_eq!(set.ids, vec![3, 7]);
    assert_eq!(set.row(0), &[4.0, 5.0, 6.0]);
    assert_eq!(set.row(1), &[-1.0, 0.5, 1e-7]);
    assert_eq!(set.position(7), Some(1));
    let only = std::collections::HashSet::from([7]);
    let one = st.vectors(&info, &What::Text, Some(&only)).unwrap();
    assert_eq!(
        (one.ids.clone(), one.row(0)),
        (vec![7], &[-1.0, 0.5, 1e-7][..])
    );
    let kset = st.vectors(&info, &k, None).unwrap();
    assert_eq!(
        (kset.ids.clone(), kset.row(0)),
        (vec![3], &[9.0, 9.0, 9.0][..])
    );
    drop(st);

    // A batch written to the files whose commit never reached sled (a crash in between):
    // its bytes are cut at the next open, and the next batch lands right after the
    // committed rows.
    let f32 = env.store().join("vectors/enc-1/text.1.f32");
    let ids = env.store().join("vectors/enc-1/text.1.ids");
    assert_eq!((len(&f32), len(&ids)), (16 + 3 * 12, 16 + 3 * 8));
    let grow = |p: &Path, n: usize| {
        let mut b = std::fs::read(p).unwrap();
        b.extend(std::iter::repeat_n(0x7fu8, n));
        std::fs::write(p, b).unwrap();
    };
    grow(&f32, 12 * 2 + 5);
    grow(&ids, 8);
    let st = Store::open(&env.store()).unwrap();
    assert_eq!((len(&f32), len(&ids)), (16 + 3 * 12, 16 + 3 * 8));
    st.put_vectors(&info, &What::Text, &[(1, vec![0.0, 0.0, 1.0])])
        .unwrap();
    let set = st.vectors(&info, &What::Text, None).unwrap();
    assert_eq!(set.ids, vec![1, 3, 7]);
    assert_eq!(set.row(0), &[0.0, 0.0, 1.0]);
    assert_eq!(set.row(2), &[-1.0, 0.5, 1e-7]);
    assert!(st
        .check()
        .unwrap()
        .problems
        .iter()
        .all(|p| !p.contains("vector files")));
}

/// A store of 6,000 sentences (enough for several committed batches of 1,024) and the tiny
/// encoder.
fn store_of_6000() -> (TestEnv, PathBuf) {
    let mut csv = String::from("ID,Text,Labels\n");
    let body: Vec<String> = corpus().lines().skip(1).map(str::to_string).collect();
    for i in 0..6000usize {
        let line = &body[i % body.len()];
        let rest = line.split_once(',').unwrap().1;
        let (text, labels) = rest.split_once(',').unwrap();
        csv.push_str(&format!("{},{text} {i},{labels}\n", i + 1));
    }
    let env = TestEnv::new();
    let f = env.write("big.csv", &csv);
    ingest_split(&env, &f, 1);
    let encoder = env.path("tiny-bert");
    write_random_checkpoint(
        &encoder,
        &TinyBertSpec {
            texts: corpus().lines().map(str::to_string).collect(),
            ..TinyBertSpec::default()
        },
        7,
    )
    .unwrap();
    (env, encoder)
}

/// One Ctrl-C once the first batch's bytes are in the vector files: `embed` finishes the
/// batch it is on, keeps what it committed, says how to finish and exits 130; `check` finds at
/// most an unfinished embedding and a rerun embeds only the rest, one row per example.
#[test]
fn one_ctrl_c_during_embed_keeps_its_batches_and_the_rerun_finishes() {
    for attempt in 0..4 {
        let (env, encoder) = store_of_6000();
        let vectors = env.store().join("vectors");
        let Some(out) = env.interrupt_when(
            &["embed", "--encoder", s(&encoder), "--name", "tiny"],
            || crate::util::dir_bytes(&vectors) > 4096,
        ) else {
            eprintln!("attempt {attempt}: embed ended before the signal; again");
            continue;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("run again to finish"), "{stderr}");
        let committed = env.stats()["encoders"][0]["vectors"]["text"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            committed > 0 && committed < 6000,
            "stopped mid-run with its batches kept: {committed} committed"
        );
        assert!(
            stderr.contains(&format!("after {committed} of 6000")),
            "{stderr}"
        );
        let c = env.run(&["--json", "check"]);
        for p in c.json()["problems"].as_array().unwrap() {
            assert!(
                p.as_str().unwrap().contains("run `emoknow embed` again"),
                "{}",
                c.stdout
            );
        }
        let (embedded, dim) = embed_all(&env, &encoder);
        assert_eq!(embedded, 6000 - committed, "the rerun embeds only the rest");
        env.run(&["check"]).ok();
        assert_eq!(len(&text_file(&env.store())), 16 + 6000 * dim * 4);
        return;
    }
    panic!("no Ctrl-C landed while embed ran");
}

/// kill -9 once the first batch's bytes are in the vector files, while `embed` still runs:
/// the store opens, `check` finds at most an unfinished embedding, fewer than all vectors
/// are committed (the kill landed mid-run), and a rerun completes with one row per example.
/// An attempt whose kill came after the command ended is retried (bounded).
#[test]
fn kill_9_during_embed_leaves_a_store_that_checks_and_resumes() {
    for attempt in 0..4 {
        let (env, encoder) = store_of_6000();
        let vectors = env.store().join("vectors");
        let landed = env.kill_when(
            &["-q", "embed", "--encoder", s(&encoder), "--name", "tiny"],
            || crate::util::dir_bytes(&vectors) > 4096,
            std::time::Duration::from_millis(attempt * 20),
        );
        if !landed {
            eprintln!("attempt {attempt}: embed ended before the kill; again");
            continue;
        }
        // The store opens; check finds at most an unfinished embedding.
        let c = env.run(&["--json", "check"]);
        for p in c.json()["problems"].as_array().unwrap() {
            assert!(
                p.as_str().unwrap().contains("run `emoknow embed` again"),
                "{}",
                c.stdout
            );
        }
        let committed = env.stats()["encoders"][0]["vectors"]["text"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            committed < 6000,
            "the kill landed mid-run: {committed} committed"
        );
        let (embedded, dim) = embed_all(&env, &encoder);
        assert_eq!(embedded, 6000 - committed, "the rerun embeds only the rest");
        env.run(&["check"]).ok();
        let n = env.stats()["encoders"][0]["vectors"]["text"]
            .as_u64()
            .unwrap();
        assert_eq!(n, 6000);
        // No row twice, none uncommitted: exactly one row per example.
        assert_eq!(len(&text_file(&env.store())), 16 + n * dim * 4);
        return;
    }
    panic!("no kill landed while embed ran");
}

#[test]
fn replaced_sentences_lose_their_vectors_and_migrate_compacts_the_files() {
    let Setup { env, encoder } = setup();
    let (n, dim) = embed_all(&env, &encoder);
    assert_eq!(n, 120);
    let (_, before) = all_vectors(&env.store());
    let f = env.write("edit.csv", "ID,Text,Labels\n5,完全 不同 的 句子,['Joy']\n");
    let j = env
        .run(&["--json", "ingest", s(&f), "--test-rows", "0", "--replace"])
        .ok()
        .json();
    assert_eq!(j["dropped_vectors"], 1, "{j}");
    assert_eq!(env.stats()["encoders"][0]["vectors"]["text"], 119);
    let st = Store::open(&env.store()).unwrap();
    let info = st.encoders().unwrap().pop().unwrap();
    assert!(!st.has_vector(&info.id, &What::Text, 5).unwrap());
    let set = st.vectors(&info, &What::Text, None).unwrap();
    assert_eq!(set.position(5), None);
    drop(st);
    env.run(&["check"])
        .code(1)
        .stdout_has("run `emoknow embed` again");
    assert_eq!(embed_all(&env, &encoder).0, 1);
    env.run(&["check"]).ok();
    // 121 rows, one dead; `migrate` rewrites the files with the 120 live ones.
    let file = text_file(&env.store());
    assert_eq!(len(&file), 16 + 121 * dim * 4);
    let j = env.run(&["--json", "migrate"]).ok().json();
    assert_eq!(j["compacted_rows_dropped"], 1, "{j}");
    assert!(!file.exists(), "the old generation is gone");
    assert_eq!(len(&text_file(&env.store())), 16 + 120 * dim * 4);
    env.run(&["check"]).ok();
    let (_, after) = all_vectors(&env.store());
    assert_eq!(after.len(), 120);
    for ((a, va), (b, vb)) in before.iter().zip(&after) {
        assert_eq!(a, b);
        if *a != 5 {
            assert_eq!(va, vb, "vector of {a} kept as it was");
        } else {
            assert_ne!(va, vb, "5 was re-embedded from its new text");
        }
    }
}

/// Turns a format-2 store back into format 1: its vectors into the sled tree `vectors`
/// (key encoder id 0 what 0 id (BE), value LE f32), version 1, no flat files.
fn downgrade(store: &Path, info: &EncoderInfo, vectors: &[(u64, Vec<f32>)]) {
    let db = RawDb::open(store);
    let old = db.open_tree("vectors").unwrap();
    for (id, v) in vectors {
        let mut k = info.id.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(b"text");
        k.push(0);
        k.extend_from_slice(&id.to_be_bytes());
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        old.insert(k, bytes).unwrap();
    }
    db.drop_tree("vector_files").unwrap();
    db.insert("m/version", &1u32.to_be_bytes()).unwrap();
    db.flush().unwrap();
    // The tree first: it holds the database open too.
    drop(old);
    drop(db);
    std::fs::remove_dir_all(store.join("vectors")).unwrap();
}

#[test]
fn a_format_1_store_migrates_on_open_and_by_command_losing_nothing() {
    let Setup { env, encoder } = setup();
    embed_all(&env, &encoder);
    let (info, before) = all_vectors(&env.store());
    let stats_before = env.stats()["encoders"].clone();
    downgrade(&env.store(), &info, &before);

    // The library refuses and names the command; the CLI migrates and says so.
    let Err(e) = Store::open(&env.store()) else {
        panic!("a format-1 store opened as format 2")
    };
    assert!(e.to_string().contains("emoknow migrate"), "{e}");
    // Said even with -q: the store is rewritten.
    let r = env
        .run(&["-q", "--json", "stats"])
        .ok()
        .stderr_has("migrating vectors of store")
        .stderr_has("(format 1 → 2)");
    assert_eq!(r.json()["encoders"], stats_before);
    env.run(&["check"]).ok();
    assert_eq!(all_vectors(&env.store()).1, before);
    // Nothing more to do on the next open.
    let r = env.run(&["stats"]).ok();
    assert!(!r.stderr.contains("migrating"), "{}", r.stderr);

    // A migration killed half-way left files and records behind at format 1: `migrate`
    // starts over and ends with the same vectors.
    downgrade(&env.store(), &info, &before);
    let junk = env.store().join("vectors").join(&info.id);
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("text.1.f32"), b"EMOKVF32 half a batch").unwrap();
    {
        let db = RawDb::open(&env.store());
        let t = db.open_tree("vector_files").unwrap();
        t.insert(b"fjunk\0text", &b"not a record"[..]).unwrap();
        db.flush().unwrap();
    }
    let j = env.run(&["--json", "migrate"]).ok().json();
    assert_eq!(j["migrated"]["from"], 1, "{j}");
    assert_eq!(j["migrated"]["vectors"], 120, "{j}");
    assert_eq!(j["format"], 2);
    env.run(&["check"]).ok();
    assert_eq!(all_vectors(&env.store()).1, before);
    let db = RawDb::open(&env.store());
    assert!(
        !db.tree_names().iter().any(|n| n.as_ref() == b"vectors"),
        "the sled copy is gone once the files are committed"
    );
}

#[test]
fn a_truncated_or_foreign_vector_file_is_reported_by_check_and_repaired_by_reindex() {
    let Setup { env, encoder } = setup();
    let (n, dim) = embed_all(&env, &encoder);
    let file = text_file(&env.store());
    // Lose the last two and a half rows.
    let cut = 16 + (n - 3) * dim * 4 + dim * 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(cut)
        .unwrap();
    env.run(&["check"])
        .code(1)
        .stdout_has("is truncated")
        .stdout_has("run `emoknow reindex` to keep the intact rows, then `emoknow embed`");
    env.run(&["similar", "--id", "1", "--encoder", "tiny"])
        .code(2)
        .stderr_has("emoknow reindex");
    env.run(&["reindex"]).ok().stdout_has("kept 117 of 120");
    env.run(&["check"])
        .code(1)
        .stdout_has("run `emoknow embed` again");
    assert_eq!(embed_all(&env, &encoder).0, 3);
    env.run(&["check"]).ok();

    // A file that is not ours (bad magic): reported, dropped by reindex, re-embedded.
    let file = text_file(&env.store());
    let mut b = std::fs::read(&file).unwrap();
    b[..8].copy_from_slice(b"GARBAGE!");
    std::fs::write(&file, b).unwrap();
    env.run(&["check"])
        .code(1)
        .stdout_has("not an emoknow vector file");
    env.run(&["reindex"]).ok().stdout_has("dropped 120 rows");
    assert_eq!(embed_all(&env, &encoder).0, 120);
    env.run(&["check"]).ok();
}

/// Compaction asks whether it was interrupted before each file pair: interrupted after the
/// first, that pair is rewritten and the other left as it was, every vector reads back
/// unchanged, `check` finds nothing, and the next compaction finishes the rest.
#[test]
fn compaction_stops_between_file_pairs_and_the_next_one_finishes() {
    let env = TestEnv::new();
    let (info, k) = three_dim_encoder();
    let st = Store::open_or_create(&env.store()).unwrap();
    st.put_encoder(&info).unwrap();
    // Two file pairs (text, and one knowledge source), each with one superseded row.
    for (what, first, again) in [(&What::Text, 1.0, 2.0), (&k, 5.0, 6.0)] {
        st.put_vectors(&info, what, &[(7, vec![first; 3]), (3, vec![0.5; 3])])
            .unwrap();
        st.put_vectors(&info, what, &[(7, vec![again; 3])]).unwrap();
    }
    let read = |st: &Store| -> Vec<(Vec<u64>, Vec<f32>)> {
        [&What::Text, &k]
            .into_iter()
            .map(|w| {
                let set = st.vectors(&info, w, None).unwrap();
                let rows = (0..set.ids.len())
                    .flat_map(|i| set.row(i).to_vec())
                    .collect();
                (set.ids.clone(), rows)
            })
            .collect()
    };
    let before = read(&st);
    let gens = || {
        let mut g: Vec<String> = std::fs::read_dir(env.store().join("vectors/enc-1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".f32"))
            .collect();
        g.sort();
        g
    };
    assert_eq!(gens().len(), 2);

    let asked = std::cell::Cell::new(0);
    let r = st.compact_vectors(&mut |_, _| {}, &|| {
        asked.set(asked.get() + 1);
        asked.get() > 1
    });
    assert!(matches!(r, Err(emoknow::Error::Interrupted)), "{r:?}");
    assert_eq!(asked.get(), 2, "asked before each pair");
    let after_one = gens();
    assert_eq!(
        after_one.iter().filter(|n| n.contains(".2.")).count(),
        1,
        "one pair rewritten: {after_one:?}"
    );
    assert_eq!(read(&st), before);
    drop(st);
    let st = Store::open(&env.store()).unwrap();
    assert_eq!(read(&st), before);
    let problems = st.check().unwrap().problems;
    assert!(
        problems.iter().all(|p| !p.contains("vector files")),
        "{problems:?}"
    );

    assert_eq!(st.compact_vectors(&mut |_, _| {}, &|| false).unwrap(), 1);
    assert!(gens().iter().all(|n| n.contains(".2.")), "{:?}", gens());
    assert_eq!(read(&st), before);
    assert_eq!(st.compact_vectors(&mut |_, _| {}, &|| false).unwrap(), 0);
}
