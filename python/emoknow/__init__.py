"""emoknow from Python: models that predict on their own, and read access to a store.

    >>> import emoknow
    >>> m = emoknow.Model.load("store/models/linear")
    >>> m.predict(["我很担心明天的考试。"])          # numpy float32, one row per text
    >>> m.labels(["我很担心明天的考试。"])           # [['Love', 'Anxiety', 'Expect']]
    >>> s = emoknow.Store("store")
    >>> s.query(emotions=["Anxiety"], keyword="担忧未来", limit=3)
    >>> table = s.to_arrow()                        # pyarrow.Table, the Parquet export's columns

The work is done by the Rust library (the same code as the `emoknow` command), with the GIL
released; its errors are raised as :class:`EmoknowError` with the library's message.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _emoknow
from ._emoknow import EmoknowError

__all__ = ["Model", "Store", "EmoknowError", "__version__"]
__version__ = _emoknow.__version__


def _texts(texts: Union[str, Sequence[str]]) -> list:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string: wrap it in a list")
    return [t if isinstance(t, str) else _bad_text(t) for t in texts]


def _bad_text(t: Any) -> str:
    raise TypeError(f"every text must be a str, got {type(t).__name__}")


def _documents(documents: Optional[Sequence[Optional[str]]]) -> Optional[list]:
    if documents is None:
        return None
    if isinstance(documents, str):
        raise TypeError("documents must be a sequence (one document name or None per text)")
    return [None if d is None else str(d) for d in documents]


class Model:
    """A model directory, loaded. It predicts without any store: its directory holds what it
    reads for new text (models trained before pools were packed: `emoknow model pack DIR`).

    Texts are sentences as people write them; each model brings them into the style of its
    training text first, as the command line does.
    """

    def __init__(self, inner: "_emoknow.Model"):
        self._inner = inner

    @classmethod
    def load(cls, directory: Union[str, "os.PathLike[str]"]) -> "Model":
        """Loads a model directory (its files checked against its checksums)."""
        return cls(_emoknow.Model.load(str(directory)))

    def predict(
        self,
        texts: Sequence[str],
        documents: Optional[Sequence[Optional[str]]] = None,
    ) -> np.ndarray:
        """Probabilities, a float32 array of shape (len(texts), len(label_names)).

        `documents` names each text's document (None: it stands alone); a model that reads
        context reads each text's neighbours in its document, in the order given.
        """
        return self._inner.predict(_texts(texts), _documents(documents))

    def labels(
        self,
        texts: Sequence[str],
        documents: Optional[Sequence[Optional[str]]] = None,
    ) -> list:
        """The label sets (by the model's thresholds, or its set decoder): a list of names per
        text."""
        return self._inner.labels(_texts(texts), _documents(documents))

    def predict_labels(
        self,
        texts: Sequence[str],
        documents: Optional[Sequence[Optional[str]]] = None,
    ) -> tuple:
        """`predict` and `labels` in one pass: (float32 array n × labels, label sets)."""
        return self._inner.predict_labels(_texts(texts), _documents(documents))

    def predict_json(
        self,
        texts: Sequence[str],
        documents: Optional[Sequence[Optional[str]]] = None,
        explain: bool = False,
    ) -> list:
        """`emoknow predict --json`'s document: per text, the text as given, the text the model
        read, labels and probabilities by name (with `explain`, the knowledge used)."""
        return json.loads(self._inner.predict_json(_texts(texts), _documents(documents), explain))

    @property
    def label_names(self) -> list:
        """The labels, in the order of `predict`'s columns."""
        return self._inner.label_names

    @property
    def thresholds(self) -> np.ndarray:
        """Per-label thresholds (float32), tuned on validation, as calibrated probabilities."""
        return self._inner.thresholds

    @property
    def kind(self) -> str:
        """`linear`, `frozen`, `knn`, `finetune` or `ensemble`."""
        return self._inner.kind

    @property
    def meta(self) -> dict:
        """The model's meta.json."""
        return json.loads(self._inner.meta_json())


class Store:
    """A store, opened for reading. It holds the store's lock while open (as every emoknow
    command does): close it (or use `with`) before running a command on the same store."""

    def __init__(self, path: Union[str, "os.PathLike[str]"]):
        self._inner: Optional[_emoknow.Store] = _emoknow.Store(str(path))

    def _store(self) -> "_emoknow.Store":
        if self._inner is None:
            raise EmoknowError("the store is closed")
        return self._inner

    def close(self) -> None:
        """Releases the store."""
        self._inner = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def query(
        self,
        emotions: Sequence[str] = (),
        keyword: Optional[str] = None,
        split: Optional[str] = None,
        source: Optional[str] = None,
        limit: int = 10,
    ) -> list:
        """`emoknow query --json`: examples carrying every emotion whose text or rationale holds
        every word of `keyword` (segmented as the index does), best first."""
        if isinstance(emotions, str):
            emotions = [emotions]
        return json.loads(self._store().query(list(emotions), keyword, split, source, limit))

    def example(self, id: int) -> Optional[dict]:
        """`emoknow show --json ID`: the example, its knowledge and its context; None when the
        store has no such example."""
        doc = self._store().example(int(id))
        return None if doc is None else json.loads(doc)

    def similar(self, text_or_id: Union[str, int], k: int = 10) -> list:
        """`emoknow similar --json`: the k training examples most similar to a text (as people
        write it) or to a stored example (its id)."""
        if isinstance(text_or_id, str):
            doc = self._store().similar(text=text_or_id, k=k)
        elif isinstance(text_or_id, (int, np.integer)) and not isinstance(text_or_id, bool):
            doc = self._store().similar(id=int(text_or_id), k=k)
        else:
            raise TypeError("give a text (str) or an example id (int)")
        return json.loads(doc)

    def to_arrow(self) -> "pyarrow.Table":
        """The store as a pyarrow Table with the columns of `emoknow export parquet` (no file
        in between)."""
        import pyarrow as pa

        data = self._store().to_arrow_ipc()
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()

    @property
    def path(self) -> str:
        """The store's directory."""
        return str(self._store().path)

