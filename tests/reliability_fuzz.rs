//! Property tests over the readers and the stored records (issue 10): damaged store records
//! and damaged input files give errors, never a panic, and a batch is written whole or not at
//! all.

use crate::util::{copy_dir, s, RawDb, Rng, Run, TestEnv};
use std::path::Path;

const CORPUS: &str = "ID,Text,Labels
1,我 很 担忧 孩子 的 未来,\"['Anxiety', 'Love']\"
2,现在 好 终于 如愿以偿,['Joy']
3,他 对 未来 充满 期待,['Expect']
4,这种 行为 令人 厌恶,\"['Hate', 'Anger']\"
5,听到 消息 后 她 非常 难过,['Sorrow']
6,没想到 他 会 来,['Surprise']
7,我们 担忧 天气 会 更 糟糕,['Anxiety']
8,孩子 们 笑 得 很 开心,\"['Joy', 'Love']\"
9,对 这 件 事 感到 愤怒 和 失望,\"['Anger', 'Sorrow']\"
10,期待 明天 的 比赛,['Expect']
11,担忧 明天 的 考试,['Anxiety']
12,开心 的 一天,['Joy']
";

const PREDICTIONS: &str = r#"{"label": "这段评论包含以下分类:\nAnxiety, Love\n\n理由:\n\n担心孩子前途。"}
{"label": "这段评论包含以下分类:\nJoy\n\n理由:\n\n终于如愿以偿。"}
"#;

#[track_caller]
fn no_panic(r: &Run) {
    assert!(
        matches!(r.code, 0..=2) && !r.stderr.contains("panicked"),
        "emoknow {} exited {}:\n{}",
        r.args.join(" "),
        r.code,
        r.stderr
    );
}

/// What README promises a command reading damaged records: it works (the damage is not in
/// what it reads), or exits 2 with a message that names the fix; `check` exits 1 listing the
/// damage with the fix, and `query` or `similar` may find nothing (exit 1).
#[track_caller]
fn exits_naming_the_fix(r: &Run) {
    no_panic(r);
    let names_fix = |s: &str| s.contains("run `emoknow") || s.contains("hint: ");
    let ok = match r.code {
        0 => true,
        1 if r.args.iter().any(|a| a == "check") => names_fix(&r.stdout),
        1 => r.args.iter().any(|a| a == "query" || a == "similar") && r.stderr.is_empty(),
        _ => names_fix(&r.stderr),
    };
    assert!(
        ok,
        "emoknow {} exited {} without naming the fix:\n{}{}",
        r.args.join(" "),
        r.code,
        r.stdout,
        r.stderr
    );
}

#[test]
fn damaged_records_give_errors_never_a_panic() {
    let base = TestEnv::new();
    let f = base.write("c.csv", CORPUS);
    base.run(&[
        "ingest",
        s(&f),
        "--test-rows",
        "2",
        "--val-fraction",
        "0.25",
    ])
    .ok();
    let p = base.write("p.jsonl", PREDICTIONS);
    base.import(&p, "qwen-max", "label", 1).ok();
    base.run(&["knowledge", "retrieve", "-k", "3", "--by", "bm25"])
        .ok();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for round in 0..12 {
        let env = TestEnv::new();
        copy_dir(&base.store(), &env.store());
        {
            let db = RawDb::open(&env.store());
            let keys: Vec<sled::IVec> = db
                .iter()
                .keys()
                .map(Result::unwrap)
                .filter(|k| matches!(k.first(), Some(b'e' | b'k' | b'x' | b'p' | b'm')))
                .collect();
            for _ in 0..1 + round % 3 {
                let k = &keys[rng.below(keys.len())];
                let old = db.get(k).unwrap().unwrap();
                let new = match rng.below(3) {
                    0 => {
                        let n = rng.below(40);
                        rng.bytes(n)
                    }
                    1 => old[..rng.below(old.len().max(1))].to_vec(),
                    _ => {
                        let mut v = old.to_vec();
                        let at = rng.below(v.len().max(1)).min(v.len().saturating_sub(1));
                        if !v.is_empty() {
                            v[at] ^= 0xFF;
                        }
                        v
                    }
                };
                db.insert(k, new).unwrap();
            }
            db.flush().unwrap();
        }
        let out = env.path("m");
        for args in [
            vec!["stats"],
            vec!["check"],
            vec!["show", "1"],
            vec!["show", "4"],
            vec!["query", "--keyword", "担忧"],
            vec!["query", "--emotion", "Joy"],
            vec!["--json", "query", "-n", "100"],
            vec!["similar", "--id", "5", "--by", "bm25"],
            vec!["train", "--classifier", "linear", "--out", s(&out)],
            vec!["knowledge", "retrieve", "--by", "bm25", "--fresh"],
            vec!["reindex"],
        ] {
            exits_naming_the_fix(&env.run(&args));
        }
    }
}

/// Bad rows of every kind the readers know, one of which is spliced into a good file.
const BAD_ROWS: [&str; 8] = [
    "99,,['Joy']",
    "99,好,['Happy']",
    "99,好,[]",
    "99,好,\"['Love'\"",
    "99,好,['Joy'],extra",
    "x9,好,['Joy']",
    "99,好\u{0},['Joy']",
    "99,\"好,['Joy']",
];

#[test]
fn a_batch_with_any_bad_row_is_written_whole_or_not_at_all() {
    let env = TestEnv::new();
    let mut rng = Rng(0xBAD_0000_1111_2222);
    let good: Vec<&str> = CORPUS.lines().skip(1).collect();
    for round in 0..24 {
        let before = if env.store().exists() {
            Some(env.stats())
        } else {
            None
        };
        // Good rows get ids of their own per round, so a successful write would show.
        let base = 1000 * (round + 1);
        let mut rows: Vec<String> = good
            .iter()
            .map(|l| {
                let (id, rest) = l.split_once(',').unwrap();
                format!("{},{rest}", base + id.parse::<usize>().unwrap())
            })
            .collect();
        let bad = BAD_ROWS[rng.below(BAD_ROWS.len())];
        rows.insert(
            rng.below(rows.len() + 1),
            bad.replace("99", &(base + 99).to_string()),
        );
        let mut body = format!("ID,Text,Labels\n{}\n", rows.join("\n"));
        if rng.below(4) == 0 {
            // Random bytes in the middle of a line, too.
            let at = body.len() / 2;
            let noise = rng.bytes(3);
            let mut bytes = body.into_bytes();
            bytes.splice(at..at, noise);
            body = String::from_utf8_lossy(&bytes).into_owned();
        }
        let f = env.write(&format!("f{round}.csv"), &body);
        let r = env.run(&["ingest", s(&f), "--test-rows", "0"]);
        no_panic(&r);
        assert_eq!(
            r.code, 2,
            "a bad row must refuse the batch:\n{body}\n{}",
            r.stderr
        );
        match before {
            Some(b) => assert_eq!(env.stats(), b, "nothing written in round {round}"),
            None => assert!(
                !env.store().join("db").exists() || env.stats()["examples"] == 0,
                "nothing written"
            ),
        }
    }
}

/// Every reader of user files, on arbitrary bytes and on valid files with bytes flipped, cut or
/// spliced: a value or an error, never a panic.
#[test]
fn the_readers_never_panic_on_arbitrary_bytes() {
    use emoknow::knowledge::{llama_factory, sanitize};
    let valid: Vec<Vec<u8>> = vec![
        CORPUS.as_bytes().to_vec(),
        "Text,'Love','Joy','Anxiety','Sorrow','Expect','Hate','Surprise','Anger'\n好,1,0,0,0,0,0,0,0\n"
            .as_bytes()
            .to_vec(),
        "{\"id\": 3, \"text\": \"好\", \"labels\": [\"Joy\"]}\n{\"text\": \"坏\", \"labels\": \"Hate,Anger\"}\n"
            .as_bytes()
            .to_vec(),
        PREDICTIONS.as_bytes().to_vec(),
        encoding_rs::GB18030.encode(CORPUS).0.into_owned(),
        b"\xEF\xBB\xBFID,Text,Labels\n1,a,['Joy']\n".to_vec(),
    ];
    let mut rng = Rng(0xF00D_CAFE_0000_0042);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for _ in 0..400 {
        let n = rng.below(300);
        inputs.push(rng.bytes(n));
    }
    for v in &valid {
        for _ in 0..150 {
            let mut m = v.clone();
            match rng.below(3) {
                0 => {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
                1 => m.truncate(rng.below(m.len())),
                _ => {
                    let at = rng.below(m.len());
                    let n = 1 + rng.below(8);
                    let noise = rng.bytes(n);
                    m.splice(at..at, noise);
                }
            }
            inputs.push(m);
        }
    }
    let path = Path::new("fuzz.csv");
    for bytes in &inputs {
        let _ = emoknow::corpus::parse_bytes(path, bytes);
        let text = String::from_utf8_lossy(bytes);
        let _ = llama_factory::parse_predictions(&text, path);
        let _ = sanitize::Lexicon::parse(&text);
        let lexicon = sanitize::Lexicon::default();
        let _ = sanitize::sanitize(&text, &lexicon, false);
        let _ = emoknow::labels::LabelSet::parse_list(&text);
    }
}
