"""Ray Data across two workers over the shipped corpus's Parquet export: every row's
predictions equal `emoknow predict`'s."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import emoknow
from conftest import REPO, Cli

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    d = tmp_path_factory.mktemp("shipped")
    cli = Cli(d / "store", d)
    cli.run("ingest", str(REPO / "data" / "Train.csv"))
    cli.run("train", "--classifier", "linear", "--out", str(d / "linear"))
    cli.run("export", "parquet", "--out", str(d / "export"))
    return cli, d


def test_ray_predictions_equal_the_cli_for_every_row(shipped):
    import emoknow.ray

    cli, d = shipped
    table = pq.read_table(d / "export" / "examples.parquet", columns=["id", "text"])
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    lines = d / "texts.txt"
    lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
    want = cli.json("predict", "--model", str(d / "linear"), "--file", str(lines))
    assert len(want) == len(ids) == 26000
    model = emoknow.Model.load(d / "linear")
    names = model.label_names
    expected = {
        i: (np.array([w["probabilities"][n] for n in names], dtype=np.float32), w["labels"])
        for i, w in zip(ids, want)
    }

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # The export is one file: cut it into four blocks, so both workers get some.
        ds = (
            ray.data.read_parquet(str(d / "export"))
            .select_columns(["id", "text"])
            .repartition(4)
        )
        out = ds.map_batches(
            emoknow.ray.Predictor,
            fn_constructor_kwargs={"model": str(d / "linear"), "keep": ["id"]},
            compute=ray.data.ActorPoolStrategy(size=2),
            # Two workers on two CPUs leave room for the read and write tasks.
            num_cpus=0.5,
            batch_size=2048,
            batch_format="pandas",
        )
        out.write_parquet(str(d / "predictions"))
    finally:
        ray.shutdown()
    got = pq.read_table(d / "predictions").to_pandas().sort_values("id")
    assert len(got) == 26000 and got["id"].nunique() == 26000
    probs = got[[f"p.{n}" for n in names]].to_numpy(dtype=np.float32)
    for i, row, labels in zip(got["id"], probs, got["labels.predicted"]):
        want_probs, want_labels = expected[i]
        assert np.array_equal(row, want_probs), i
        assert list(labels) == want_labels, i
