//! LLM client gaps (reliability issue, item 4), against a real chat-completions server on
//! 127.0.0.1: garbage 200s are retried and never recorded as unusable, a 400 stops the run
//! (README: "other 4xx stop the run with a clear message"), long waits are announced and
//! interruptible, and credentials inside `--endpoint` are never printed nor stored.

use crate::util::{s, Run, TestEnv};
use emoknow::labels::LabelSet;
use emoknow::testkit::devserver::{Behaviour, DevServer, Fault};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CORPUS: &str = "ID,Text,Labels
1,我 很 担忧 孩子 的 未来,\"['Anxiety', 'Love']\"
2,现在 好 终于 如愿以偿,['Joy']
3,这种 行为 令人 厌恶,\"['Hate', 'Anger']\"
4,期待 明天 的 比赛,['Expect']
";

fn gold(csv: &str) -> Vec<(String, LabelSet)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let (_, rest) = l.split_once(',').unwrap();
            let (text, labels) = rest.split_once(',').unwrap();
            (text.to_string(), labels.parse().unwrap())
        })
        .collect()
}

fn env_with(csv: &str) -> TestEnv {
    let env = TestEnv::new();
    let f = env.write("c.csv", csv);
    env.run(&["ingest", s(&f), "--test-rows", "0", "--val-fraction", "0"])
        .ok();
    env
}

/// A corpus of `n` sentences, all Joy.
fn corpus(n: usize) -> String {
    let mut csv = String::from("ID,Text,Labels\n");
    for i in 1..=n {
        csv.push_str(&format!("{i},句子 编号 {i} 很 开心,['Joy']\n"));
    }
    csv
}

/// `annotate --endpoint URL --model m` plus `extra`, collected.
fn annotate_at(env: &TestEnv, url: &str, extra: &[&str]) -> Run {
    let mut args = vec!["annotate", "--endpoint", url, "--model", "m"];
    args.extend_from_slice(extra);
    env.run(&args)
}

fn stats_of(env: &TestEnv) -> (u64, u64) {
    let st = env.stats();
    let src = &st["sources"]["m"];
    (
        src["records"].as_u64().unwrap_or(0),
        src["missing"].as_u64().unwrap_or(0),
    )
}

fn requests_about(server: &DevServer, sentence: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.sentence.as_deref() == Some(sentence))
        .count()
}

#[test]
fn garbage_200s_are_retried_and_every_sentence_is_annotated_in_the_end() {
    let csv = corpus(100);
    let env = env_with(&csv);
    let server = DevServer::start(
        Behaviour {
            random_faults: vec![Fault::NotJson, Fault::Truncated, Fault::NoChoices],
            random_fault_rate: 0.2,
            random_seed: 42,
            ..Behaviour::default()
        }
        .with_gold(gold(&csv)),
    )
    .unwrap();
    let url = server.base_url();
    let mut runs = 0;
    loop {
        runs += 1;
        let r = annotate_at(&env, &url, &["--json", "--jobs", "4", "--retries", "3"]);
        // Garbage is never recorded as an unusable answer, whatever the run's outcome.
        assert_eq!(
            stats_of(&env).1,
            0,
            "garbage recorded as missing\n{}",
            r.stderr
        );
        if r.code == 0 {
            break;
        }
        // Garbage that outlived the retries fails the run, and says a rerun retries it.
        let r = r.code(2).stderr_has("rerun");
        assert!(r.json()["failed_bad_response"].as_u64().unwrap() > 0);
        assert!(runs < 5, "five runs did not finish the job\n{}", r.stderr);
    }
    assert_eq!(stats_of(&env), (100, 0));
    let garbage = server
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert!(
        garbage >= 10,
        "the server sent only {garbage} garbage answers"
    );
    env.run(&["check"]).ok();
}

#[test]
fn failures_that_outlive_the_retries_fail_the_run_and_a_rerun_retries_them() {
    for fault in [
        Fault::NotJson,
        Fault::Truncated,
        Fault::NoChoices,
        Fault::Status(503),
    ] {
        let env = env_with(CORPUS);
        let bad = DevServer::start(Behaviour {
            always: Some(fault.clone()),
            ..Behaviour::default()
        })
        .unwrap();
        let r = annotate_at(&env, &bad.base_url(), &["--json", "--retries", "1"])
            .code(2)
            .stderr_has("4 sentence")
            .stderr_has("rerun");
        let j = r.json();
        assert_eq!(j["failed"], 4, "{fault:?}: {j}");
        assert_eq!(j["accepted"], 0, "{fault:?}: {j}");
        assert_eq!(
            bad.request_count(),
            8,
            "{fault:?}: each sentence tried twice"
        );
        assert_eq!(stats_of(&env), (0, 0), "{fault:?}: nothing recorded");

        // The same command against a working server finishes the job, without --retry-failed.
        let good = DevServer::start(Behaviour::default().with_gold(gold(CORPUS))).unwrap();
        let j = annotate_at(&env, &good.base_url(), &["--json"]).ok().json();
        assert_eq!(j["accepted"], 4, "{fault:?}: {j}");
        assert_eq!(stats_of(&env), (4, 0));
    }
}

#[test]
fn a_4xx_stops_the_run_with_the_status_and_the_servers_words_keeping_what_is_done() {
    for status in [400u16, 422] {
        let env = env_with(CORPUS);
        let g = gold(CORPUS);
        let third = g[2].0.clone();
        let server = DevServer::start(
            Behaviour {
                fault_for: [(third.clone(), Fault::Status(status))].into(),
                ..Behaviour::default()
            }
            .with_gold(g.clone()),
        )
        .unwrap();
        let r = annotate_at(&env, &server.base_url(), &["--jobs", "1"]).code(2);
        let r = r
            .stderr_has(&format!("HTTP {status}"))
            .stderr_has(&format!("devserver injected HTTP {status}"))
            .stderr_has("2 answers kept");
        assert!(!r.stdout.contains("accepted"), "{}", r.stdout);
        assert_eq!(
            requests_about(&server, &third),
            1,
            "a {status} is not retried"
        );
        assert_eq!(requests_about(&server, &g[3].0), 0, "the run stopped");
        assert_eq!(stats_of(&env), (2, 0), "what was done is kept");
        env.run(&["check"]).ok();
    }
}

#[test]
fn a_refused_sentence_is_recorded_as_missing_and_the_run_goes_on() {
    let env = env_with(CORPUS);
    let g = gold(CORPUS);
    let third = g[2].0.clone();
    let server = DevServer::start(
        Behaviour {
            fault_for: [(third.clone(), Fault::Refuse)].into(),
            ..Behaviour::default()
        }
        .with_gold(g.clone()),
    )
    .unwrap();
    let j = annotate_at(&env, &server.base_url(), &["--json"])
        .ok()
        .json();
    assert_eq!(
        (j["accepted"].as_u64(), j["failed_refused"].as_u64()),
        (Some(3), Some(1)),
        "{j}"
    );
    assert_eq!(
        requests_about(&server, &third),
        1,
        "a refusal is not retried"
    );
    assert_eq!(stats_of(&env), (3, 1));
    // A rerun skips it; --retry-failed asks again.
    annotate_at(&env, &server.base_url(), &[]).ok();
    assert_eq!(requests_about(&server, &third), 1);
    let good = DevServer::start(Behaviour::default().with_gold(g)).unwrap();
    annotate_at(&env, &good.base_url(), &["--retry-failed"]).ok();
    assert_eq!(stats_of(&env), (4, 0));
}

#[test]
fn a_retry_after_of_a_few_seconds_is_announced_on_stderr() {
    let env = env_with(CORPUS);
    let server = DevServer::start(
        Behaviour {
            faults: vec![Fault::RateLimit {
                retry_after: Some("3".into()),
            }],
            ..Behaviour::default()
        }
        .with_gold(gold(CORPUS)),
    )
    .unwrap();
    let host = server.addr().to_string();
    let r = annotate_at(&env, &server.base_url(), &["--limit", "1"]).ok();
    let r = r
        .stderr_has(&format!(
            "waiting 3 s (Retry-After from {host}, HTTP 429) before retrying item 1"
        ))
        .stderr_has("Ctrl-C stops, rerun resumes");
    assert!(r.stdout.contains("accepted 1"), "{}", r.stdout);
    // -q keeps stderr quiet.
    let r = annotate_at(&env, &server.base_url(), &["-q", "--limit", "1"]).ok();
    assert!(!r.stderr.contains("waiting"), "{}", r.stderr);
    assert_eq!(stats_of(&env).0, 2);
}

#[test]
fn a_retry_after_beyond_max_wait_stops_the_run_instead_of_sleeping() {
    let env = env_with(CORPUS);
    let server = DevServer::start(Behaviour {
        always: Some(Fault::RateLimit {
            retry_after: Some("3600".into()),
        }),
        ..Behaviour::default()
    })
    .unwrap();
    annotate_at(&env, &server.base_url(), &["--jobs", "2"])
        .code(2)
        .stderr_has("3600 s")
        .stderr_has("--max-wait 300")
        .stderr_has("HTTP 429");
    assert!(
        server.request_count() <= 2,
        "{} requests",
        server.request_count()
    );
    assert_eq!(stats_of(&env), (0, 0));
}

#[test]
fn ctrl_c_interrupts_a_long_wait_at_once() {
    let env = env_with(CORPUS);
    // Four minutes: within the default --max-wait, so the client waits.
    let server = DevServer::start(Behaviour {
        always: Some(Fault::RateLimit {
            retry_after: Some("240".into()),
        }),
        ..Behaviour::default()
    })
    .unwrap();
    let url = server.base_url();
    let mut child = env
        .cmd(&[
            "annotate",
            "--endpoint",
            &url,
            "--model",
            "m",
            "--jobs",
            "1",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if line.contains("waiting") {
                let _ = tx.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Generous bounds: these only keep a broken build from hanging the suite for an hour.
    let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("no wait was announced:\n{}", reader.join().unwrap());
    };
    assert!(
        line.contains("Retry-After") && line.contains("HTTP 429") && line.contains("item 1"),
        "{line}"
    );
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("Ctrl-C did not end the wait");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert_eq!(
        server.request_count(),
        1,
        "the wait was not cut short by a retry"
    );
    env.run(&["check"]).ok();
}

#[test]
fn credentials_in_the_endpoint_are_never_printed_nor_stored() {
    const PASS: &str = "Pa55-w0rd-XYZ-771";
    const USER: &str = "emoknow-user-93";
    let env = env_with(CORPUS);
    let good = DevServer::start(Behaviour::default().with_gold(gold(CORPUS))).unwrap();
    let wrong_model = DevServer::start(Behaviour {
        models: Some(vec!["other".into()]),
        ..Behaviour::default()
    })
    .unwrap();
    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let with_creds =
        |addr: std::net::SocketAddr, path: &str| format!("http://{USER}:{PASS}@{addr}{path}");
    let mut runs = vec![
        // Answered: the credentials reach the server (as Basic auth), nowhere else.
        annotate_at(&env, &with_creds(good.addr(), "/v1"), &["--limit", "2"]).ok(),
        annotate_at(
            &env,
            &with_creds(good.addr(), "/v1"),
            &["--json", "--limit", "1"],
        )
        .ok(),
        // Wrong path (404), unknown model, nothing listening, not http: errors naming the URL.
        annotate_at(&env, &with_creds(good.addr(), "/nope/v1"), &[])
            .code(2)
            .stderr_has("***@"),
        annotate_at(&env, &with_creds(wrong_model.addr(), "/v1"), &[])
            .code(2)
            .stderr_has("***@"),
        annotate_at(
            &env,
            &with_creds(closed, "/v1"),
            &["--retries", "0", "--jobs", "1"],
        )
        .code(2)
        .stderr_has("***@"),
        annotate_at(&env, &format!("ftp://{USER}:{PASS}@{closed}/v1"), &[]).code(2),
    ];
    runs.push(annotate_at(
        &env,
        &with_creds(closed, "/v1"),
        &["--json", "--retries", "0"],
    ));
    for r in &runs {
        for out in [&r.stdout, &r.stderr] {
            assert!(
                !out.contains(PASS) && !out.contains(USER),
                "credentials printed by `emoknow {}`:\n{}",
                r.args.join(" "),
                out
            );
        }
    }
    assert_eq!(stats_of(&env).0, 3);
    let auth = good.requests()[0]
        .header("authorization")
        .map(str::to_string);
    assert!(
        auth.as_deref().is_some_and(|a| a.starts_with("Basic ")),
        "{auth:?}"
    );
    // Not in any byte of the store either.
    fn walk(dir: &std::path::Path, needles: &[&str]) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, needles);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                for n in needles {
                    assert!(
                        !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                        "{n} is in {}",
                        p.display()
                    );
                }
            }
        }
    }
    walk(&env.store(), &[PASS, USER]);
}
