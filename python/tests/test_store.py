"""emoknow.Store against the command line: query, show and similar documents, and the Parquet
export's columns as a pyarrow Table."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import emoknow


def test_store_reads_as_the_cli(built, tmp_path):
    cli, _ = built
    # The command line first: an open Store holds the store's lock.
    q = cli.json("query", "--emotion", "Anxiety", "--keyword", "担心考试", "--limit", "5")
    everything = cli.json("query", "--limit", "1000")
    shown = cli.json("show", "7")
    similar = cli.json("similar", "--id", "7", "-k", "4")
    cli.run("export", "parquet", "--out", str(tmp_path / "export"))
    exported = pq.read_table(tmp_path / "export" / "examples.parquet")
    with emoknow.Store(cli.store) as s:
        assert s.query(emotions=["Anxiety"], keyword="担心考试", limit=5) == q
        assert s.query(limit=1000) == everything
        assert s.example(7) == shown
        assert s.example(10**9) is None
        assert s.similar(7, k=4) == similar
        hits = s.similar("我很担心明天的考试。", k=3)
        assert len(hits) == 3 and all("id" in h for h in hits)
        table = s.to_arrow()
        assert table.schema == exported.schema
        assert table.equals(exported)
        with pytest.raises(ValueError):
            s.query(emotions=["Happy"])
        with pytest.raises(ValueError):
            s.query(limit=0)
        with pytest.raises(TypeError):
            s.similar(3.5)
    with pytest.raises(emoknow.EmoknowError):
        s.query()
    with pytest.raises(emoknow.EmoknowError, match="no store"):
        emoknow.Store(tmp_path / "nowhere")
