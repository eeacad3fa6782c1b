"""Fixtures: a store and models built with the real `emoknow` binary (EMOKNOW_BIN, default
target/release/emoknow), a tiny random BERT for the kinds that need an encoder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("EMOKNOW_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "emoknow"
)


class Cli:
    """The emoknow binary on one store."""

    def __init__(self, store: Path, cwd: Path):
        self.store = store
        self.cwd = cwd

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "EMOKNOW_STORE"}
        p = subprocess.run(
            [BIN, "--store", str(self.store), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=env,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"emoknow {' '.join(args)} exited {p.returncode}:\n{p.stderr}")
        return p

    def json(self, *args: str, stdin: str | None = None):
        return json.loads(self.run("--json", *args, stdin=stdin).stdout)


# A cleaned corpus in the seed's way (words separated by spaces, no punctuation), four label
# patterns tied to words.
PATTERNS = [
    ("很 担心 明天 考试 怕 考 不 好", "['Anxiety']"),
    ("孩子 们 笑 很 开心 他 也 笑", "\"['Joy', 'Love']\""),
    ("这种 行为 令人 厌恶 他 不 讲理", "\"['Hate', 'Anger']\""),
    ("期待 春天 旅行 他 说 一定 去", "['Expect']"),
]


def corpus_csv() -> str:
    lines = ["ID,Text,Labels"]
    for i in range(1, 241):
        words, labels = PATTERNS[i % 4]
        lines.append(f"{i},{words} 第{i % 7} 句 {i % 11},{labels}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A store with a tiny encoder's vectors and neighbours, and one model of each kind."""
    d = tmp_path_factory.mktemp("emoknow")
    cli = Cli(d / "store", d)
    corpus = d / "c.csv"
    corpus.write_text(corpus_csv(), encoding="utf-8")
    cli.run("ingest", str(corpus), "--test-rows", "20", "--val-fraction", "0.2")
    cli.run("tiny-bert", "--out", str(d / "tiny-bert"), "--texts", str(corpus))
    cli.run("embed", "--encoder", str(d / "tiny-bert"), "--name", "tiny")
    cli.run("knowledge", "retrieve", "-k", "5")
    nb = ["--knowledge", "neighbours", "--neighbours-source", "knn-tiny"]
    models = {
        "linear": ["--classifier", "linear"],
        "linear_nb": ["--classifier", "linear", *nb],
        "linear_ctx": ["--classifier", "linear", "--knowledge", "context"],
        "frozen_nb_ctx": ["--classifier", "frozen", "--hidden", "16", "--epochs", "10", *nb, "--context", "2"],
        "finetune": [
            "--classifier", "finetune", "--encoder-dir", str(d / "tiny-bert"),
            "--epochs", "1", "--batch", "16", "--max-len", "16",
        ],
    }
    dirs = {}
    for name, args in models.items():
        dirs[name] = d / "models" / name
        cli.run("train", *args, "--out", str(dirs[name]))
    members = [a for n in models for a in ("--member", str(dirs[n]))]
    dirs["ensemble"] = d / "models" / "ensemble"
    cli.run("train", "--classifier", "ensemble", *members, "--out", str(dirs["ensemble"]))
    return cli, dirs
