//! `emoknow serve` against a real server on 127.0.0.1: the API answers the CLI's `--json`
//! documents, bad input gets a 400/404/413 naming the parameter, pages escape every string
//! from the store or the request, and the store stays held (and unchanged) while it runs.

use crate::model_cli::{corpus, ingest_split};
use crate::util::{s, TestEnv};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

/// Markup an LLM could answer with; it must show as text, never run.
pub(crate) const HOSTILE: &str =
    r#"<script>window.pwned=1</script><img src=x onerror="window.pwned=2">"#;

/// The sentence of example 121, markup too.
pub(crate) const HOSTILE_TEXT: &str = "<img src=x onerror=window.pwned=3> 担心 考试";

/// A store with the model tests' corpus (plus example 121, whose text is markup), rationales
/// of `qwen-max` for examples 1–3 (example 2's carrying [`HOSTILE`]), and a linear model.
pub(crate) fn setup() -> (TestEnv, PathBuf) {
    let env = TestEnv::new();
    let mut csv = corpus();
    csv.push_str(&format!("121,{HOSTILE_TEXT},['Anxiety']\n"));
    let f = env.write("c.csv", csv);
    ingest_split(&env, &f, 1);
    let lines = [
        json!({"label": "这段评论包含以下分类:\nJoy, Love\n\n理由:\n\n孩子 开心 地 笑 表达了喜悦。"}),
        json!({"label": format!("这段评论包含以下分类:\nHate\n\n理由:\n\n{HOSTILE} 这种 行为 pwned 令人厌恶。")}),
        json!({"label": "这段评论包含以下分类:\nAnxiety\n\n理由:\n\n担心 明天 的 考试。"}),
    ];
    let jsonl: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let p = env.write("rationales.jsonl", jsonl);
    env.import(&p, "qwen-max", "label", 1).ok();
    let model = env.path("models/linear");
    env.run(&["train", "--classifier", "linear", "--out", s(&model)])
        .ok();
    (env, model)
}

/// A running `emoknow serve`, killed when dropped.
pub(crate) struct Server {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    log: PathBuf,
    client: reqwest::blocking::Client,
}

impl Server {
    /// Starts `emoknow serve --bind ADDR ARGS…` on `env`'s store and waits for its
    /// `listening on http://ADDR` line.
    pub(crate) fn start(env: &TestEnv, bind: &str, args: &[&str]) -> Server {
        let log = env.path(&format!("serve-{}.log", std::process::id()));
        let mut cmd = env.cmd(&["serve", "--bind", bind]);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("start emoknow serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send((line, r));
        });
        let Ok((line, reader)) = rx.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            panic!("no `listening on` line in 120 s\n{}", read(&log));
        };
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {line:?}\n{}", read(&log));
        };
        assert!(base.starts_with("http://"), "{line}");
        Server {
            child,
            _stdout: reader,
            base: base.to_string(),
            log,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// What the server wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        read(&self.log)
    }

    /// GET `path`: status, content type and body.
    pub(crate) fn get(&self, path: &str) -> (u16, String, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap_or_else(|e| panic!("GET {path:.200}: {e:.300}\n{}", self.stderr()));
        answer(r)
    }

    /// POST `body` to `path`.
    pub(crate) fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> (u16, String, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.stderr()));
        answer(r)
    }

    /// GET `path`, expecting a 200 JSON document.
    pub(crate) fn json(&self, path: &str) -> Value {
        let (status, ctype, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        assert!(ctype.starts_with("application/json"), "{ctype}");
        serde_json::from_str(&body).unwrap()
    }
}

fn answer(r: reqwest::blocking::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, r.text().unwrap())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A percent-encoded query value.
pub(crate) fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[test]
fn serve_api_answers_with_the_cli_documents() {
    let (env, model) = setup();
    let m = s(&model);
    // What the CLI says, before the server takes the store.
    let stats = env.stats();
    let query = env
        .run(&[
            "--json",
            "query",
            "--emotion",
            "Anxiety",
            "--keyword",
            "担心",
            "-n",
            "3",
        ])
        .ok()
        .json();
    // The API shows three sentences of context each side.
    let show = env
        .run(&["--json", "show", "2", "--context", "3"])
        .ok()
        .json();
    let similar = env
        .run(&["--json", "similar", "--id", "5", "-k", "3"])
        .ok()
        .json();
    let predict = env
        .run(&["--json", "predict", "--model", m, "担心 考试 明天"])
        .ok()
        .json();
    let explain = env
        .run(&[
            "--json",
            "predict",
            "--model",
            m,
            "--explain",
            "担心 考试 明天",
        ])
        .ok()
        .json();
    let eval = env.run(&["--json", "eval", "--model", m]).ok().json();
    let eval_val = env
        .run(&["--json", "eval", "--model", m, "--split", "val"])
        .ok()
        .json();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("meta.json")).unwrap()).unwrap();

    let server = Server::start(
        &env,
        "127.0.0.1:0",
        &["--model", m, "--body-limit", "65536"],
    );
    assert_eq!(server.json("/api/stats"), stats);
    assert_eq!(
        server.json(&format!(
            "/api/query?emotion=Anxiety&keyword={}&limit=3",
            enc("担心")
        )),
        query
    );
    assert_eq!(server.json("/api/similar?id=5&k=3"), similar);

    // An example: `show --json`'s document, with neighbours and context.
    let ex = server.json("/api/examples/2");
    for (k, v) in show.as_object().unwrap() {
        assert_eq!(&ex[k], v, "key {k}");
    }
    assert!(ex["knowledge"][0]["raw"]
        .as_str()
        .unwrap()
        .contains(HOSTILE));
    let nb = ex["neighbours"].as_array().unwrap();
    assert!(!nb.is_empty(), "{ex}");
    for n in nb {
        assert_ne!(n["id"], 2);
        assert!(n["text"].as_str().is_some_and(|t| !t.is_empty()), "{n}");
        assert!(n["labels"].is_array() && n["score"].is_number(), "{n}");
    }
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&ex["context"]["before"]), [1]);
    assert_eq!(ids(&ex["context"]["after"]), [3, 4, 5]);
    assert!(ex["context"]["note"]
        .as_str()
        .unwrap()
        .contains("no document ids"));

    // Predictions: `predict --json`, with and without the knowledge used.
    let (status, _, body) = server.post("/api/predict", r#"{"texts": ["担心 考试 明天"]}"#);
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got, predict);
    assert!(
        got[0]["labels"]
            .as_array()
            .unwrap()
            .contains(&json!("Anxiety")),
        "{got}"
    );
    assert_eq!(got[0]["probabilities"].as_object().unwrap().len(), 8);
    let (_, _, body) = server.post(
        "/api/predict",
        r#"{"texts": ["担心 考试 明天"], "explain": true, "model": "linear"}"#,
    );
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), explain);

    // Models and their reports.
    let models = server.json("/api/models");
    assert_eq!(models[0]["name"], "linear");
    assert_eq!(models[0]["meta"]["val"], meta["val"]);
    assert_eq!(models[0]["meta"]["thresholds"], meta["thresholds"]);
    for (path, cli) in [
        ("/api/eval/linear", &eval),
        ("/api/eval/linear?split=val", &eval_val),
    ] {
        let r = server.json(path);
        for (k, v) in cli.as_object().unwrap() {
            assert_eq!(&r[k], v, "{path}: key {k}");
        }
        let conf = r["label_confusion"].as_array().unwrap();
        assert_eq!(conf.len(), 8);
        // The diagonal counts each label's true positives.
        for (i, l) in cli["per_label"].as_array().unwrap().iter().enumerate() {
            let tp = (l["recall"].as_f64().unwrap() * l["support"].as_f64().unwrap()).round();
            assert_eq!(conf[i][i].as_f64().unwrap(), tp, "{path}: {}", l["label"]);
        }
        let curves = r["threshold_curves"].as_array().unwrap();
        assert_eq!(curves.len(), 8);
        for (i, c) in curves.iter().enumerate() {
            // The threshold as a calibrated probability, σ(a·logit t + b), like the curve.
            let t = meta["thresholds"]["per_label"][i].as_f64().unwrap();
            let (a, b) = (
                meta["calibration"]["a"][i].as_f64().unwrap(),
                meta["calibration"]["b"][i].as_f64().unwrap(),
            );
            let want = 1.0 / (1.0 + (-(a * (t / (1.0 - t)).ln() + b)).exp());
            let got = c["threshold"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-5, "{path}: {got} vs {want}");
            assert_eq!(c["points"].as_array().unwrap().len(), 99);
        }
    }
    assert_eq!(server.json("/api/eval/linear")["split"], "test");

    // Bad input: the status, and the parameter named.
    let big = format!(r#"{{"texts": ["{}"]}}"#, "好".repeat(30_000));
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("GET", "/api/query?emotion=Happy", None, 400, "emotion"),
        ("GET", "/api/query?limit=0", None, 400, "limit"),
        ("GET", "/api/query?limit=ten", None, 400, "limit"),
        ("GET", "/api/query?split=dev2", None, 400, "split"),
        ("GET", "/api/query?colour=red", None, 400, "colour"),
        (
            "GET",
            "/api/query?keyword=a&keyword=b",
            None,
            400,
            "keyword",
        ),
        ("GET", "/api/examples/abc", None, 400, "id"),
        ("GET", "/api/examples/99999", None, 404, "id"),
        ("GET", "/api/similar", None, 400, "text"),
        ("GET", "/api/similar?id=1&text=x", None, 400, "id"),
        ("GET", "/api/similar?id=99999", None, 404, "id"),
        ("GET", "/api/similar?id=5&k=0", None, 400, "k"),
        ("GET", "/api/similar?id=5&by=magic", None, 400, "by"),
        ("GET", "/api/similar?id=5&ef=0", None, 400, "ef"),
        ("GET", "/api/similar?id=5&ef=4097", None, 400, "ef"),
        ("GET", "/api/similar?id=5&by=bm25&ef=64", None, 400, "ef"),
        (
            "GET",
            "/api/similar?id=5&by=bm25&encoder=tiny",
            None,
            400,
            "encoder",
        ),
        ("GET", "/api/eval/nope", None, 404, "model"),
        ("GET", "/api/eval/linear?split=x", None, 400, "split"),
        ("GET", "/api/stats?x=1", None, 400, "x"),
        ("GET", "/api/nothing", None, 404, "path"),
        ("POST", "/api/predict", Some("nope".into()), 400, "body"),
        (
            "POST",
            "/api/predict",
            Some(r#"{"texts": []}"#.into()),
            400,
            "texts",
        ),
        (
            "POST",
            "/api/predict",
            Some(r#"{"texts": "a"}"#.into()),
            400,
            "texts",
        ),
        (
            "POST",
            "/api/predict",
            Some(r#"{"texts": ["a"], "explain": 1}"#.into()),
            400,
            "explain",
        ),
        (
            "POST",
            "/api/predict",
            Some(r#"{"texts": ["a"], "colour": 1}"#.into()),
            400,
            "colour",
        ),
        (
            "POST",
            "/api/predict",
            Some(r#"{"texts": ["a"], "model": "nope"}"#.into()),
            404,
            "model",
        ),
        ("POST", "/api/predict", Some(big), 413, "body"),
    ];
    for (method, path, body, status, param) in cases {
        let (got, ctype, text) = match body {
            None => server.get(path),
            Some(b) => server.post(path, b),
        };
        let what = format!("{method} {path}: {got} {text:.300}");
        assert_eq!(got, status, "{what}");
        assert!(ctype.starts_with("application/json"), "{what}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["param"], param, "{what}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}");
    }
    let r = server
        .client
        .delete(format!("{}/api/stats", server.base))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // The store is held: another command is told so, and by what.
    env.run(&["stats"])
        .code(2)
        .stderr_has("is in use by another process: emoknow --store")
        .stderr_has("serve --bind 127.0.0.1:0")
        .stderr_has("(pid ");
    assert!(env.store().join("holder").exists());

    // Nothing was written: the store checks and counts as before. The holder record a killed
    // server leaves is ignored and removed by the next open.
    drop(server);
    env.run(&["check"]).ok();
    assert_eq!(env.stats(), stats);
    assert!(!env.store().join("holder").exists());
}

#[test]
fn serve_pages_escape_store_and_request_strings() {
    let (env, model) = setup();
    let server = Server::start(&env, "127.0.0.1:0", &["--model", s(&model)]);
    let page = |path: &str, want: u16| -> String {
        let (status, ctype, body) = server.get(path);
        assert_eq!(status, want, "GET {path:.200}: {body:.500}");
        assert!(ctype.starts_with("text/html"), "{path}: {ctype}");
        assert!(body.starts_with("<!doctype html>"), "{path}");
        body
    };
    // Markup never reaches a page as markup: the only <script> is the page's own, and no
    // store string opens an <img>.
    let clean = |body: &str, path: &str| {
        assert_eq!(body.matches("<script").count(), 1, "{path}");
        assert!(!body.contains("<img"), "{path}");
        assert!(!body.contains("onerror=\""), "{path}");
    };
    let escaped_hostile = "&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=&quot;window.pwned=2&quot;&gt;";
    let ex = page("/examples/2", 200);
    clean(&ex, "/examples/2");
    assert!(ex.contains(escaped_hostile), "{ex}");
    assert!(ex.contains(r#"id="neighbours""#) && ex.contains(r#"id="context""#));
    assert!(
        ex.contains(r#"href="/examples/3""#),
        "context links to the next example"
    );

    let hits = page("/?keyword=pwned", 200);
    clean(&hits, "search");
    assert!(hits.contains(r#"href="/examples/2""#), "{hits}");
    assert!(hits.contains("<mark>pwned</mark>"), "{hits}");
    assert!(hits.contains("&lt;script&gt;"), "{hits}");

    let ex121 = page("/examples/121", 200);
    clean(&ex121, "/examples/121");
    assert!(ex121.contains("&lt;img src=x onerror=window.pwned=3&gt; 担心 考试"));

    // What a request carries is escaped too: the keyword box, the classify text box.
    let hits = page(
        &format!("/?keyword={}", enc("\"><script>alert(1)</script>")),
        200,
    );
    clean(&hits, "search for markup");
    assert!(hits.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
    let cls = page(&format!("/classify?text={}", enc(HOSTILE_TEXT)), 200);
    clean(&cls, "classify");
    assert!(cls.contains("&lt;img src=x onerror=window.pwned=3&gt; 担心 考试</textarea>"));
    assert!(cls.contains(r#"id="probability-bars""#) && cls.contains(r#"id="labels""#));

    // Search by label, paged: 31 Anxiety examples, 20 per page.
    let p1 = page("/?emotion=Anxiety", 200);
    assert_eq!(p1.matches(r#"<li class="hit">"#).count(), 20);
    assert!(
        p1.contains(r#"rel="next" href="/?emotion=Anxiety&amp;page=2""#),
        "{p1}"
    );
    let p2 = page("/?emotion=Anxiety&page=2", 200);
    assert_eq!(p2.matches(r#"<li class="hit">"#).count(), 11);
    assert!(p2.contains(r#"rel="prev""#) && !p2.contains(r#"rel="next""#));
    assert!(p2.contains(r#"value="Anxiety" checked"#));

    // The model page draws its charts.
    let mp = page("/models/linear", 200);
    assert_eq!(mp.matches(r#"<svg class="chart curve""#).count(), 8);
    for id in ["prf-bars", "label-heatmap", "size-confusion"] {
        assert!(mp.contains(&format!(r#"id="{id}""#)), "{id}");
    }
    page("/models", 200);

    // Errors are pages with the right status.
    let bad = page("/?emotion=Happy", 400);
    assert!(bad.contains("unknown emotion") && bad.contains(r#"class="error""#));
    page("/examples/99999", 404);
    page("/examples/x", 400);
    page("/models/nope", 404);
    page("/nothing/here", 404);
    page(&format!("/classify?text={}", "a".repeat(10_001)), 400);
    let (status, ctype, css) = server.get("/assets/style.css");
    assert_eq!((status, ctype.starts_with("text/css")), (200, true));
    assert!(css.contains(".chip"));
    let (status, ctype, _) = server.get("/assets/page.js");
    assert_eq!((status, ctype.starts_with("text/javascript")), (200, true));
    drop(server);

    // Any address but loopback is served with a warning.
    let open = Server::start(&env, "0.0.0.0:0", &[]);
    assert!(
        open.stderr().contains("warning: serving on 0.0.0.0:0"),
        "{}",
        open.stderr()
    );
    assert!(open.base.starts_with("http://0.0.0.0:"), "{}", open.base);
    drop(open);
    let quiet = Server::start(&env, "127.0.0.1:0", &[]);
    assert!(!quiet.stderr().contains("warning"), "{}", quiet.stderr());
    // Without a model the classify page says how to get one.
    let (status, _, body) = quiet.get("/classify?text=a");
    assert_eq!(status, 200);
    assert!(body.contains("--model DIR"));
}
