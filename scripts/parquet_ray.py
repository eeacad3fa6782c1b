#!/usr/bin/env python3
"""Ray Data reading `emoknow export parquet`: label counts, and a join (does a test sentence's
nearest neighbour share one of its labels?) — the DuckDB queries of docs/parquet.md, on Ray.

    pip install "ray[data]" polars
    python3 scripts/parquet_ray.py out/examples.parquet [neighbour source, default knn-m3e]
"""
import sys

import ray

path = sys.argv[1]
source = sys.argv[2] if len(sys.argv) > 2 else "knn-m3e"
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ds = ray.data.read_parquet(path).select_columns(["id", "split", "labels", f"{source}.neighbour_ids"])

counts = ds.flat_map(lambda r: [{"label": l} for l in r["labels"]]).groupby("label").count()
for r in sorted(counts.take_all(), key=lambda r: -r["count()"]):
    print(r["label"], r["count()"])

test = ds.filter(lambda r: r["split"] == "test").map(
    lambda r: {"id": r["id"], "labels": list(r["labels"]), "nn": r[f"{source}.neighbour_ids"][0]}
)
pool = ds.map(lambda r: {"nn": r["id"], "nn_labels": list(r["labels"])})
rows = test.join(pool, join_type="inner", num_partitions=2, on=("nn",)).take_all()
share = [len(set(r["labels"]) & set(r["nn_labels"])) > 0 for r in rows]
print(len(share), round(sum(share) / max(len(share), 1), 3))
