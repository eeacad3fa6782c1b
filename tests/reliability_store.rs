//! Reliability of ingest (issue 10, items 1 and 6): files are told apart by path, nothing is
//! overwritten without `--replace`, what was derived from a replaced sentence goes with it, and
//! bad input is refused with its line.

use crate::util::{s, TestEnv};
use emoknow::testkit::tiny::{write_random_checkpoint, TinyBertSpec};

const B1: &str = "ID,Text,Labels
1001,我 很 担忧 孩子 的 未来,\"['Anxiety', 'Love']\"
1002,现在 好 终于 如愿以偿,['Joy']
1003,他 对 未来 充满 期待,['Expect']
1004,这种 行为 令人 厌恶,\"['Hate', 'Anger']\"
1005,听到 消息 后 她 非常 难过,['Sorrow']
1006,没想到 他 会 来,['Surprise']
";

/// B1 with row 1001 holding another sentence.
const B2: &str = "ID,Text,Labels
1001,完全 不同 的 一 句话,['Joy']
";

const PREDICTION: &str = r#"{"label": "这段评论包含以下分类:\nAnxiety, Love\n\n理由:\n\n担心孩子前途。"}
"#;

fn ingest(env: &TestEnv, f: &std::path::Path) {
    env.run(&["ingest", s(f), "--test-rows", "0", "--val-fraction", "0"])
        .ok();
}

fn show(env: &TestEnv, id: u64) -> serde_json::Value {
    env.run(&["--json", "show", &id.to_string()]).ok().json()
}

#[test]
fn a_file_of_the_same_name_elsewhere_does_not_overwrite_silently() {
    let env = TestEnv::new();
    let b1 = env.write("b1/Train.csv", B1);
    let b2 = env.write("b2/Train.csv", B2);
    ingest(&env, &b1);
    let before = env.stats();
    env.run(&["ingest", s(&b2), "--test-rows", "0", "--val-fraction", "0"])
        .code(2)
        .stderr_has("ID 1001 already holds a different sentence")
        .stderr_has("b1/Train.csv:2")
        .stderr_has("--replace");
    assert_eq!(env.stats(), before, "nothing was written");
    assert_eq!(show(&env, 1001)["text"], "我 很 担忧 孩子 的 未来");

    // The same sentence under the same id from another file is not a conflict.
    let same = env.write(
        "b3/Train.csv",
        "ID,Text,Labels\n1002,现在 好 终于 如愿以偿,['Joy']\n",
    );
    let j = env
        .run(&[
            "--json",
            "ingest",
            s(&same),
            "--test-rows",
            "0",
            "--val-fraction",
            "0",
        ])
        .ok()
        .json();
    assert_eq!(j["unchanged"], 1);
    // Other labels from another file are refused too.
    let relabel = env.write(
        "b4/Train.csv",
        "ID,Text,Labels\n1002,现在 好 终于 如愿以偿,['Sorrow']\n",
    );
    env.run(&[
        "ingest",
        s(&relabel),
        "--test-rows",
        "0",
        "--val-fraction",
        "0",
    ])
    .code(2)
    .stderr_has("with other labels or split");
    // The same file may correct its own labels.
    let edited = B1.replace(
        "1002,现在 好 终于 如愿以偿,['Joy']",
        "1002,现在 好 终于 如愿以偿,['Love']",
    );
    std::fs::write(&b1, edited).unwrap();
    let j = env
        .run(&[
            "--json",
            "ingest",
            s(&b1),
            "--test-rows",
            "0",
            "--val-fraction",
            "0",
        ])
        .ok()
        .json();
    assert_eq!(
        (j["updated"].as_u64(), j["replaced"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(show(&env, 1002)["labels"], serde_json::json!(["Love"]));
}

#[test]
fn a_replaced_sentence_drops_its_rationales_vectors_and_the_neighbour_lists_naming_it() {
    let env = TestEnv::new();
    let b1 = env.write("b1/Train.csv", B1);
    ingest(&env, &b1);
    let p = env.write("pred.jsonl", PREDICTION);
    env.import(&p, "qwen-max", "label", 1001).ok();
    let encoder = env.path("tiny-bert");
    write_random_checkpoint(
        &encoder,
        &TinyBertSpec {
            texts: B1.lines().map(str::to_string).collect(),
            ..TinyBertSpec::default()
        },
        7,
    )
    .unwrap();
    env.run(&[
        "embed",
        "--encoder",
        s(&encoder),
        "--name",
        "tiny",
        "--what",
        "both",
    ])
    .ok();
    env.run(&["knowledge", "retrieve", "-k", "3"]).ok();
    let named_by = |env: &TestEnv, id: u64| -> usize {
        (1001..=1006)
            .filter(|&o| {
                show(env, o)["knowledge"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| {
                        k["neighbours"]
                            .as_array()
                            .is_some_and(|ns| ns.iter().any(|n| n["id"] == id))
                    })
            })
            .count()
    };
    let lists_naming = named_by(&env, 1001);
    assert!(
        lists_naming > 0,
        "retrieval should have named 1001 somewhere"
    );
    let vectors_before = env.stats()["encoders"][0]["vectors"].clone();
    assert_eq!(vectors_before["text"], 6);
    assert_eq!(vectors_before["k:qwen-max"], 1);

    // A text change from the same file needs --replace as well: the rationale was paid for.
    let b2 = env.write("b2/Train.csv", B2);
    let edited = B1.replace("我 很 担忧 孩子 的 未来", "我 很 担忧 天气");
    std::fs::write(&b1, &edited).unwrap();
    env.run(&["ingest", s(&b1), "--test-rows", "0", "--val-fraction", "0"])
        .code(2)
        .stderr_has("--replace");
    std::fs::write(&b1, B1).unwrap();

    let j = env
        .run(&[
            "--json",
            "ingest",
            s(&b2),
            "--test-rows",
            "0",
            "--val-fraction",
            "0",
            "--replace",
        ])
        .ok()
        .json();
    assert_eq!(j["replaced"], 1, "{j}");
    // The rationale and the example's own neighbour list.
    assert_eq!(j["dropped_knowledge"], 2, "{j}");
    assert_eq!(j["dropped_vectors"], 2, "text and rationale vectors: {j}");
    assert_eq!(j["dropped_neighbour_lists"], lists_naming as u64, "{j}");
    let shown = show(&env, 1001);
    assert_eq!(shown["text"], "完全 不同 的 一 句话");
    assert_eq!(shown["knowledge"], serde_json::json!([]));
    assert_eq!(named_by(&env, 1001), 0);
    let vectors = env.stats()["encoders"][0]["vectors"].clone();
    assert_eq!(vectors["text"], 5);
    assert!(
        vectors.get("k:qwen-max").is_none_or(|v| v == 0),
        "{vectors}"
    );
    // `check` says what is missing (the new sentence has no vector yet) and embed fills it.
    env.run(&["check"])
        .code(1)
        .stdout_has("run `emoknow embed` again");
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["check"])
        .code(1)
        .stdout_has("the train split changed since they were retrieved");
    env.run(&["knowledge", "retrieve", "-k", "3"]).ok();
    env.run(&["check"]).ok();
    // The text output says what was dropped.
    let b5 = env.write(
        "b5/Train.csv",
        "ID,Text,Labels\n1001,又 一 句 新 的 话,['Joy']\n",
    );
    env.run(&[
        "ingest",
        s(&b5),
        "--test-rows",
        "0",
        "--val-fraction",
        "0",
        "--replace",
    ])
    .ok()
    .stdout_has("1 replaced")
    .stdout_has("vector(s)");
}

#[test]
fn bad_rows_are_refused_with_their_line() {
    let env = TestEnv::new();
    let cases: [(&str, &str, &str); 6] = [
        ("nul.csv", "ID,Text,Labels\n1,好\0 的,['Joy']\n", "U+0000"),
        ("empty_labels.csv", "ID,Text,Labels\n1,好,[]\n", "no label"),
        ("unterminated.csv", "ID,Text,Labels\n1,好,\"['Love'\"\n", "unterminated label list"),
        (
            "onehot_none.csv",
            "Text,'Love','Joy','Anxiety','Sorrow','Expect','Hate','Surprise','Anger'\n好,0,0,0,0,0,0,0,0\n",
            "no label",
        ),
        (
            "onehot_extra.csv",
            "Text,'Love','Joy','Anxiety','Sorrow','Expect','Hate','Surprise','Anger','Happy'\n好,1,0,0,0,0,0,0,0,1\n",
            "'Happy'",
        ),
        ("empty.jsonl", "{\"text\": \"好\", \"labels\": []}\n", "no label"),
    ];
    for (name, body, needle) in cases {
        let f = env.write(name, body);
        let r = env.run(&["ingest", s(&f)]).code(2).stderr_has(needle);
        assert!(
            r.stderr.contains(&format!("{name}:")) || r.stderr.contains("line "),
            "the error names the line: {}",
            r.stderr
        );
    }
    assert!(!env.store().join("db").exists() || env.stats()["examples"] == 0);
}

#[test]
fn a_huge_bad_line_is_not_echoed_whole() {
    let env = TestEnv::new();
    let huge = "x".repeat(10 << 20);
    let f = env.write("huge.csv", format!("ID,Text,Labels\n1,好,['{huge}']\n"));
    let r = env.run(&["ingest", s(&f)]).code(2).stderr_has("line 2");
    assert!(r.stderr.len() < 4096, "stderr is {} bytes", r.stderr.len());
    let r = env.run(&["--json", "ingest", s(&f), "--skip-bad"]).ok();
    assert!(r.stdout.len() < 4096, "stdout is {} bytes", r.stdout.len());
}

#[test]
fn the_largest_id_does_not_wrap_the_next_files_ids() {
    let env = TestEnv::new();
    let max = u64::MAX.to_string();
    let a = env.write("a.csv", format!("ID,Text,Labels\n{max},好,['Joy']\n"));
    env.run(&["ingest", s(&a)]).ok();
    let b = env.write("b.jsonl", "{\"text\": \"坏\", \"labels\": [\"Hate\"]}\n");
    env.run(&["ingest", s(&b)])
        .code(2)
        .stderr_has("no free example id")
        .stderr_has("ID column");
    assert_eq!(env.stats()["examples"], 1);
    env.run(&["show", "0"]).code(2);
}
