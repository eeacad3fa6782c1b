//! LLM annotation through a real chat-completions server on 127.0.0.1, and the LLaMA-Factory
//! round trip (issue 3).

use crate::util::{s, TestEnv};
use emoknow::labels::LabelSet;
use emoknow::testkit::devserver::{AnswerMode, Behaviour, DevServer, Fault};
use std::time::Duration;

const CORPUS: &str = "ID,Text,Labels
1,我 很 担忧 孩子 的 未来,\"['Anxiety', 'Love']\"
2,现在 好 终于 如愿以偿,['Joy']
3,这种 行为 令人 厌恶,\"['Hate', 'Anger']\"
4,期待 明天 的 比赛,['Expect']
";

const KEY: &str = "sk-test-secret-4242";

fn gold() -> Vec<(String, LabelSet)> {
    CORPUS
        .lines()
        .skip(1)
        .map(|l| {
            let (_, rest) = l.split_once(',').unwrap();
            let (text, labels) = rest.split_once(',').unwrap();
            (text.to_string(), labels.parse().unwrap())
        })
        .collect()
}

fn env() -> TestEnv {
    let env = TestEnv::new();
    let f = env.write("c.csv", CORPUS);
    env.run(&["ingest", s(&f), "--test-rows", "0", "--val-fraction", "0"])
        .ok();
    env
}

fn annotate(env: &TestEnv, server: &DevServer, extra: &[&str]) -> crate::util::Run {
    let url = server.base_url();
    let mut args = vec![
        "--json",
        "annotate",
        "--endpoint",
        &url,
        "--model",
        "mock-qwen",
        "--api-key-env",
        "EMOKNOW_TEST_KEY",
        "--timeout",
        "1",
        "--retries",
        "3",
        "--jobs",
        "4",
    ];
    args.extend_from_slice(extra);
    let out = env
        .cmd(&args)
        .env("EMOKNOW_TEST_KEY", KEY)
        .output()
        .unwrap();
    crate::util::Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn no_key_in_store(env: &TestEnv) {
    fn walk(dir: &std::path::Path, key: &[u8]) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, key);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(key.len()).any(|w| w == key),
                    "the API key is in {}",
                    p.display()
                );
            }
        }
    }
    walk(&env.store(), KEY.as_bytes());
}

#[test]
fn every_fault_is_retried_and_the_guided_prompt_fixes_wrong_answers() {
    let faults = [
        Fault::RateLimit {
            retry_after: Some("1".into()),
        },
        Fault::Status(500),
        Fault::Close,
        Fault::Hang,
    ];
    for fault in faults {
        let env = env();
        let server = DevServer::start(
            Behaviour {
                answer: AnswerMode::WrongUnlessGuided,
                faults: vec![fault.clone()],
                require_key: Some(KEY.into()),
                hang_secs: 3.0,
                ..Behaviour::default()
            }
            .with_gold(gold()),
        )
        .unwrap();
        let r = annotate(&env, &server, &[]);
        assert!(!r.stdout.contains(KEY) && !r.stderr.contains(KEY));
        let j = r.ok().json();
        assert_eq!(j["accepted"], 4, "{fault:?}: {j}");
        assert_eq!(j["guided"], 4, "{fault:?}: {j}");
        assert_eq!(j["failed"], 0, "{fault:?}: {j}");
        assert!(j["retries"].as_u64().unwrap() >= 4, "{fault:?}: {j}");
        assert!(j["prompt_tokens"].as_u64().unwrap() > 0);
        for id in 1..=4 {
            let show = env.run(&["--json", "show", &id.to_string()]).ok().json();
            let k = &show["knowledge"][0];
            assert_eq!(k["source"], "mock-qwen");
            assert_eq!(k["prompt_kind"], "guided");
            assert_eq!(k["attempts"], 2);
            assert_eq!(
                k["asserted"], show["labels"],
                "stored knowledge agrees with gold"
            );
            assert!(!k["sanitized"].as_str().unwrap().is_empty());
        }
        // The key went out on every request, and the guided prompt carried the answer.
        let reqs = server.requests();
        assert!(reqs
            .iter()
            .all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));
        assert!(reqs.iter().any(|r| r.guided && r.body.contains(",答案为")));
        no_key_in_store(&env);
        env.run(&["check"]).ok();
    }
}

/// Test and validation sentences never get the guided prompt, which states their answer:
/// their rationales are features when a model is evaluated. A wrong blind answer is kept.
#[test]
fn test_and_validation_sentences_are_never_told_their_answer() {
    for split in ["test", "val"] {
        let env = TestEnv::new();
        let f = env.write("c.csv", CORPUS);
        env.run(&["ingest", s(&f), "--split", split]).ok();
        let server = DevServer::start(
            Behaviour {
                answer: AnswerMode::WrongUnlessGuided,
                ..Behaviour::default()
            }
            .with_gold(gold()),
        )
        .unwrap();
        let j = annotate(&env, &server, &["--split", split]).ok().json();
        assert_eq!(j["accepted"], 4, "{split}: {j}");
        assert_eq!(j["guided"], 0, "{split}: {j}");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 4, "{split}");
        assert!(
            reqs.iter()
                .all(|r| !r.guided && !r.body.contains(",答案为")),
            "{split}"
        );
        for id in 1..=4 {
            let show = env.run(&["--json", "show", &id.to_string()]).ok().json();
            assert_eq!(show["split"], split);
            let k = &show["knowledge"][0];
            assert_eq!(k["prompt_kind"], "blind", "{split}");
            assert_ne!(
                k["asserted"], show["labels"],
                "{split}: the wrong blind answer is kept"
            );
        }
    }
}

#[test]
fn garbage_is_counted_and_never_stored_as_knowledge() {
    // A 200 with an HTML body (retried, then left for a rerun: exit 2, nothing recorded), and
    // JSON whose answer names no label (recorded as missing, exit 0).
    for (fault, kind, code, missing) in [
        (Fault::NotJson, "failed_bad_response", 2, 0),
        (Fault::NoLabel, "failed_no_label", 0, 4),
    ] {
        let env = env();
        let server = DevServer::start(Behaviour {
            always: Some(fault.clone()),
            ..Behaviour::default()
        })
        .unwrap();
        let j = annotate(&env, &server, &["--max-guided", "1"])
            .code(code)
            .json();
        assert_eq!(
            (j["accepted"].as_u64(), j["failed"].as_u64()),
            (Some(0), Some(4)),
            "{j}"
        );
        assert_eq!(j[kind], 4, "{fault:?}: {j}");
        let st = env.stats();
        let count = |k: &str| st["sources"]["mock-qwen"][k].as_u64().unwrap_or(0);
        assert_eq!((count("records"), count("missing")), (0, missing), "{st}");
        env.run(&["query", "--source", "mock-qwen"]).code(1);
    }
}

#[test]
fn unusable_answers_are_counted_never_stored_and_a_rerun_adds_nothing() {
    let env = env();
    let server = DevServer::start(Behaviour {
        always: Some(Fault::NoLabel),
        ..Behaviour::default()
    })
    .unwrap();
    let j = annotate(&env, &server, &["--max-guided", "1"]).ok().json();
    assert_eq!(
        (j["accepted"].as_u64(), j["failed"].as_u64()),
        (Some(0), Some(4)),
        "{j}"
    );
    let st = env.stats();
    assert_eq!(st["sources"]["mock-qwen"]["records"], 0);
    assert_eq!(st["sources"]["mock-qwen"]["missing"], 4);
    // The same source again: everything was tried, nothing is re-sent.
    let before = server.request_count();
    annotate(&env, &server, &[]).ok();
    assert_eq!(server.request_count(), before);

    // A good server and --retry-failed: answered now, no duplicates.
    let good = DevServer::start(Behaviour::default().with_gold(gold())).unwrap();
    annotate(&env, &good, &["--retry-failed"]).ok();
    annotate(&env, &good, &["--retry-failed"]).ok();
    let st = env.stats();
    assert_eq!(st["sources"]["mock-qwen"]["records"], 4);
    assert_eq!(st["sources"]["mock-qwen"]["missing"], 0);
    assert_eq!(good.request_count(), 4, "the second run had nothing to do");
}

#[test]
fn a_bad_key_stops_with_a_clear_message_that_hides_the_key() {
    let env = env();
    let server = DevServer::start(Behaviour {
        require_key: Some("another-key".into()),
        echo_key_in_errors: true,
        ..Behaviour::default()
    })
    .unwrap();
    let r = annotate(&env, &server, &[]).code(2);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(KEY) && !r.stdout.contains(KEY),
        "{}",
        r.stderr
    );
    // Workers already in flight may each have sent one request; none is retried.
    let reqs = server.requests();
    assert!(reqs.len() <= 4, "{} requests", reqs.len());
    let mut sentences: Vec<_> = reqs.iter().filter_map(|r| r.sentence.clone()).collect();
    sentences.sort();
    sentences.dedup();
    assert_eq!(sentences.len(), reqs.len(), "a 401 is not retried");
    assert_eq!(
        env.stats()["sources"].as_object().map_or(0, |m| m.len()),
        0,
        "nothing stored"
    );
}

/// kill -9 part-way through annotation keeps the answers already stored (at least one, not
/// all: the kill landed mid-run, retried at other moments until it does, bounded), and a rerun
/// asks only for the rest, without duplicates.
#[test]
fn a_killed_run_resumes_without_duplicates() {
    let mut csv = String::from("ID,Text,Labels\n");
    let mut pairs = Vec::new();
    for i in 1..=40 {
        csv.push_str(&format!("{i},句子 编号 {i},['Joy']\n"));
        pairs.push((format!("句子 编号 {i}"), "Joy".parse().unwrap()));
    }
    let server = DevServer::start(
        Behaviour {
            latency_ms: 100,
            ..Behaviour::default()
        }
        .with_gold(pairs),
    )
    .unwrap();
    let url = server.base_url();
    let mut tried = Vec::new();
    for delay_ms in [900u64, 500, 1400, 300, 2000] {
        let env = TestEnv::new();
        let f = env.write("c.csv", &csv);
        env.run(&["ingest", s(&f), "--test-rows", "0", "--val-fraction", "0"])
            .ok();
        let finished = env.run_killed_after(
            &[
                "-q",
                "annotate",
                "--endpoint",
                &url,
                "--model",
                "m",
                "--jobs",
                "2",
            ],
            Duration::from_millis(delay_ms),
        );
        let partial = env.stats()["sources"]["m"]["records"].as_u64().unwrap_or(0);
        tried.push((delay_ms, partial));
        if finished || partial == 0 || partial == 40 {
            continue;
        }
        env.run(&["check"]).ok();
        let j = env
            .run(&[
                "--json",
                "annotate",
                "--endpoint",
                &url,
                "--model",
                "m",
                "--jobs",
                "8",
            ])
            .ok()
            .json();
        assert_eq!(j["accepted"].as_u64().unwrap(), 40 - partial);
        assert_eq!(env.stats()["sources"]["m"]["records"], 40);
        env.run(&["check"]).ok();
        return;
    }
    panic!("no kill landed mid-run (delay ms, answers stored): {tried:?}");
}

#[test]
fn llama_factory_export_then_import_round_trip() {
    let env = env();
    let server = DevServer::start(Behaviour::default().with_gold(gold())).unwrap();
    annotate(&env, &server, &["--limit", "3"]).ok();
    let out = env.path("lf");
    for format in ["alpaca", "sharegpt"] {
        let j = env
            .run(&[
                "--json",
                "export",
                "llama-factory",
                "--out",
                s(&out),
                "--source",
                "mock-qwen",
                "--format",
                format,
                "--name",
                format,
                "--predict-split",
                "train",
            ])
            .ok()
            .json();
        assert_eq!(j["train_rows"], 3);
        assert_eq!(j["predict_rows"], 4);
        let rows: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("{format}_train.json"))).unwrap(),
        )
        .unwrap();
        let row = &rows[0];
        match format {
            "alpaca" => {
                assert!(row["system"]
                    .as_str()
                    .unwrap()
                    .starts_with("情绪文本分类任务"));
                assert_eq!(
                    row["history"][0][0],
                    "５０ 年 遇 大雪 阻断 无数 游子 回家 归途 也 影响 正常 上下班"
                );
                assert!(row["output"]
                    .as_str()
                    .unwrap()
                    .starts_with("这段评论包含以下分类"));
            }
            _ => {
                let turns = row["conversations"].as_array().unwrap();
                assert_eq!(turns.len(), 4, "few-shot pair + sentence + answer");
                assert_eq!(turns[0]["from"], "human");
                assert_eq!(turns[3]["from"], "gpt");
            }
        }
    }
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset_info.json")).unwrap()).unwrap();
    assert_eq!(info["alpaca_train"]["file_name"], "alpaca_train.json");
    assert_eq!(info["sharegpt_predict"]["formatting"], "sharegpt");

    // LLaMA-Factory's predict run writes one line per prediction row, in order.
    let ids = std::fs::read_to_string(out.join("alpaca_predict.ids")).unwrap();
    let mut lines = String::new();
    for (i, _) in ids.lines().enumerate() {
        let predict = if i == 1 {
            "nan".to_string()
        } else {
            "这段评论包含以下分类:\\nSurprise\\n\\n理由:\\n\\n出乎意料。".to_string()
        };
        lines.push_str(&format!(
            "{{\"label\": \"\", \"predict\": \"{predict}\"}}\n"
        ));
    }
    let preds = env.write("generated_predictions.jsonl", lines);
    let ids_file = out.join("alpaca_predict.ids");
    let j = env
        .run(&[
            "--json",
            "knowledge",
            "import",
            s(&preds),
            "--source",
            "lora",
            "--field",
            "predict",
            "--ids",
            s(&ids_file),
        ])
        .ok()
        .json();
    assert_eq!(
        (j["imported"].as_u64(), j["missing"].as_u64()),
        (Some(3), Some(1))
    );
    let first: u64 = ids.lines().next().unwrap().parse().unwrap();
    let show = env.run(&["--json", "show", &first.to_string()]).ok().json();
    let k = show["knowledge"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["source"] == "lora")
        .unwrap();
    assert_eq!(k["asserted"], serde_json::json!(["Surprise"]));
    assert_eq!(k["sanitized"], "。", "出乎意料 is a Surprise word");

    // A predict run with `max_samples: 2` writes the export's first two rows, each line with
    // the prompt it rendered: imported as a prefix (issue 29: it was refused as "another
    // export"). A line whose prompt is not its id's sentence, or more lines than ids, is not.
    let texts: Vec<String> = (ids.lines())
        .map(|id| {
            let show = env.run(&["--json", "show", id]).ok().json();
            show["text"].as_str().unwrap().to_string()
        })
        .collect();
    let line = |text: &str| {
        let prompt = serde_json::json!(format!("情绪文本分类任务……\n{text}\n"));
        format!("{{\"prompt\": {prompt}, \"label\": \"\", \"predict\": \"这段评论包含以下分类:\\nJoy\\n\\n理由:\\n\\n好。\"}}\n")
    };
    let import = |lines: String| {
        let preds = env.write("prefix.jsonl", lines);
        env.run(&[
            "knowledge",
            "import",
            s(&preds),
            "--source",
            "lora-prefix",
            "--field",
            "predict",
            "--ids",
            s(&ids_file),
        ])
    };
    import(texts[..2].iter().map(|t| line(t)).collect())
        .ok()
        .stdout_has("first 2 of the export's 4 rows");
    let r = import(line(&texts[0]) + &line(&texts[0]))
        .code(2)
        .stderr_has(":2:")
        .stderr_has("does not hold the sentence");
    assert_eq!(
        r.stderr.matches(s(&env.path("prefix.jsonl"))).count(),
        1,
        "the path once: {}",
        r.stderr
    );
    import(texts.iter().chain(&texts[..1]).map(|t| line(t)).collect())
        .code(2)
        .stderr_has("5 prediction lines but only 4 ids");
}
