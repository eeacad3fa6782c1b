//! Reliability (issue item 2): a damaged search index or a partial sled snapshot must not make
//! the store unusable. The index is derived data: `reindex` rebuilds it from sled whatever state
//! it is in, `check` finds the damage, commands that need the index say to run `reindex`, and no
//! query panics.

use crate::util::{repo, s, Rng, TestEnv};
use std::path::PathBuf;

/// Thirty keywords, common in the corpus and its rationales.
const KEYWORDS: [&str; 30] = [
    "担忧", "未来", "孩子", "开心", "愤怒", "期待", "失望", "难过", "喜欢", "讨厌", "好", "人",
    "我", "的", "了", "是", "他", "生活", "工作", "朋友", "家", "爱", "心", "天", "事", "时间",
    "中国", "希望", "感觉", "知道",
];

/// The keywords compared before the damage and after the repair.
const FEW: &[&str] = &["担忧", "孩子", "开心", "希望", "知道"];

/// A store of the first 300 rows of the shipped corpus with 300 imported rationales.
fn store() -> TestEnv {
    let env = TestEnv::new();
    let train = std::fs::read(repo().join("data/Train.csv")).unwrap();
    let head: Vec<u8> = train
        .split_inclusive(|&b| b == b'\n')
        .take(301)
        .flatten()
        .copied()
        .collect();
    let f = env.write("t.csv", head);
    env.run(&["ingest", s(&f), "--test-rows", "50"]).ok();
    let preds = std::fs::read_to_string(repo().join("data/generated_predictions.jsonl")).unwrap();
    let head: String = preds.split_inclusive('\n').take(300).collect();
    let p = env.write("p.jsonl", head);
    env.import(&p, "qwen", "label", 1).ok();
    env.run(&["check"]).ok();
    env
}

fn index_dir(env: &TestEnv) -> PathBuf {
    env.store().join("index")
}

/// The index's segment files with this extension (`term`, `idx`, …), largest first.
fn segment_files(env: &TestEnv, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(index_dir(env))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    assert!(!v.is_empty(), "no .{ext} file in the index");
    v
}

/// `query --json --keyword K` for each keyword: the exit code and the ids of every matching
/// example, sorted (the ranking may change with a rebuild: BM25 statistics count deleted
/// documents until segments merge).
fn queries(env: &TestEnv, keywords: &[&str]) -> Vec<(i32, Vec<u64>)> {
    keywords
        .iter()
        .map(|k| {
            let r = env.run(&["--json", "query", "--keyword", k, "--limit", "1000"]);
            let mut ids: Vec<u64> = match serde_json::from_str::<serde_json::Value>(&r.stdout) {
                Ok(serde_json::Value::Array(hits)) => {
                    hits.iter().filter_map(|h| h["id"].as_u64()).collect()
                }
                _ => Vec::new(),
            };
            ids.sort_unstable();
            (r.code, ids)
        })
        .collect()
}

/// What every command must say while the index is damaged.
const DAMAGED: &str = "run `emoknow reindex`";

/// After damage to the index: `check` reports it (exit 1) and says to reindex; commands that do
/// not need the index still work; keyword queries fail with the clear message; `reindex`
/// repairs it, `check` passes and queries answer as before the damage.
fn damaged_then_repaired(env: &TestEnv, before: &[(i32, Vec<u64>)]) {
    let r = env.run(&["check"]).code(1).stdout_has(DAMAGED);
    assert!(r.stdout.contains("search index"), "{}", r.stdout);
    let j = env.run(&["--json", "check"]).code(1).json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["examples"], 300, "sled is read whatever the index: {j}");
    // No index needed: these work.
    assert_eq!(env.stats()["examples"], 300);
    env.run(&["show", "3"]).ok();
    env.run(&["query", "--emotion", "Joy", "--limit", "3"]).ok();
    // The index is needed: a clear error, exit 2.
    env.run(&["query", "--keyword", "担忧"])
        .code(2)
        .stderr_has("is damaged")
        .stderr_has(DAMAGED);
    env.run(&["reindex"])
        .ok()
        .stdout_has("reindexed 300 examples");
    env.run(&["check"]).ok().stdout_has("ok");
    assert_eq!(queries(env, FEW), before);
}

#[test]
fn a_truncated_segment_file_is_reported_and_reindex_repairs_it() {
    let env = store();
    let before = queries(&env, FEW);
    assert!(
        before.iter().all(|(c, ids)| *c == 0 && !ids.is_empty()),
        "every keyword matches"
    );
    for p in segment_files(&env, "term") {
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
    }
    damaged_then_repaired(&env, &before);
}

#[test]
fn a_deleted_segment_file_is_reported_and_reindex_repairs_it() {
    let env = store();
    let before = queries(&env, FEW);
    std::fs::remove_file(&segment_files(&env, "idx")[0]).unwrap();
    damaged_then_repaired(&env, &before);
}

#[test]
fn a_garbage_meta_json_is_reported_and_reindex_repairs_it() {
    let env = store();
    let before = queries(&env, FEW);
    std::fs::write(index_dir(&env).join("meta.json"), "garbage {").unwrap();
    damaged_then_repaired(&env, &before);
}

#[test]
fn a_garbage_managed_json_is_reported_and_reindex_repairs_it() {
    let env = store();
    let before = queries(&env, FEW);
    std::fs::write(index_dir(&env).join(".managed.json"), b"\x00\xffnot json").unwrap();
    damaged_then_repaired(&env, &before);
}

#[test]
fn a_deleted_index_directory_is_reported_not_an_empty_index() {
    let env = store();
    let before = queries(&env, FEW);
    std::fs::remove_dir_all(index_dir(&env)).unwrap();
    damaged_then_repaired(&env, &before);
}

/// CRC-32 (IEEE), as tantivy's footers hold it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrites the checksum in a tantivy file's footer (`json`, its length as u32, a magic u32)
/// to match the body, so the damage passes the checksum and reaches tantivy's parsers.
fn reseal(b: &[u8]) -> Vec<u8> {
    let n = b.len();
    let len = u32::from_le_bytes(b[n - 8..n - 4].try_into().unwrap()) as usize;
    let body = &b[..n - 8 - len];
    let mut footer: serde_json::Value = serde_json::from_slice(&b[n - 8 - len..n - 8]).unwrap();
    footer["crc"] = crc32(body).into();
    let json = serde_json::to_vec(&footer).unwrap();
    [body, &json, &(json.len() as u32).to_le_bytes(), &b[n - 4..]].concat()
}

/// Overwrites four runs of 256 bytes of every `.term` file's body with random bytes, leaving
/// the footer alone (the file still looks whole); with `reseal`, fixes the footer's checksum too.
fn scramble_term_files(env: &TestEnv, reseal_checksum: bool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for p in segment_files(env, "term") {
        let mut b = std::fs::read(&p).unwrap();
        // The footer (its JSON, the JSON's length as u32, a magic u32) stays whole: its JSON's
        // length varies with the file, so the damage ends where it begins.
        let n = b.len();
        let footer = u32::from_le_bytes(b[n - 8..n - 4].try_into().unwrap()) as usize + 8;
        let body = n - footer;
        for _ in 0..4 {
            let start = (rng.next() as usize) % (body - 256);
            for x in &mut b[start..start + 256] {
                *x = rng.next() as u8;
            }
        }
        if reseal_checksum {
            b = reseal(&b);
        }
        std::fs::write(&p, b).unwrap();
    }
}

/// After the damage: `check` exits 1 naming the index and the fix, none of the 30 queries
/// panics (exit 101), and `reindex` repairs it.
fn found_and_no_query_panics(env: &TestEnv, before: &[(i32, Vec<u64>)]) {
    let r = env.run(&["check"]).code(1).stdout_has(DAMAGED);
    assert!(r.stdout.contains("search index"), "{}", r.stdout);
    for (k, (code, _)) in KEYWORDS.iter().zip(queries(env, &KEYWORDS)) {
        assert_ne!(code, 101, "query --keyword {k} panicked");
        // 0: hits, 1: no hit, 2: the clear error.
        assert!(code <= 2, "query --keyword {k}: exit {code}");
    }
    env.run(&["reindex"]).ok();
    env.run(&["check"]).ok();
    assert_eq!(queries(env, FEW), before);
}

#[test]
fn random_bytes_in_a_term_file_are_found_by_check_and_no_query_panics() {
    let env = store();
    let before = queries(&env, FEW);
    scramble_term_files(&env, false);
    // The checksum is verified when the index opens: every query says what to do.
    env.run(&["query", "--keyword", "担忧"])
        .code(2)
        .stderr_has("fails its checksum")
        .stderr_has(DAMAGED);
    found_and_no_query_panics(&env, &before);
}

/// Damage that passes the checksum reaches tantivy, which panics on it: `check` reads every
/// segment in full and reports it, and queries turn the panic into the clear error.
#[test]
fn random_bytes_behind_a_valid_checksum_are_found_by_check_and_no_query_panics() {
    let env = store();
    let before = queries(&env, FEW);
    scramble_term_files(&env, true);
    found_and_no_query_panics(&env, &before);
}

/// The name of sled's newest snapshot in `db/`, if any.
fn snapshot_name(env: &TestEnv) -> String {
    std::fs::read_dir(env.store().join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snap."))
        .max()
        .unwrap_or_else(|| "snap.0000000000000000".into())
}

#[test]
fn an_empty_partial_sled_snapshot_left_by_a_full_disk_is_survived() {
    let env = store();
    let before = queries(&env, FEW);
    let shown = env.run(&["--json", "show", "7"]).ok().stdout;
    let partial = {
        // While another process holds the store, its snapshot in progress is not touched.
        let _held = emoknow::store::Store::open(&env.store()).unwrap();
        // What sled leaves when the disk fills while it writes a snapshot at open: it sorts
        // after the newest finished snapshot, so sled reads it first.
        let partial = env
            .store()
            .join("db")
            .join(format!("{}.generating", snapshot_name(&env)));
        std::fs::write(&partial, b"").unwrap();
        env.run(&["stats"])
            .code(2)
            .stderr_has("is in use by another process");
        assert!(partial.exists());
        partial
    };
    // sled's background threads may keep the dropped in-process handle's lock a moment
    // longer: wait for it (bounded), as a user would wait for another process to finish.
    for _ in 0..100 {
        if env.run(&["stats"]).code == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(env.stats()["examples"], 300);
    env.run(&["check"]).ok();
    assert_eq!(env.run(&["--json", "show", "7"]).ok().stdout, shown);
    assert_eq!(queries(&env, FEW), before);
    assert!(!partial.exists(), "the partial snapshot is cleaned up");
}

#[test]
fn a_half_written_sled_snapshot_is_survived() {
    let env = store();
    let shown = env.run(&["--json", "show", "7"]).ok().stdout;
    let partial = env
        .store()
        .join("db")
        .join(format!("{}.generating", snapshot_name(&env)));
    std::fs::write(&partial, [0x5a; 700]).unwrap();
    env.run(&["check"]).ok();
    assert_eq!(env.run(&["--json", "show", "7"]).ok().stdout, shown);
    // Writing works too.
    env.import(&env.path("p.jsonl"), "qwen-predict", "predict", 1)
        .ok();
    env.run(&["check"]).ok();
}

/// A real "no space left on device": sled's data file is `/dev/full`, where every write fails
/// with ENOSPC. The error says "disk full" and names the store, not a raw I/O error.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_reported_as_disk_full_naming_the_store() {
    let env = TestEnv::new();
    let f = env.write("t.csv", "ID,Text,Labels\n1,我 很 开心,['Joy']\n");
    let db = env.store().join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::os::unix::fs::symlink("/dev/full", db.join("db")).unwrap();
    env.run(&["ingest", s(&f), "--test-rows", "0"])
        .code(2)
        .stderr_has("disk full: no space left on the device holding")
        .stderr_has(s(&env.store()))
        .stderr_has("free some space");
}
