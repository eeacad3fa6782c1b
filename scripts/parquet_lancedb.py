#!/usr/bin/env python3
"""LanceDB loading the vectors of `emoknow export parquet` and searching one sentence's
nearest neighbours by cosine (compare with `emoknow similar --id ID -k 5`).

    pip install lancedb
    python3 scripts/parquet_lancedb.py out/examples.parquet LANCE_DIR [ID] [encoder, default m3e]
"""
import sys

import lancedb
import pyarrow.compute as pc
import pyarrow.parquet as pq

path, lance_dir = sys.argv[1], sys.argv[2]
qid = int(sys.argv[3]) if len(sys.argv) > 3 else 20044
encoder = sys.argv[4] if len(sys.argv) > 4 else "m3e"
t = pq.read_table(path, columns=["id", "text", "split", f"vector.{encoder}"])
t = t.rename_columns(["id", "text", "split", "vector"])
tbl = lancedb.connect(lance_dir).create_table("examples", t, mode="overwrite")
print(tbl.count_rows(), "rows,", tbl.schema.field("vector").type)
q = t.filter(pc.equal(t["id"], qid))["vector"][0].as_py()
hits = (
    tbl.search(q)
    .distance_type("cosine")
    .where(f"id != {qid} AND split = 'train'", prefilter=True)
    .limit(5)
    .select(["id", "text", "_distance"])
    .to_list()
)
for h in hits:
    print(f"#{h['id']:<6} {1 - h['_distance']:.3f}  {h['text']}")
