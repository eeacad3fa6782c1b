//! `TestEnv`: a temporary directory with a store, and runs of the real binary against it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory holding fixtures and a store at `<tmp>/store`.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

/// The result of one run.
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(args: &[&str], out: Output) -> Run {
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "emoknow {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success\n{}", self.describe());
        self
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.describe());
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.describe()))
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// Asserts stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_emoknow")
}

/// The repository root (for the shipped data/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// Writes a fixture file and returns its path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A command for the binary with `--store <tmp>/store`, run in the temp dir.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--store").arg(self.store()).args(args);
        c.current_dir(self.dir.path());
        c.env_remove("EMOKNOW_STORE");
        c.env("NO_COLOR", "1");
        c
    }

    /// Runs the binary and collects its output.
    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.cmd(args).output().expect("run emoknow");
        Run::from_output(args, out)
    }

    /// Starts the binary with its output discarded (a command the test will kill).
    pub fn spawn_quiet(&self, args: &[&str]) -> std::process::Child {
        use std::process::Stdio;
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run emoknow")
    }

    /// Runs the binary (output discarded) and kills it with SIGKILL after `delay`; true when
    /// it had already finished successfully by then.
    pub fn run_killed_after(&self, args: &[&str], delay: std::time::Duration) -> bool {
        let mut child = self.spawn_quiet(args);
        std::thread::sleep(delay);
        child.kill().expect("kill emoknow"); // Ok also when it has exited (not yet reaped)
        child.wait().expect("wait for emoknow").success()
    }

    /// Runs the binary (output discarded), waits until `ready()` holds (polled every 2 ms, at
    /// most 60 s) or the command ends, then `delay` more, and kills it with SIGKILL. Returns
    /// whether the kill landed while the command ran after `ready` held: it was still running
    /// when the signal went, so what `ready` watches (a write begun) was cut short.
    pub fn kill_when(
        &self,
        args: &[&str],
        ready: impl Fn() -> bool,
        delay: std::time::Duration,
    ) -> bool {
        use std::time::{Duration, Instant};
        let mut child = self.spawn_quiet(args);
        let start = Instant::now();
        let mut seen = false;
        while start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().expect("poll emoknow").is_some() {
                break;
            }
            if ready() {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(delay);
        let running = child.try_wait().expect("poll emoknow").is_none();
        child.kill().expect("kill emoknow"); // Ok also when it has exited (not yet reaped)
        child.wait().expect("wait for emoknow");
        seen && running
    }

    /// Runs the binary and sends it one SIGINT (Ctrl-C) as soon as `ready` (polled every 2 ms,
    /// for at most 60 s); then waits for it and returns its output. `None` when it ended
    /// before `ready`.
    pub fn interrupt_when(
        &self,
        args: &[&str],
        ready: impl Fn() -> bool,
    ) -> Option<std::process::Output> {
        use std::process::Stdio;
        use std::time::{Duration, Instant};
        let mut child = self
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run emoknow");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().expect("poll emoknow").is_some() {
                let _ = child.wait_with_output();
                return None;
            }
            if ready() {
                // SAFETY: signalling our own child, which has not been reaped yet.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                return Some(child.wait_with_output().expect("wait for emoknow"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("not ready in 60 s: {args:?}");
    }

    /// Runs the binary with `input` on its stdin and collects its output.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run emoknow");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        Run::from_output(args, child.wait_with_output().expect("wait for emoknow"))
    }

    /// `knowledge import FILE --source SOURCE --field FIELD --first-id ID`: rationales from a
    /// seed-style prediction file (line n is example `first_id + n - 1`).
    pub fn import(&self, file: &Path, source: &str, field: &str, first_id: u64) -> Run {
        let first_id = first_id.to_string();
        self.run(&[
            "knowledge",
            "import",
            s(file),
            "--source",
            source,
            "--field",
            field,
            "--first-id",
            &first_id,
        ])
    }

    /// `stats --json` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        self.run(&["--json", "stats"]).ok().json()
    }
}

/// Copies the directory `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The bytes of every file under `dir`, recursively (0 when it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// A path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Words the generated corpora draw from.
const WORDS: [&str; 21] = [
    "担心",
    "考试",
    "明天",
    "孩子",
    "开心",
    "笑",
    "厌恶",
    "这种",
    "行为",
    "期待",
    "旅行",
    "春天",
    "难过",
    "消息",
    "愤怒",
    "失望",
    "惊讶",
    "没想到",
    "喜欢",
    "朋友",
    "工作",
];

/// A seed-layout CSV of `n` rows: row `i` is `words` pseudo-random words (an LCG seeded with
/// `seed`) and `第{number(i)}句`, labelled `labels[i % labels.len()]`.
pub fn generated_corpus(
    n: usize,
    words: usize,
    labels: &[&str],
    seed: u64,
    number: impl Fn(usize) -> usize,
) -> String {
    let mut csv = String::from("ID,Text,Labels\n");
    let mut x = seed;
    for i in 1..=n {
        let mut text = Vec::with_capacity(words);
        for _ in 0..words {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push(WORDS[(x >> 33) as usize % WORDS.len()]);
        }
        csv.push_str(&format!(
            "{i},{} 第{}句,{}\n",
            text.join(" "),
            number(i),
            labels[i % labels.len()]
        ));
    }
    csv
}

/// A store's sled database opened directly, as an older build or damage would leave it.
///
/// Dropping it waits until sled has let go of its file lock: sled's flusher thread keeps the
/// data file open a moment after the last handle drops, and an open of the store right after,
/// in this process or by the binary, could find it "in use by another process". Trees opened
/// from it hold the database too: drop them first.
pub struct RawDb {
    db: Option<sled::Db>,
    file: PathBuf,
}

impl RawDb {
    pub fn open(store: &Path) -> RawDb {
        RawDb {
            db: Some(sled::open(store.join("db")).unwrap()),
            file: store.join("db").join("db"),
        }
    }
}

impl std::ops::Deref for RawDb {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        self.db.as_ref().unwrap()
    }
}

impl Drop for RawDb {
    fn drop(&mut self) {
        drop(self.db.take());
        use std::os::unix::io::AsRawFd;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let f = std::fs::File::open(&self.file).unwrap();
            // SAFETY: flock on a descriptor owned by `f`; closing `f` releases it.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return;
            }
            if std::time::Instant::now() > deadline {
                if !std::thread::panicking() {
                    panic!(
                        "sled kept {} locked 10 s after the last handle",
                        self.file.display()
                    );
                }
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// xorshift64*: deterministic test randomness (the same damage on every run).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
