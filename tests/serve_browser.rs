//! The pages in headless Chromium, driven through the DevTools protocol over
//! `--remote-debugging-pipe`: the test types into the search box and presses Enter, ticks an
//! emotion (page.js re-submits), clicks a hit, submits the classify form with the mouse, and
//! reads the DOM with `Runtime.evaluate`; `Page.captureScreenshot` saves each page.
//!
//! Skipped with a notice when `chromium` is not installed, unless `CI` is set (then it fails).
//! Screenshots go to `$EMOKNOW_SCREENSHOTS` when set (`docs/screenshots` for the README: see
//! `serve_screenshots_of_the_shipped_corpus`), else into the test's temporary directory.

use crate::serve_cli::{enc, setup, Server, HOSTILE};
use crate::util::{repo, s, TestEnv};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The `chromium` binary on PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// Chromium, or `None` (with a notice) when it is absent outside CI.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match chromium() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: chromium is not installed, and CI is set (`.ci/run` installs it)")
        }
        None => {
            eprintln!("{test}: SKIPPED — chromium is not installed (apt-get install chromium); under CI this fails");
            None
        }
    }
}

/// A pipe whose ends are closed on exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A headless Chromium with one page, spoken to over the DevTools pipe.
struct Chrome {
    child: Child,
    to: File,
    from: Receiver<Value>,
    events: VecDeque<Value>,
    next_id: u64,
    session: String,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

const TIMEOUT: Duration = Duration::from_secs(60);

impl Chrome {
    fn launch(bin: &Path, log: PathBuf) -> Chrome {
        let profile = tempfile::tempdir().unwrap();
        // Chromium reads commands on fd 3 and writes answers on fd 4.
        let (cmd_read, cmd_write) = pipe();
        let (ans_read, ans_write) = pipe();
        let (r3, w4) = (cmd_read.as_raw_fd(), ans_write.as_raw_fd());
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(File::create(&log).unwrap())
        .stderr(File::create(&log).unwrap());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The ends
        // are first copied above fd 10 so that moving one to 3 cannot close the other.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(r3, libc::F_DUPFD, 10);
                let b = libc::fcntl(w4, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop(cmd_read);
        drop(ans_write);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(File::from(ans_read));
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut c = Chrome {
            child,
            to: File::from(cmd_write),
            from: rx,
            events: VecDeque::new(),
            next_id: 0,
            session: String::new(),
            log,
            _profile: profile,
        };
        let target = c.call("Target.createTarget", json!({"url": "about:blank"}), false);
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = c.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            false,
        );
        c.session = attached["sessionId"].as_str().unwrap().to_string();
        c.send("Page.enable", json!({}));
        c.send("Runtime.enable", json!({}));
        c.send(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        c
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "chromium: {what}\n--- chromium log ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn recv(&mut self, deadline: Instant) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.from.recv_timeout(left) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => self.fail("no answer in time"),
            Err(RecvTimeoutError::Disconnected) => self.fail("the pipe closed"),
        }
    }

    /// Sends a command (to the page's session when `in_page`) and waits for its result.
    fn call(&mut self, method: &str, params: Value, in_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if in_page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let v = self.recv(deadline);
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    self.fail(&format!("{method}: {e}"));
                }
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push_back(v);
            }
        }
    }

    fn send(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params, true)
    }

    /// Waits for the page's next `Page.loadEventFired` (events already seen count).
    fn wait_load(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(pos) = self
                .events
                .iter()
                .position(|e| e["method"] == "Page.loadEventFired")
            {
                self.events.drain(..=pos);
                return;
            }
            let v = self.recv(deadline);
            if v.get("method").is_some() {
                self.events.push_back(v);
            }
        }
    }

    /// Runs `action` and waits for the page it leads to.
    fn navigating(&mut self, action: impl FnOnce(&mut Chrome)) {
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        action(self);
        self.wait_load();
    }

    fn goto(&mut self, url: &str) {
        self.navigating(|c| {
            c.send("Page.navigate", json!({"url": url}));
        });
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.send(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            self.fail(&format!("{expr}: {e}"));
        }
        r["result"]["value"].clone()
    }

    /// Focuses `selector`, clears it and types `text` as keyboard input.
    fn type_into(&mut self, selector: &str, text: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.focus(); e.value = ''; return true; }})()",
            sel = json!(selector)
        ));
        assert_eq!(found, json!(true), "no {selector}");
        self.send("Input.insertText", json!({"text": text}));
    }

    fn press_enter(&mut self) {
        for kind in ["keyDown", "keyUp"] {
            let mut p = json!({"type": kind, "key": "Enter", "code": "Enter",
                "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13});
            if kind == "keyDown" {
                p["text"] = json!("\r");
            }
            self.send("Input.dispatchKeyEvent", p);
        }
    }

    /// Clicks the middle of the first element matching `selector` with the mouse.
    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = json!(selector)
        ));
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            self.fail(&format!("nothing to click at {selector}"));
        };
        self.send(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.send(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Saves the page, from the top down to `max_height` CSS pixels, as a PNG.
    fn screenshot(&mut self, path: &Path, max_height: f64) {
        let m = self.send("Page.getLayoutMetrics", json!({}));
        let size = &m["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1200.0),
            size["height"].as_f64().unwrap_or(900.0).min(max_height),
        );
        let shot = self.send(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
        );
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding), as DevTools sends screenshots.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

/// What a tour of the pages types and expects.
struct Tour<'a> {
    keyword: &'a str,
    /// An emotion the first hit carries (ticked after the keyword search).
    emotion: &'a str,
    /// Typed as people write it.
    sentence: &'a str,
    /// What the model reads of it (in its training text's style), shown on the page.
    read: &'a str,
    /// A label the sentence must get.
    label: &'a str,
    model: &'a str,
}

/// Search (typed, Enter), tick an emotion (page.js submits), open the first hit (clicked),
/// classify a sentence (typed, submit clicked), open the model page; check the DOM at each
/// step and screenshot each page into `shots`. Returns the example id opened.
fn tour(c: &mut Chrome, base: &str, t: &Tour, shots: &Path) -> u64 {
    std::fs::create_dir_all(shots).unwrap();
    c.goto(&format!("{base}/"));
    assert_eq!(
        c.eval("document.querySelectorAll('form.search input[type=checkbox]').length"),
        8
    );
    c.type_into("#keyword", t.keyword);
    c.navigating(|c| c.press_enter());
    let search = c.eval("location.search").as_str().unwrap().to_string();
    assert!(
        search.contains(&format!("keyword={}", enc(t.keyword))),
        "{search}"
    );
    assert!(
        c.eval("document.querySelectorAll('li.hit').length")
            .as_u64()
            .unwrap()
            >= 1
    );
    c.navigating(|c| c.click(&format!("input[name=emotion][value={}]", t.emotion)));
    let search = c.eval("location.search").as_str().unwrap().to_string();
    assert!(
        search.contains(&format!("emotion={}", t.emotion)),
        "page.js re-submits: {search}"
    );
    assert_eq!(
        c.eval("document.getElementById('keyword').value"),
        json!(t.keyword)
    );
    let first_labels = c.eval("[...document.querySelectorAll('li.hit')[0].querySelectorAll('.hit-head .chip')].map(e => e.textContent)");
    assert!(
        first_labels.as_array().unwrap().contains(&json!(t.emotion)),
        "{first_labels}"
    );
    assert!(
        c.eval("document.querySelectorAll('li.hit mark').length")
            .as_u64()
            .unwrap()
            >= 1
    );
    c.screenshot(&shots.join("search.png"), 1300.0);

    let id = c.eval("document.querySelector('a.hit-link').textContent.slice(1)");
    let id: u64 = id.as_str().unwrap().parse().unwrap();
    c.navigating(|c| c.click("a.hit-link"));
    assert_eq!(
        c.eval("location.pathname"),
        json!(format!("/examples/{id}"))
    );
    assert!(c
        .eval("document.getElementById('gold').textContent")
        .as_str()
        .unwrap()
        .contains(t.emotion));
    assert!(
        c.eval("document.querySelectorAll('#neighbours tbody tr').length")
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(c.eval("document.querySelectorAll('#context tr.current').length") == json!(1));
    c.screenshot(&shots.join("example.png"), 2400.0);

    c.goto(&format!("{base}/classify"));
    c.type_into("#text", t.sentence);
    c.navigating(|c| c.click("form.classify button[type=submit]"));
    let search = c.eval("location.search").as_str().unwrap().to_string();
    assert!(search.contains("text="), "{search}");
    let labels = c.eval("document.getElementById('labels').dataset.labels");
    assert!(
        labels.as_str().unwrap().split(',').any(|l| l == t.label),
        "{labels}"
    );
    assert_eq!(
        c.eval("document.querySelectorAll('#probability-bars g.bar').length"),
        8
    );
    assert_eq!(
        c.eval("document.getElementById('text').value"),
        json!(t.sentence)
    );
    assert_eq!(
        c.eval("document.getElementById('read').textContent"),
        json!(t.read)
    );
    c.screenshot(&shots.join("classify.png"), 2400.0);

    c.goto(&format!("{base}/models/{}", t.model));
    assert_eq!(c.eval("document.querySelectorAll('svg.curve').length"), 8);
    assert_eq!(
        c.eval("document.querySelectorAll('#label-heatmap rect').length"),
        64
    );
    c.screenshot(&shots.join("model.png"), 3000.0);
    id
}

fn shots_dir(env: &TestEnv) -> PathBuf {
    match std::env::var_os("EMOKNOW_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => env.path("screenshots"),
    }
}

#[test]
fn serve_pages_work_in_headless_chromium() {
    let Some(bin) = chromium_or_skip("serve_pages_work_in_headless_chromium") else {
        return;
    };
    let (env, model) = setup();
    let server = Server::start(&env, "127.0.0.1:0", &["--model", s(&model)]);
    let mut c = Chrome::launch(&bin, env.path("chromium.log"));
    let shots = shots_dir(&env);
    // "pwned" is only in example 2's rationale (Hate), whose markup must stay text.
    let id = tour(
        &mut c,
        &server.base,
        &Tour {
            keyword: "pwned",
            emotion: "Hate",
            sentence: "我很担心明天的考试。",
            // The tests' corpus is too small to tell which words its cleaning dropped.
            read: "我 很 担心 明天 的 考试",
            label: "Anxiety",
            model: "linear",
        },
        &shots,
    );
    assert_eq!(id, 2);
    for name in ["search", "example", "classify", "model"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.len() > 1000, "{name}.png");
    }
    // The rationale's markup is text in the DOM, and none of it ran.
    c.goto(&format!("{}/examples/2", server.base));
    let raw = c.eval("document.querySelector('.card.rationale pre.raw').textContent");
    assert!(raw.as_str().unwrap().contains(HOSTILE), "{raw}");
    assert_eq!(c.eval("typeof window.pwned"), json!("undefined"));
    assert_eq!(c.eval("document.querySelectorAll('img').length"), 0);
    assert_eq!(c.eval("document.scripts.length"), 1);
    c.goto(&format!("{}/examples/121", server.base));
    assert_eq!(
        c.eval("document.getElementById('text').textContent"),
        json!(crate::serve_cli::HOSTILE_TEXT)
    );
    assert_eq!(c.eval("typeof window.pwned"), json!("undefined"));
    // A page with JavaScript off still searches: the form is a plain GET form.
    c.send(
        "Emulation.setScriptExecutionDisabled",
        json!({"value": true}),
    );
    c.goto(&format!("{}/", server.base));
    c.type_into("#keyword", "考试");
    c.navigating(|c| c.press_enter());
    assert!(c
        .eval("location.search")
        .as_str()
        .unwrap()
        .contains("keyword="));
}

/// The README's screenshots, on the shipped corpus and rationales with the linear model:
/// `EMOKNOW_SCREENSHOTS=docs/screenshots cargo test --release --test integration
/// serve_screenshots -- --ignored`. Takes about a minute (ingest, import, train).
#[test]
#[ignore]
fn serve_screenshots_of_the_shipped_corpus() {
    let Some(bin) = chromium_or_skip("serve_screenshots_of_the_shipped_corpus") else {
        return;
    };
    let env = TestEnv::new();
    let data = repo().join("data");
    env.run(&["ingest", s(&data.join("Train.csv"))]).ok();
    let pred = data.join("generated_predictions.jsonl");
    env.import(&pred, "qwen-max", "label", 1).ok();
    env.import(&pred, "chatglm3-lora", "predict", 1).ok();
    let model = env.path("models/linear");
    env.run(&["train", "--classifier", "linear", "--out", s(&model)])
        .ok();
    let server = Server::start(&env, "127.0.0.1:0", &["--model", s(&model)]);
    let mut c = Chrome::launch(&bin, env.path("chromium.log"));
    let shots = shots_dir(&env);
    tour(
        &mut c,
        &server.base,
        &Tour {
            keyword: "担忧未来",
            emotion: "Anxiety",
            sentence: "我很担心明天的考试。",
            read: "很 担心 明天 考试",
            label: "Anxiety",
            model: "linear",
        },
        &shots,
    );
    eprintln!("screenshots in {}", shots.display());
}
