#!/usr/bin/env python3
"""Throughput of one model three ways, on the same texts and machine: the emoknow command line,
the Python package (model load excluded from both), and Ray Data with 1 and 2 workers.

    pip install ./python "ray[data]" pandas pyarrow      (or python/requirements-test.txt)
    emoknow export parquet --out /tmp/export                 (the store the model was trained on)
    python3 scripts/bench_python.py MODEL_DIR /tmp/export/examples.parquet [ROWS] [RUNS]

The command line's rate is (N - 1) / (time for N texts - time for 1 text): its start and the
model load cancel out. Python's is N / predict time after `Model.load`. Ray's is N / the time
from building the dataset to the predictions written as Parquet, `ray.init(num_cpus=2)`
excluded (its workers load the model inside that time, as a job would). Medians of RUNS.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

import emoknow
import emoknow.ray

model_dir, export = sys.argv[1], sys.argv[2]
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 26000
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
binary = os.environ.get("EMOKNOW_BIN", "target/release/emoknow")
texts = pq.read_table(export, columns=["text"]).column("text").to_pylist()[:rows]
tmp = tempfile.mkdtemp()
many, one = os.path.join(tmp, "many.txt"), os.path.join(tmp, "one.txt")
with open(many, "w", encoding="utf-8") as f:
    f.write("\n".join(texts) + "\n")
with open(one, "w", encoding="utf-8") as f:
    f.write(texts[0] + "\n")
nowhere = os.path.join(tmp, "no-store")


def cli_secs(path: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [binary, "--store", nowhere, "--json", "predict", "--model", model_dir, "--file", path],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


cli = statistics.median((len(texts) - 1) / (cli_secs(many) - cli_secs(one)) for _ in range(runs))

model = emoknow.Model.load(model_dir)
model.predict(texts[:10])


def py_rate() -> float:
    t = time.perf_counter()
    model.predict(texts)
    return len(texts) / (time.perf_counter() - t)


python = statistics.median(py_rate() for _ in range(runs))

import ray  # noqa: E402

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ray_rates = {}
for workers in (1, 2):
    rates = []
    for _ in range(runs):
        out = os.path.join(tmp, f"ray-{workers}")
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        ds = ray.data.read_parquet(export).select_columns(["id", "text"]).limit(len(texts))
        ds.repartition(8).map_batches(
            emoknow.ray.Predictor,
            fn_constructor_kwargs={"model": model_dir, "keep": ["id"]},
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=0.5,
            batch_size=1024,
            batch_format="pandas",
        ).write_parquet(out)
        rates.append(len(texts) / (time.perf_counter() - t))
    ray_rates[workers] = statistics.median(rates)
ray.shutdown()
shutil.rmtree(tmp, ignore_errors=True)

print(f"model {model_dir}: {len(texts)} texts, medians of {runs} runs, rows/s")
print(f"  command line (emoknow predict --file)   {cli:10.0f}")
print(f"  Python (Model.predict)                  {python:10.0f}   ×{python / cli:.2f} the command line")
for w, r in ray_rates.items():
    print(f"  Ray Data, {w} worker(s)                   {r:10.0f}")
