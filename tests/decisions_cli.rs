//! Calibrated probabilities and label-set decoding (issue 26), through the real binary on a
//! small corpus whose labels co-occur.

use crate::util::{s, TestEnv};
use serde_json::Value;

/// 400 sentences: cue words point at label sets that co-occur (Love with Joy, Anxiety with
/// Sorrow), with one row in five given a word of another pattern, so probabilities are
/// uncertain and sets are not always whole.
fn corpus() -> String {
    let patterns = [
        ("孩子 开心 笑", "\"['Love', 'Joy']\""),
        ("担心 考试 难过", "\"['Anxiety', 'Sorrow']\""),
        ("担心 明天", "['Anxiety']"),
        ("厌恶 这种 行为", "\"['Hate', 'Anger']\""),
        ("期待 旅行", "['Expect']"),
    ];
    let mut csv = String::from("ID,Text,Labels\n");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in 1..=400usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (w, l) = patterns[i % patterns.len()];
        let noise = if x.is_multiple_of(5) {
            patterns[(x as usize / 5) % patterns.len()]
                .0
                .split(' ')
                .next()
                .unwrap_or("")
        } else {
            ""
        };
        csv.push_str(&format!("{i},{w} {noise} 第{}句,{l}\n", i % 13));
    }
    csv
}

fn store() -> TestEnv {
    let env = TestEnv::new();
    let f = env.write("c.csv", corpus());
    env.run(&[
        "ingest",
        s(&f),
        "--test-rows",
        "80",
        "--val-fraction",
        "0.25",
    ])
    .ok();
    env
}

/// The emotions in canonical order.
const ALL: [&str; 8] = [
    "Love", "Joy", "Anxiety", "Sorrow", "Expect", "Hate", "Surprise", "Anger",
];

/// The emotion names of a JSON label list, in canonical order.
fn names(labels: &Value) -> Vec<&'static str> {
    let given: Vec<&str> = (labels.as_array().unwrap().iter())
        .map(|l| l.as_str().unwrap())
        .collect();
    ALL.iter().copied().filter(|e| given.contains(e)).collect()
}

fn meta(dir: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap()
}

fn eval(env: &TestEnv, model: &std::path::Path) -> Value {
    env.run(&["--json", "eval", "--model", s(model)])
        .ok()
        .json()
}

fn predict(env: &TestEnv, model: &std::path::Path, texts: &str) -> Vec<Value> {
    let r = env.run_with_stdin(
        &["--json", "predict", "--model", s(model), "--explain"],
        texts,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json().as_array().unwrap().clone()
}

const TEXTS: &str = "孩子 开心\n担心 难过 考试\n期待 明天\n厌恶\n";

/// A new model carries its calibration; `eval` reports the ECE before and after it, with a
/// reliability curve per label; calibration changes the probabilities shown but never a
/// thresholded decision (the same model without its calibration, as a model trained before it
/// would be, predicts the same labels); a hand-edited slope that is not positive is refused.
#[test]
fn calibration_is_recorded_reported_and_never_changes_a_thresholded_label() {
    let env = store();
    let m = env.path("linear");
    env.run(&["train", "--out", s(&m)]).ok();
    let j = meta(&m);
    assert_eq!(j["calibration"]["a"].as_array().unwrap().len(), 8, "{j}");
    assert!(j.get("decode").is_none());
    let e = eval(&env, &m);
    let ece = e["calibration"]["ece"].as_f64().unwrap();
    let before = e["uncalibrated_ece"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&ece) && (0.0..=1.0).contains(&before),
        "{e}"
    );
    assert_eq!(e["calibration"]["per_label"].as_array().unwrap().len(), 8);
    let bins = e["calibration"]["per_label"][0]["bins"].as_array().unwrap();
    let n: u64 = bins.iter().map(|b| b["n"].as_u64().unwrap()).sum();
    assert_eq!(n, e["n"].as_u64().unwrap(), "every prediction in one bin");
    let text = env.run(&["eval", "--model", s(&m)]).ok();
    assert!(text.stdout.contains("calibration: ECE"), "{}", text.stdout);

    // The same directory without its calibration.
    let raw = env.path("raw");
    crate::util::copy_dir(&m, &raw);
    let mut j = meta(&raw);
    j.as_object_mut().unwrap().remove("calibration");
    std::fs::write(
        raw.join("meta.json"),
        serde_json::to_vec_pretty(&j).unwrap(),
    )
    .unwrap();
    let with = eval(&env, &m);
    let without = eval(&env, &raw);
    for k in ["exact_match", "micro_f1", "macro_f1", "hamming_accuracy"] {
        assert_eq!(with[k], without[k], "{k}");
    }
    assert_eq!(without["uncalibrated_ece"], without["calibration"]["ece"]);
    let (a, b) = (predict(&env, &m, TEXTS), predict(&env, &raw, TEXTS));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["labels"], y["labels"]);
    }
    assert_ne!(a[0]["probabilities"], b[0]["probabilities"]);

    let mut j = meta(&raw);
    j["calibration"] =
        serde_json::json!({"a": [1, 1, 1, -1, 1, 1, 1, 1], "b": [0, 0, 0, 0, 0, 0, 0, 0]});
    std::fs::write(
        raw.join("meta.json"),
        serde_json::to_vec_pretty(&j).unwrap(),
    )
    .unwrap();
    env.run(&["predict", "--model", s(&raw), "好"])
        .code(2)
        .stderr_has("calibration");
}

/// `--decode sets`: the decoder chosen on validation is stored; every predicted set is a
/// non-empty set, and for the exact-match target it is the most probable of the sets
/// `--explain` lists; an ensemble of calibrated members decodes too; the micro target stores
/// its cut, the expected-F1 target (macro objective) none. A thresholding model lists its most
/// probable sets as well.
#[test]
fn decode_sets_stores_its_decoder_and_predicts_the_most_probable_set() {
    let env = store();
    let exact = env.path("sets");
    env.run(&[
        "train",
        "--decode",
        "sets",
        "--threshold-objective",
        "exact",
        "--out",
        s(&exact),
    ])
    .ok();
    let j = meta(&exact);
    assert_eq!(j["decode"]["target"], "exact", "{j}");
    assert!(j["decode"]["train_sets"]["Love,Joy"].as_u64().unwrap() > 0);
    let e = eval(&env, &exact);
    assert_eq!(e["size_confusion"][0].as_array().unwrap()[0], 0);
    let sizes = e["size_confusion"].as_array().unwrap();
    assert!(
        sizes.iter().all(|row| row[0] == 0),
        "never an empty set: {e}"
    );
    for p in predict(&env, &exact, TEXTS) {
        let sets = p["sets"].as_array().unwrap();
        assert_eq!(sets.len(), 3, "{p}");
        assert_eq!(sets[0]["labels"], p["labels"], "{p}");
        let q: Vec<f64> = sets
            .iter()
            .map(|s| s["probability"].as_f64().unwrap())
            .collect();
        assert!(q[0] >= q[1] && q[1] >= q[2] && q[0] <= 1.0, "{p}");
    }
    let shown = env.run_with_stdin(&["predict", "--model", s(&exact), "--explain"], TEXTS);
    assert!(
        shown.stdout.contains("most probable sets: "),
        "{}",
        shown.stdout
    );

    let micro = env.path("sets_micro");
    env.run(&["train", "--decode", "sets", "--out", s(&micro)])
        .ok();
    let d = &meta(&micro)["decode"];
    assert_eq!(d["target"], "micro", "{d}");
    let cut = d["cut"].as_f64().unwrap();
    assert!((0.2..=0.5).contains(&cut), "{d}");
    let e = eval(&env, &micro);
    let sizes = e["size_confusion"].as_array().unwrap();
    assert!(sizes.iter().all(|row| row[0] == 0), "never empty: {e}");
    // `--explain` shows what decides: each label's probability under the sets, and the cut
    // the labels exceed (or, when none does, the most probable set).
    for p in predict(&env, &micro, TEXTS) {
        let under = &p["under_sets"];
        assert!((under["cut"].as_f64().unwrap() - cut).abs() < 1e-6, "{p}");
        let q = under["probabilities"].as_object().unwrap();
        let mut above: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|e| q[*e].as_f64().unwrap() > cut)
            .collect();
        if above.is_empty() {
            above = names(&p["sets"][0]["labels"]);
        }
        assert_eq!(names(&p["labels"]), above, "{p}");
    }
    let shown = env.run_with_stdin(&["predict", "--model", s(&micro), "--explain"], TEXTS);
    assert!(
        shown
            .stdout
            .contains(&format!("under the sets (labels: those above {cut:.2}")),
        "{}",
        shown.stdout
    );

    let f1 = env.path("sets_f1");
    env.run(&[
        "train",
        "--decode",
        "sets",
        "--threshold-objective",
        "macro",
        "--out",
        s(&f1),
    ])
    .ok();
    let d = &meta(&f1)["decode"];
    assert_eq!(d["target"], "f1", "{d}");
    assert!(d.get("cut").is_none(), "{d}");

    let thresholds = env.path("thresholds");
    env.run(&["train", "--out", s(&thresholds)]).ok();
    let p = predict(&env, &thresholds, "孩子 开心\n");
    assert_eq!(p[0]["sets"].as_array().unwrap().len(), 3);
    assert!(
        p[0].get("under_sets").is_none(),
        "only the micro target has them"
    );

    let ens = env.path("ensemble");
    env.run(&[
        "train",
        "--classifier",
        "ensemble",
        "--member",
        s(&thresholds),
        "--member",
        s(&f1),
        "--decode",
        "sets",
        "--objective",
        "exact",
        "--out",
        s(&ens),
    ])
    .ok();
    let j = meta(&ens);
    assert_eq!(j["decode"]["target"], "exact");
    assert!(j["calibration"].is_object());
    for p in predict(&env, &ens, TEXTS) {
        assert_eq!(p["sets"][0]["labels"], p["labels"], "{p}");
    }

    // The classify page draws what decides: the thresholds as ticks; for the micro target the
    // probabilities under the sets with the cut as ticks (`POST /api/predict` says the same);
    // for a whole-set target no ticks.
    let server = crate::serve_cli::Server::start(
        &env,
        "127.0.0.1:0",
        &[
            "--model",
            s(&thresholds),
            "--model",
            s(&micro),
            "--model",
            s(&exact),
        ],
    );
    let text = "担心 难过 考试";
    let page = |model: &str| {
        let (status, _, body) = server.get(&format!(
            "/classify?model={model}&text=%E6%8B%85%E5%BF%83%20%E9%9A%BE%E8%BF%87%20%E8%80%83%E8%AF%95"
        ));
        assert_eq!(status, 200, "{body}");
        body
    };
    let ticks = |body: &str| body.matches(r#"stroke-width="2""#).count();
    let th = page("thresholds");
    assert!(
        th.contains("ticks the model's per-label thresholds"),
        "{th}"
    );
    assert_eq!(ticks(&th), 8);
    let mi = page("sets_micro");
    assert!(mi.contains(&format!("ticks the cut {cut:.2}")), "{mi}");
    assert_eq!(ticks(&mi), 8);
    let body = serde_json::json!({"model": "sets_micro", "texts": [text], "explain": true});
    let (status, _, api) = server.post("/api/predict", body.to_string());
    assert_eq!(status, 200, "{api}");
    let api: Value = serde_json::from_str(&api).unwrap();
    let q = &api[0]["under_sets"]["probabilities"];
    for e in ALL {
        let shown = format!(r#"<tr data-emotion="{e}"><td>{e}</td><td class="num">"#);
        let row = mi
            .split(&shown)
            .nth(1)
            .unwrap_or_else(|| panic!("{e}: {mi}"));
        let cell = row
            .split("</td>")
            .nth(1)
            .unwrap()
            .trim_start_matches(r#"<td class="num">"#);
        assert_eq!(cell, format!("{:.3}", q[e].as_f64().unwrap()), "{e}: {api}");
    }
    let ex = page("sets");
    assert!(ex.contains("the most probable sets are below"), "{ex}");
    assert_eq!(ticks(&ex), 0);
}
