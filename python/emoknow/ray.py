"""Ray Data over emoknow: predictions for a corpus too large for one process.

    import ray, emoknow.ray
    ds = ray.data.read_parquet("export/").repartition(8)   # `emoknow export parquet`: one file
    out = ds.map_batches(emoknow.ray.Predictor, fn_constructor_kwargs={"model": "models/linear"},
                         compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5, batch_size=1024, batch_format="pandas")
    out.write_parquet("predictions/")

(`num_cpus` below 1 leaves a CPU for the read and write tasks when the workers take every CPU
of the cluster.) Each worker loads the model once (a packed model directory: no store needed) and adds, per row,
one float32 column per label (`p.Love` …) and the label set (`labels.predicted`).
"""

from __future__ import annotations

from typing import Optional

from . import Model


class Predictor:
    """A callable for `map_batches`: loads `model` once, predicts each batch's `text_column`
    (sentences of documents named by `document_column`, when given)."""

    def __init__(
        self,
        model: str,
        text_column: str = "text",
        document_column: Optional[str] = None,
        keep: Optional[list] = None,
    ):
        self.model = Model.load(model)
        self.text_column = text_column
        self.document_column = document_column
        self.keep = keep

    def __call__(self, batch):
        import pandas as pd

        texts = [str(t) for t in batch[self.text_column]]
        documents = None
        if self.document_column is not None:
            documents = [None if d is None else str(d) for d in batch[self.document_column]]
        # One pass: the probabilities and the label sets the model decides (by its thresholds
        # or its set decoder), as `emoknow predict` gives them.
        probs, sets = self.model.predict_labels(texts, documents)
        cols = self.keep if self.keep is not None else [c for c in batch.columns]
        out = pd.DataFrame({c: batch[c].values for c in cols})
        for i, name in enumerate(self.model.label_names):
            out[f"p.{name}"] = probs[:, i]
        out["labels.predicted"] = sets
        return out
