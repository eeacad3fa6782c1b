//! Model directories are protected (reliability issue, item 3, and item 6's `predict` line):
//! an ensemble cannot overwrite or contain itself, loads are bounded, a retrain killed at any
//! moment leaves the old model or the new one whole, hand-edited `meta.json` files are
//! refused with the file named, and `predict` says when it knows no word of a text.

use crate::model_cli::{setup, Setup};
use crate::util::{s, Run, TestEnv};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Address space a model load in these tests may use: far above what they need, far below
/// what an unbounded load takes (the self-referential ensemble took 23 GB).
const MEMORY_LIMIT: u64 = 4 << 30;

/// Runs `cmd` with its address space limited to [`MEMORY_LIMIT`].
fn run_limited(mut cmd: Command, args: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMORY_LIMIT as libc::rlim_t,
                rlim_max: MEMORY_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run emoknow");
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `env.run` under the memory limit.
fn run_bounded(env: &TestEnv, args: &[&str]) -> Run {
    run_limited(env.cmd(args), args)
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &serde_json::Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// Every file under `dir` with its bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `train --classifier ensemble --member M… --out OUT`.
fn ensemble_args<'a>(members: &[&'a Path], out: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["train", "--classifier", "ensemble"];
    for m in members {
        args.extend(["--member", s(m)]);
    }
    args.extend(["--out", s(out)]);
    args
}

fn train_linear(env: &TestEnv, out: &Path, extra: &[&str]) {
    let mut args = vec!["train", "--classifier", "linear", "--out", s(out)];
    args.extend_from_slice(extra);
    env.run(&args).ok();
}

#[test]
fn an_ensemble_cannot_overwrite_or_contain_its_members() {
    let Setup { env, encoder } = setup();
    let a = env.path("models/a");
    let b = env.path("models/b");
    train_linear(&env, &a, &[]);
    train_linear(&env, &b, &["--c", "0.5"]);
    let a_files = snapshot(&a);
    let a_val = env
        .run(&["--json", "eval", "--model", s(&a), "--split", "val"])
        .ok()
        .json();

    // --out is a member: refused, the member untouched.
    run_bounded(&env, &ensemble_args(&[&a, &b], &a))
        .code(2)
        .stderr_has("is --member")
        .stderr_has("would overwrite the member");
    assert_eq!(snapshot(&a), a_files, "model a was modified");
    let again = run_bounded(
        &env,
        &["--json", "eval", "--model", s(&a), "--split", "val"],
    )
    .ok()
    .json();
    assert_eq!(again, a_val);

    // --out inside a member, or holding one.
    let inside = a.join("ens");
    env.run(&ensemble_args(&[&a, &b], &inside))
        .code(2)
        .stderr_has("is inside --member");
    assert!(!inside.exists());
    let models = env.path("models");
    env.run(&ensemble_args(&[&a, &b], &models))
        .code(2)
        .stderr_has("holds --member");
    assert_eq!(snapshot(&a), a_files, "model a was modified");

    // The same member twice (also spelled differently), and too few members.
    let a_other = env.path("models/../models/a");
    env.run(&ensemble_args(&[&a, &a_other], &env.path("models/twice")))
        .code(2)
        .stderr_has("given twice");
    let empty = env.path("models/empty");
    env.run(&["train", "--classifier", "ensemble", "--out", s(&empty)])
        .code(2)
        .stderr_has("at least two --member");
    assert!(!empty.exists(), "a refused train left {}", empty.display());
    env.run(&[
        "train",
        "--classifier",
        "linear",
        "--member",
        s(&a),
        "--out",
        s(&env.path("models/lin")),
    ])
    .code(2)
    .stderr_has("--member is not read by --classifier linear: it is for ensemble");

    // A member that is an ensemble reading --out: the new ensemble would contain itself.
    let e = env.path("models/e");
    env.run(&ensemble_args(&[&a, &b], &e)).ok();
    run_bounded(&env, &ensemble_args(&[&e, &b], &a))
        .code(2)
        .stderr_has("contain itself");
    assert_eq!(snapshot(&a), a_files, "model a was modified");
    run_bounded(&env, &["eval", "--model", s(&e)]).ok();

    // --out may not replace the encoder directory either, nor a directory that is no model.
    let encoder_files = snapshot(&encoder);
    env.run(&[
        "train",
        "--classifier",
        "finetune",
        "--encoder-dir",
        s(&encoder),
        "--epochs",
        "1",
        "--max-len",
        "16",
        "--out",
        s(&encoder),
    ])
    .code(2)
    .stderr_has("would replace --encoder-dir");
    assert_eq!(
        snapshot(&encoder),
        encoder_files,
        "the encoder was modified"
    );
    let notes = env.write("models/notes/readme.txt", "mine");
    train_linear_refused(&env, &env.path("models/notes"), "not an emoknow model");
    assert_eq!(std::fs::read_to_string(notes).unwrap(), "mine");
}

/// An ensemble pins each member by the SHA-256 of its `meta.json`: a member retrained since
/// (even with the same settings) is refused by every command that loads the ensemble, naming
/// the member and the fix, and the ensemble trained again over it loads.
#[test]
fn an_ensemble_refuses_a_member_retrained_since() {
    let Setup { env, .. } = setup();
    let (a, b, e) = (
        env.path("models/a"),
        env.path("models/b"),
        env.path("models/e"),
    );
    train_linear(&env, &a, &[]);
    train_linear(&env, &b, &["--c", "0.5"]);
    let ensemble = |env: &TestEnv| {
        env.run(&ensemble_args(&[&a, &b], &e)).ok();
    };
    ensemble(&env);
    let before = env
        .run(&["--json", "eval", "--model", s(&e), "--split", "val"])
        .ok()
        .json();

    train_linear(&env, &a, &[]);
    let e_meta = e.join("meta.json");
    let a_name = s(&a).to_string();
    for args in [
        vec!["eval", "--model", s(&e), "--split", "val"],
        vec!["predict", "--model", s(&e), "我 很 担心 明天 的 考试"],
        vec!["model", "verify", s(&e)],
    ] {
        let r = env.run(&args).code(2);
        r.stderr_has("has changed since this ensemble was trained")
            .stderr_has(&a_name)
            .stderr_has(s(&e_meta))
            .stderr_has("train the ensemble again");
    }
    // The untouched member is not the one named.
    let r = env
        .run(&["eval", "--model", s(&e), "--split", "val"])
        .code(2);
    assert!(
        !r.stderr.contains(&format!("member {}", s(&b))),
        "{}",
        r.stderr
    );

    // Trained again over the new member, it loads; a linear retrained with the same settings
    // scores as before.
    ensemble(&env);
    let after = env
        .run(&["--json", "eval", "--model", s(&e), "--split", "val"])
        .ok()
        .json();
    assert!(before["micro_f1"].is_f64(), "{before}");
    assert_eq!(after, before);
}

fn train_linear_refused(env: &TestEnv, out: &Path, needle: &str) {
    env.run(&["train", "--classifier", "linear", "--out", s(out)])
        .code(2)
        .stderr_has(needle);
}

#[test]
fn a_self_referential_or_empty_ensemble_is_refused_at_load_with_bounded_memory() {
    let Setup { env, .. } = setup();
    let a = env.path("models/a");
    let b = env.path("models/b");
    let e = env.path("models/e");
    let f = env.path("models/f");
    train_linear(&env, &a, &[]);
    train_linear(&env, &b, &["--c", "0.5"]);
    for out in [&e, &f] {
        env.run(&ensemble_args(&[&a, &b], out)).ok();
    }
    let meta = e.join("meta.json");
    let original = read_json(&meta);
    let with_members = |m: serde_json::Value| {
        let mut v = original.clone();
        v["members"] = m;
        write_json(&meta, &v);
    };
    let eval = |needle: &str| {
        run_bounded(&env, &["eval", "--model", s(&e)])
            .code(2)
            .stderr_has("meta.json")
            .stderr_has(needle);
    };

    // Itself, by a relative and by an absolute path.
    with_members(serde_json::json!([".", s(&a)]));
    eval("is this ensemble itself");
    with_members(serde_json::json!([s(&a), s(&e)]));
    eval("cannot contain itself");
    // Two ensembles containing each other.
    with_members(serde_json::json!([s(&a), s(&f)]));
    let mut fv = read_json(&f.join("meta.json"));
    fv["members"] = serde_json::json!([s(&b), "../e"]);
    write_json(&f.join("meta.json"), &fv);
    eval("cannot contain itself");
    run_bounded(&env, &["predict", "--model", s(&f), "担心"])
        .code(2)
        .stderr_has("cannot contain itself");
    // No members, the same member twice, a member that is gone.
    with_members(serde_json::json!([]));
    eval("no \"members\"");
    with_members(serde_json::json!([s(&a), "../a"]));
    eval("listed twice");
    with_members(serde_json::json!([s(&a), "../gone"]));
    eval("gone");
    // Restored, it loads again.
    write_json(&meta, &original);
    run_bounded(&env, &["eval", "--model", s(&e)]).ok();
}

#[test]
fn hand_edited_meta_json_is_refused_with_the_file_named() {
    let Setup { env, .. } = setup();
    let a = env.path("models/a");
    let b = env.path("models/b");
    train_linear(&env, &a, &[]);
    train_linear(&env, &b, &["--c", "0.05"]);
    let meta = a.join("meta.json");
    let original = std::fs::read(&meta).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let edited = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut w = v.clone();
        f(&mut w);
        write_json(&meta, &w);
    };
    let refused = |needle: &str| {
        for cmd in ["eval", "predict"] {
            let mut args = vec![cmd, "--model", s(&a)];
            if cmd == "predict" {
                args.push("担心 考试");
            }
            run_bounded(&env, &args)
                .code(2)
                .stderr_has(s(&meta))
                .stderr_has(needle);
        }
    };

    edited(&|w| w["labels"][0] = "Happy".into());
    refused("unknown label \"Happy\"");
    edited(&|w| w["labels"].as_array_mut().unwrap().swap(0, 1));
    refused("in that order");
    edited(&|w| w["labels"].as_array_mut().unwrap().pop().map(drop).unwrap());
    refused("in that order");
    edited(&|w| w["thresholds"]["per_label"][2] = 1.5.into());
    refused("the threshold of Anxiety is 1.5, outside [0, 1]");
    edited(&|w| w["thresholds"]["per_label"][0] = (-0.1).into());
    refused("outside [0, 1]");
    // Seven thresholds.
    edited(&|w| {
        w["thresholds"]["per_label"]
            .as_array_mut()
            .unwrap()
            .pop()
            .map(drop)
            .unwrap()
    });
    refused("not an emoknow model");
    // Too large for an f32: reads as infinity.
    {
        let mut w = v.clone();
        w["thresholds"]["per_label"][1] = serde_json::json!(0.123456);
        let text = serde_json::to_string_pretty(&w)
            .unwrap()
            .replacen("0.123456", "1e39", 1);
        std::fs::write(&meta, text).unwrap();
        refused("the threshold of Joy is inf");
    }
    edited(&|w| w["kind"] = "forest".into());
    refused("unknown variant");
    edited(&|w| w["linear"] = serde_json::Value::Null);
    refused("without its \"linear\" settings");
    edited(&|w| w["attach"]["neighbours_k"] = 1_000_000_000_000u64.into());
    refused("neighbours_k");
    std::fs::write(&meta, &original[..original.len() / 2]).unwrap();
    refused("not an emoknow model");
    // A meta.json far larger than any real one is not read at all.
    {
        let mut big = original.clone();
        big.truncate(big.len() - 2);
        big.extend(std::iter::repeat_n(b' ', 70 << 20));
        big.extend_from_slice(b"}\n");
        std::fs::write(&meta, big).unwrap();
        refused("at most 64 MB is read");
    }

    // Weights of another model under this meta.json.
    std::fs::write(&meta, &original).unwrap();
    let weights = a.join("weights.safetensors");
    let own = std::fs::read(&weights).unwrap();
    std::fs::copy(b.join("weights.safetensors"), &weights).unwrap();
    run_bounded(&env, &["eval", "--model", s(&a)])
        .code(2)
        .stderr_has(s(&weights))
        .stderr_has("mixes two models");
    std::fs::write(&weights, own).unwrap();
    env.run(&["eval", "--model", s(&a)]).ok();
}

/// What a model directory holds: every file's bytes, `meta.json` without the fields that
/// differ between two runs of the same training (time taken, creation time).
fn model_state(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot(dir)
        .into_iter()
        .map(|(p, bytes)| {
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if rel == Path::new("meta.json") {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("train_secs");
                o.remove("created_at");
                (rel, serde_json::to_vec(&v).unwrap())
            } else {
                (rel, bytes)
            }
        })
        .collect()
}

/// The staging directories a train into `<parent>/<name>` has, or left.
fn leftovers(parent: &Path, name: &str) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_string_lossy().into_owned();
            f.starts_with(&format!("{name}.tmp-")) || f.starts_with(&format!("{name}.old-"))
        })
        .collect()
}

/// Whether the retrain has written part of its new model: new stacked-linear weights in the
/// model directory itself, or anywhere in a staging directory next to it.
fn new_weights_written(m: &Path, old_stack: &[u8]) -> bool {
    let stack = m.join("stack-linear/weights.safetensors");
    if std::fs::read(&stack).is_ok_and(|b| b != old_stack) {
        return true;
    }
    leftovers(m.parent().unwrap(), "m")
        .iter()
        .any(|t| t.join("stack-linear/weights.safetensors").exists())
}

#[test]
fn a_retrain_killed_at_any_moment_leaves_the_old_model_or_the_new_one_whole() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    let old_args = [
        "train",
        "--classifier",
        "frozen",
        "--stack-linear",
        "2",
        "--hidden",
        "8",
        "--epochs",
        "3",
    ];
    // The new model writes its stacked linear model first, then trains its head for a while
    // (one example per step).
    let new_args = [
        "train",
        "--classifier",
        "frozen",
        "--stack-linear",
        "2",
        "--c",
        "0.05",
        "--hidden",
        "64",
        "--epochs",
        "300",
        "--lr",
        "1e-4",
        "--batch",
        "1",
    ];
    let with_out = |args: &[&str], out: &Path| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        v.push("--out".into());
        v.push(s(out).into());
        v
    };
    let run = |args: Vec<String>| env.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let m = env.path("models/m");
    let reference = env.path("models/new");
    let t0 = Instant::now();
    run(with_out(&new_args, &reference)).ok();
    let new_secs = t0.elapsed().as_secs_f64();
    let new_state = model_state(&reference);
    run(with_out(&old_args, &m)).ok();
    let old_state = model_state(&m);
    assert_ne!(old_state, new_state);
    let old_stack = std::fs::read(m.join("stack-linear/weights.safetensors")).unwrap();
    let val = |dir: &Path| {
        env.run(&["--json", "eval", "--model", s(dir), "--split", "val"])
            .ok()
            .json()
    };
    let (old_val, new_val) = (val(&m), val(&reference));

    // Kill the retrain once its new weights are on disk (mid head training), and at a few
    // fixed moments; every time, m is one whole model and evaluates as that model.
    let moments: Vec<Option<f64>> = vec![None, Some(0.0), Some(0.3), Some(0.6), Some(0.9)];
    for moment in moments {
        let mut child = env.spawn_quiet(
            &with_out(&new_args, &m)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let due = match moment {
                None => new_weights_written(&m, &old_stack),
                Some(f) => started.elapsed().as_secs_f64() >= f * new_secs,
            };
            if due {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        child.wait().unwrap();
        let state = model_state(&m);
        let is_old = state == old_state;
        assert!(
            is_old || state == new_state,
            "killed at {moment:?}: the directory m is neither the old model nor the new one: {:?}",
            state
                .iter()
                .map(|(p, b)| (p, old_state.contains(&(p.clone(), b.clone()))))
                .collect::<Vec<_>>()
        );
        assert_eq!(val(&m), if is_old { &old_val } else { &new_val }.clone());
        if !is_old {
            // Put the old model back for the next moment.
            run(with_out(&old_args, &m)).ok();
            assert_eq!(model_state(&m), old_state);
        }
    }
    // A complete retrain gives the new model and cleans what the killed ones left.
    run(with_out(&new_args, &m)).ok();
    assert_eq!(model_state(&m), new_state);
    assert_eq!(leftovers(&env.path("models"), "m"), Vec::<PathBuf>::new());

    // A head that does not fit the encoder meta.json names is refused before predicting.
    let meta = m.join("meta.json");
    let mut v = read_json(&meta);
    v["encoder"]["dim"] = 60_000.into();
    write_json(&meta, &v);
    run_bounded(&env, &["eval", "--model", s(&m)])
        .code(2)
        .stderr_has("does not belong to this meta.json");
}

#[test]
fn predict_warns_when_the_model_knows_no_word_of_the_text() {
    let Setup { env, encoder } = setup();
    let linear = env.path("models/linear");
    let knn = env.path("models/knn");
    let frozen = env.path("models/frozen");
    train_linear(&env, &linear, &[]);
    // Before any embedding: a BM25 kNN model.
    env.run(&["train", "--classifier", "knn", "-k", "5", "--out", s(&knn)])
        .ok();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&[
        "train",
        "--classifier",
        "frozen",
        "--hidden",
        "8",
        "--epochs",
        "3",
        "--out",
        s(&frozen),
    ])
    .ok();
    let long = "a".repeat(100_000);
    for model in [&linear, &knn, &frozen] {
        for text in ["so happy today", "😀😀🎉", long.as_str()] {
            let r = env
                .run(&["--json", "predict", "--model", s(model), text])
                .ok()
                .stderr_has("warning: the text: no known words");
            let j = r.json();
            assert!(
                j[0]["warning"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("no known words")),
                "{}: {j}",
                model.display()
            );
            env.run(&["predict", "--model", s(model), text])
                .ok()
                .stderr_has("no known words");
        }
        // Known words: no warning.
        let r = env
            .run(&["--json", "predict", "--model", s(model), "担心 考试 明天"])
            .ok();
        assert!(!r.stderr.contains("no known words"), "{}", r.stderr);
        assert!(r.json()[0].get("warning").is_none());
    }
    // From stdin, the warning names the line (blank lines count).
    let out = env
        .run_with_stdin(
            &["predict", "--model", s(&linear)],
            "担心 考试\n\nhello world\n",
        )
        .ok();
    let stderr = &out.stderr;
    assert!(
        stderr.contains("warning: stdin line 3: no known words"),
        "{stderr}"
    );
    assert!(!stderr.contains("line 1"), "{stderr}");
}
