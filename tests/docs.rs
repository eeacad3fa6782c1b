//! The command blocks of README.md and docs/*.md run against the real binary (trycmd).
//!
//! Every ```console block whose lines start with `$ ` is run, in order, in a fresh directory
//! holding the shipped `data/`, and its output (stdout and stderr together) must match what
//! the block shows: `[..]` stands for any text within a line (timings, paths), `...` on a line
//! of its own for any number of lines. A block that cannot run in the tests (it needs
//! m3e-small, an LLM or minutes of training) is marked ```console,ignore and shows what
//! `scripts/` printed. Each file is one sequence: a block may use the store an earlier block
//! of the same file built.

use std::path::Path;

#[test]
fn commands_shown_in_readme_and_docs_print_what_they_show() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);

    // trycmd runs a file's commands in `<file>.in/` next to it: build that next to a copy of
    // each file in a temporary directory, so the repository is never written to.
    let tmp = tempfile::tempdir().expect("temp dir");
    let cases = trycmd::TestCases::new();
    cases
        .register_bin("emoknow", Path::new(env!("CARGO_BIN_EXE_emoknow")))
        .env("EMOKNOW_STORE", "store")
        .env("NO_COLOR", "1")
        .default_bin_name("emoknow");
    for file in &files {
        let name = file.file_name().expect("file name");
        let copy = tmp.path().join(name);
        std::fs::copy(file, &copy).expect("copy doc");
        let sandbox = copy.with_extension("in");
        std::fs::create_dir(&sandbox).expect("sandbox");
        symlink_dir(&root.join("data"), &sandbox.join("data"));
        eprintln!(
            "{} is run as {} (line numbers are the same)",
            file.display(),
            copy.display()
        );
        cases.case(&copy);
    }
    cases.run();
}

#[cfg(unix)]
fn symlink_dir(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).expect("symlink data/");
}

#[cfg(not(unix))]
fn symlink_dir(from: &Path, to: &Path) {
    std::os::windows::fs::symlink_dir(from, to).expect("symlink data/");
}
