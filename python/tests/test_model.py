"""emoknow.Model against `emoknow predict --json`: the same probabilities, labels and read text
for every kind, texts as people write them normalized as the command line does."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import emoknow

TEXTS = ["我很担心明天的考试。", "孩子们笑得很开心！", "很 担心 明天 考试", "这种行为令人厌恶，他不讲理。"]
KINDS = ["linear", "linear_nb", "linear_ctx", "frozen_nb_ctx", "finetune", "ensemble"]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_equals_the_cli(built, kind):
    cli, dirs = built
    want = cli.json("predict", "--model", str(dirs[kind]), stdin="\n".join(TEXTS) + "\n")
    m = emoknow.Model.load(dirs[kind])
    assert m.predict_json(TEXTS) == want
    probs = m.predict(TEXTS)
    assert probs.dtype == np.float32 and probs.shape == (len(TEXTS), len(m.label_names))
    cli_probs = np.array(
        [[w["probabilities"][name] for name in m.label_names] for w in want], dtype=np.float32
    )
    assert np.array_equal(probs, cli_probs)
    assert m.labels(TEXTS) == [w["labels"] for w in want]
    both, labels = m.predict_labels(TEXTS)
    assert np.array_equal(both, cli_probs) and labels == [w["labels"] for w in want]
    assert want[0]["read"] != TEXTS[0], "the text as written is normalized"


@pytest.mark.parametrize("kind", ["linear_ctx", "frozen_nb_ctx", "ensemble"])
def test_documents_give_context_as_the_cli_does(built, kind):
    cli, dirs = built
    want = cli.json(
        "predict", "--model", str(dirs[kind]), "--document", stdin="\n".join(TEXTS) + "\n"
    )
    m = emoknow.Model.load(dirs[kind])
    assert m.predict_json(TEXTS, documents=["d"] * len(TEXTS)) == want
    alone = m.predict(TEXTS)
    together = m.predict(TEXTS, documents=["d"] * len(TEXTS))
    assert not np.array_equal(alone, together), "context changes a context model's output"


@pytest.mark.parametrize("kind", ["linear", "frozen_nb_ctx", "ensemble"])
def test_threads_share_one_model(built, kind):
    """Threads calling one model at once (their texts batched together by the model's
    prediction thread, documents kept apart) get what each would get alone."""
    from concurrent.futures import ThreadPoolExecutor

    _, dirs = built
    m = emoknow.Model.load(dirs[kind])
    calls = [([t], None) for t in TEXTS] + [(TEXTS, ["d"] * len(TEXTS)), (TEXTS[:2], ["d", None])]
    calls = calls * 8
    alone = [m.predict(texts, documents=docs) for texts, docs in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda c: m.predict(c[0], documents=c[1]), calls))
    for a, t in zip(alone, together):
        np.testing.assert_allclose(t, a, atol=1e-5)


def test_model_properties(built):
    _, dirs = built
    m = emoknow.Model.load(dirs["linear"])
    assert m.label_names == ["Love", "Joy", "Anxiety", "Sorrow", "Expect", "Hate", "Surprise", "Anger"]
    assert m.thresholds.dtype == np.float32 and m.thresholds.shape == (8,)
    assert m.kind == "linear"
    assert m.meta["text_style"]["segmented"] is True
    assert m.predict([]).shape == (0, 8)


def test_bad_input_raises_python_exceptions(built, tmp_path):
    _, dirs = built
    with pytest.raises(emoknow.EmoknowError, match="no such model directory"):
        emoknow.Model.load(tmp_path / "nothing")
    m = emoknow.Model.load(dirs["linear"])
    with pytest.raises(TypeError):
        m.predict("one string")
    with pytest.raises(TypeError):
        m.predict([1, 2])
    with pytest.raises(ValueError, match="1 documents for 2 texts"):
        m.predict(["a", "b"], documents=["x"])
    # A model file changed after training: refused with the file named, never a crash.
    broken = tmp_path / "broken"
    shutil.copytree(dirs["linear"], broken)
    w = broken / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x55
    w.write_bytes(bytes(data))
    with pytest.raises(emoknow.EmoknowError, match="weights.safetensors"):
        emoknow.Model.load(broken)
    # Odd text is text: control characters, emoji, a very long line.
    odd = ["\x00\x01", "😀😀", "好" * 20000, ""]
    assert m.predict(odd).shape == (4, 8)
