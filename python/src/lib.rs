//! `emoknow._emoknow`: the Python extension over the emoknow library (pyo3, abi3). The public
//! API is `emoknow/__init__.py`, which wraps these classes (JSON documents become Python
//! objects there, Arrow IPC bytes a pyarrow Table).
//!
//! Every call that works releases the GIL (`Python::detach`); every library error becomes an
//! `emoknow.EmoknowError` carrying the library's message.

use emoknow::batch::Batcher;
use emoknow::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use emoknow::model::classifier::Model;
use emoknow::neighbours::{Choice, Embedder, Retriever};
use emoknow::samples::TextPlace;
use emoknow::store::records::Split;
use emoknow::store::{Filter, QuerySpec, Store};
use emoknow::views;
use numpy::{PyArray1, PyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Arc;

create_exception!(
    _emoknow,
    EmoknowError,
    PyException,
    "An error of the emoknow library (its message says what and how to fix it)."
);

fn err(e: impl std::error::Error + 'static) -> PyErr {
    EmoknowError::new_err(emoknow::error::chain(&e))
}

fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(err)
}

/// A model directory, loaded: it predicts without any store when its directory holds what it
/// reads (every model trained since models carry their neighbour pool).
#[pyclass(module = "emoknow._emoknow", name = "Model", frozen)]
struct PyModel {
    model: Arc<Model>,
    /// Predicts for every thread: one pass for the texts of threads that wait together.
    batcher: Batcher,
}

impl PyModel {
    /// The predictions for `texts` (sentences of `documents` where given: one document name
    /// per text, `None` for a text that stands alone).
    fn run(
        &self,
        texts: &[String],
        documents: Option<Vec<Option<String>>>,
    ) -> PyResult<views::Predictions> {
        if let Some(d) = &documents {
            if d.len() != texts.len() {
                return Err(PyValueError::new_err(format!(
                    "{} documents for {} texts: give one document name (or None) per text",
                    d.len(),
                    texts.len()
                )));
            }
        }
        let places: Option<Vec<Option<TextPlace>>> = documents.map(|d| {
            d.into_iter()
                .map(|doc| doc.map(|name| TextPlace::in_doc(&name)))
                .collect()
        });
        self.batcher.predict_in(texts.to_vec(), places).map_err(err)
    }
}

#[pymethods]
impl PyModel {
    /// Loads the model directory `dir` (checked file by file, as the CLI does).
    #[staticmethod]
    fn load(py: Python<'_>, dir: PathBuf) -> PyResult<PyModel> {
        let model = py.detach(|| Model::load(&dir)).map_err(err)?;
        if let Some(why) = model.needs_store() {
            return Err(EmoknowError::new_err(why));
        }
        let model = Arc::new(model);
        let batcher = Batcher::start("python", model.clone(), None).map_err(err)?;
        Ok(PyModel { model, batcher })
    }

    /// Probabilities, one row per text, columns in `label_names` order.
    #[pyo3(signature = (texts, documents=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        documents: Option<Vec<Option<String>>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pred = py.detach(|| self.run(&texts, documents))?;
        let rows: Vec<Vec<f32>> = pred.probs.iter().map(|p| p.to_vec()).collect();
        if rows.is_empty() {
            return Ok(PyArray2::zeros(py, [0, NUM_EMOTIONS], false));
        }
        PyArray2::from_vec2(py, &rows).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// `predict` and `labels` in one pass: the probabilities and the label sets.
    #[pyo3(signature = (texts, documents=None))]
    #[allow(clippy::type_complexity)]
    fn predict_labels<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        documents: Option<Vec<Option<String>>>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Vec<Vec<String>>)> {
        let pred = py.detach(|| self.run(&texts, documents))?;
        let labels = pred.labels.iter().map(names).collect();
        let rows: Vec<Vec<f32>> = pred.probs.iter().map(|p| p.to_vec()).collect();
        let probs = if rows.is_empty() {
            PyArray2::zeros(py, [0, NUM_EMOTIONS], false)
        } else {
            PyArray2::from_vec2(py, &rows).map_err(|e| PyValueError::new_err(e.to_string()))?
        };
        Ok((probs, labels))
    }

    /// The label sets (by the model's thresholds or its set decoder), one list of names per
    /// text.
    #[pyo3(signature = (texts, documents=None))]
    fn labels(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        documents: Option<Vec<Option<String>>>,
    ) -> PyResult<Vec<Vec<String>>> {
        let pred = py.detach(|| self.run(&texts, documents))?;
        Ok(pred.labels.iter().map(names).collect())
    }

    /// `predict --json`'s document for `texts` (with `explain`, the knowledge used).
    #[pyo3(signature = (texts, documents=None, explain=false))]
    fn predict_json(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        documents: Option<Vec<Option<String>>>,
        explain: bool,
    ) -> PyResult<String> {
        let pred = py.detach(|| self.run(&texts, documents))?;
        json(&pred.json(explain))
    }

    /// Label names, in the order of `predict`'s columns.
    #[getter]
    fn label_names(&self) -> Vec<String> {
        self.model.meta.labels.clone()
    }

    /// Per-label thresholds (tuned on validation), as calibrated probabilities: where each
    /// column of `predict` crosses into a thresholded label.
    #[getter]
    fn thresholds<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.model.calibrated_thresholds())
    }

    /// The kind (`linear`, `frozen`, `knn`, `finetune`, `ensemble`).
    #[getter]
    fn kind(&self) -> &'static str {
        self.model.kind().name()
    }

    /// The model's `meta.json`, as JSON.
    fn meta_json(&self) -> PyResult<String> {
        json(&self.model.meta)
    }
}

fn names(l: &LabelSet) -> Vec<String> {
    l.iter().map(|e| e.name().to_string()).collect()
}

/// A store, opened for reading (it holds the store's lock while open, as every command does).
#[pyclass(module = "emoknow._emoknow", name = "Store", frozen)]
struct PyStore {
    store: Store,
}

#[pymethods]
impl PyStore {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<PyStore> {
        let store = py.detach(|| Store::open(&path)).map_err(err)?;
        Ok(PyStore { store })
    }

    /// `query --json`: examples carrying every emotion whose text or rationale holds every word
    /// of `keyword`.
    #[pyo3(signature = (emotions=Vec::new(), keyword=None, split=None, source=None, limit=10))]
    fn query(
        &self,
        py: Python<'_>,
        emotions: Vec<String>,
        keyword: Option<String>,
        split: Option<String>,
        source: Option<String>,
        limit: usize,
    ) -> PyResult<String> {
        if limit == 0 {
            return Err(PyValueError::new_err("limit must be at least 1"));
        }
        let mut set = LabelSet::EMPTY;
        for e in &emotions {
            let emotion: Emotion = e
                .parse()
                .map_err(|m| PyValueError::new_err(format!("{m}")))?;
            set.insert(emotion);
        }
        let split = split
            .map(|s| s.parse::<Split>())
            .transpose()
            .map_err(|m| PyValueError::new_err(format!("{m}")))?;
        let spec = QuerySpec {
            filter: Filter {
                emotions: set,
                split,
                source,
                exclude: None,
            },
            keyword,
            limit,
        };
        let hits = py
            .detach(|| views::query(&self.store, &spec))
            .map_err(err)?;
        json(&hits)
    }

    /// `show --json`: example `id` with its knowledge and context (`None`: no such example).
    fn example(&self, py: Python<'_>, id: u64) -> PyResult<Option<String>> {
        let shown = py.detach(|| views::show(&self.store, id)).map_err(err)?;
        shown.as_ref().map(json).transpose()
    }

    /// `similar --json`: the `k` training examples most similar to a stored example (`id`) or
    /// to a text (in the store's text style; dense when the store holds vectors, embedding
    /// the text with the encoder's directory, else BM25).
    #[pyo3(signature = (text=None, id=None, k=10))]
    fn similar(
        &self,
        py: Python<'_>,
        text: Option<String>,
        id: Option<u64>,
        k: usize,
    ) -> PyResult<String> {
        if k == 0 {
            return Err(PyValueError::new_err("k must be at least 1"));
        }
        let store = &self.store;
        let hits = py.detach(|| -> emoknow::Result<_> {
            let r = Retriever::choose(store, &Choice::nearest(k))?;
            let hits = match (text, id) {
                (_, Some(id)) => {
                    let ex = store.example(id)?.ok_or_else(|| {
                        emoknow::Error::NotFound(format!("no example {id} in the store"))
                    })?;
                    r.for_examples(store, std::slice::from_ref(&ex), k, LabelSet::EMPTY)?
                }
                (Some(t), None) => {
                    let t = match store.normalizer()? {
                        Some(n) => n.normalize(&t),
                        None => t,
                    };
                    let mut emb = r.encoder().map(|i| Embedder::new(i.clone(), None));
                    r.for_texts(Some(store), &[t.as_str()], emb.as_mut(), k, LabelSet::EMPTY)?
                }
                (None, None) => {
                    return Err(emoknow::Error::Invalid(
                        "give a text or an example id".into(),
                    ))
                }
            };
            views::similar_hits(store, hits.into_iter().next().unwrap_or_default())
        });
        json(&hits.map_err(err)?)
    }

    /// The export's columns (`export parquet`'s `examples.parquet`) as an Arrow IPC stream.
    fn to_arrow_ipc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py
            .detach(|| -> emoknow::Result<Vec<u8>> {
                let batches = emoknow::export::record_batches(&self.store)?;
                let mut out = Vec::new();
                let ipc = |e: arrow_schema::ArrowError| emoknow::Error::Invalid(e.to_string());
                if let Some(first) = batches.first() {
                    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &first.schema())
                        .map_err(ipc)?;
                    for b in &batches {
                        w.write(b).map_err(ipc)?;
                    }
                    w.finish().map_err(ipc)?;
                }
                Ok(out)
            })
            .map_err(err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The store's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }
}

#[pymodule]
fn _emoknow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<PyStore>()?;
    m.add("EmoknowError", m.py().get_type::<EmoknowError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
