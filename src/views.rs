//! The documents emoknow shows: what the CLI prints with `--json` and what `emoknow serve`
//! answers over HTTP and renders as pages. Each document is built here once, so the command
//! line and the API say the same thing (`query --json` and `GET /api/query`, `show --json` and
//! `GET /api/examples/{id}`, `similar --json` and `GET /api/similar`, `predict --json` and
//! `POST /api/predict`, `eval --json` and `GET /api/eval/{model}`); the server's documents
//! add fields, never change the CLI's. Also the highlighted snippets both front ends show.
//!
//! This module sits on top of the flow (it reads the store, builds samples and runs models)
//! and nothing in the flow imports it.

use crate::error::{Error, Result};
use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use crate::metrics::{self, Report};
use crate::model::calibration::{reliability, Reliability};
use crate::model::classifier::{Meta, Model};
use crate::model::sample::{KnowledgeMode, Probs, Sample, DEFAULT_CONTEXT};
use crate::model::thresholds::label_f1_curve;
use crate::neighbours::{Hit, Retriever};
use crate::samples::{SampleBuilder, TextPlace};
use crate::store::records::{Example, ExampleId, Knowledge, KnowledgeKind, Missing, Split};
use crate::store::{Entry, QueryHit, QuerySpec, Store};
use serde::Serialize;
use std::path::Path;

/// [`Store::query`], keeping only the knowledge of the spec's source when it names one (the
/// hits of `query --json` and `GET /api/query`).
pub fn query(store: &Store, spec: &QuerySpec) -> Result<Vec<QueryHit>> {
    let mut hits = store.query(spec)?;
    if let Some(src) = &spec.filter.source {
        for h in &mut hits {
            h.entry.knowledge.retain(|k| &k.source == src);
        }
    }
    Ok(hits)
}

/// The text of a knowledge record worth showing for a keyword: the sanitized text, unless
/// only the raw text contains one of `tokens`.
pub fn best_knowledge_text<'a>(k: &'a Knowledge, tokens: &[String]) -> &'a str {
    let has = |s: &str| {
        let l = s.to_lowercase();
        tokens.iter().any(|t| l.contains(t.as_str()))
    };
    if !tokens.is_empty() && !has(&k.sanitized) && has(&k.raw) {
        &k.raw
    } else {
        &k.sanitized
    }
}

/// One example with all its knowledge, the sources that had nothing for it, and the
/// sentences around it in its document (`show --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Show {
    /// The example and its knowledge records.
    #[serde(flatten)]
    pub entry: Entry,
    /// Sources recorded as having nothing usable for it.
    pub missing: Vec<Missing>,
    /// The sentences before and after it in its document (text only).
    pub context: DocContext,
    /// The text models read, when it differs from the text as given (a sentence not written
    /// in the store's text style, normalized into it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
}

/// One sentence of an example's document context: its id and text (never its labels; the
/// context is text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextSentence {
    /// The sentence's example id.
    pub id: ExampleId,
    /// Its text.
    pub text: String,
}

/// The sentences around an example in its document, as `show` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct DocContext {
    /// Which document this is.
    pub note: &'static str,
    /// The document's name in its file (`null`: the file has no document ids and is one
    /// stream in id order).
    pub doc: Option<String>,
    /// The example's position in the document (`null` in a stream: id order).
    pub position: Option<u32>,
    /// Up to W sentences before it, in document order.
    pub before: Vec<ContextSentence>,
    /// Up to W sentences after it, in document order.
    pub after: Vec<ContextSentence>,
}

/// The note of a context from a named document.
pub const DOCUMENT_NOTE: &str =
    "the sentences around it in its document (the file's document ids), text only";

/// The note of a context from a file without document ids.
pub const STREAM_NOTE: &str = "its file has no document ids: it is one stream in id order, and these are the sentences around it there (in a corpus kept in document order, the seed's, its document), text only";

/// The example `id` with its knowledge and missing records and the sentences around it in
/// its document ([`DEFAULT_CONTEXT`] each side); `None` when the store has no such example.
pub fn show(store: &Store, id: ExampleId) -> Result<Option<Show>> {
    show_with_context(store, id, DEFAULT_CONTEXT)
}

/// [`show`] with `w` sentences of context each side.
pub fn show_with_context(store: &Store, id: ExampleId, w: usize) -> Result<Option<Show>> {
    let Some(entry) = store.entry(id)? else {
        return Ok(None);
    };
    let missing = store
        .all_missing(None)?
        .into_iter()
        .filter(|m| m.example_id == id)
        .collect();
    let context = doc_context(store, id, w)?;
    Ok(Some(Show {
        entry,
        missing,
        context,
        read: store.read_text(id)?,
    }))
}

/// The sentences around example `id` in its document.
pub fn doc_context(store: &Store, id: ExampleId, w: usize) -> Result<DocContext> {
    let record = store.doc_record(id)?;
    let (before, after) = store.context(id, w)?;
    let sentences = |part: Vec<Example>| -> Vec<ContextSentence> {
        part.into_iter()
            .map(|e| ContextSentence {
                id: e.id,
                text: e.text,
            })
            .collect()
    };
    Ok(DocContext {
        note: if record.is_some() {
            DOCUMENT_NOTE
        } else {
            STREAM_NOTE
        },
        position: record.as_ref().map(|r| r.position),
        doc: record.map(|r| r.doc),
        before: sentences(before),
        after: sentences(after),
    })
}

/// One neighbour of an example as shown with it: who found it, and its text.
#[derive(Debug, Clone, Serialize)]
pub struct NeighbourView {
    /// The neighbours source it is stored under, or [`LIVE_NEIGHBOURS`] when retrieved now.
    pub source: String,
    /// The neighbour's example id.
    pub id: ExampleId,
    /// Similarity (cosine, or BM25).
    pub score: f32,
    /// Its gold labels.
    pub labels: LabelSet,
    /// Its text (absent if the store no longer holds it).
    pub text: Option<String>,
}

/// The source name of neighbours retrieved when the example is shown (it has none stored).
pub const LIVE_NEIGHBOURS: &str = "retrieved now (bm25)";

/// The examples around one in its document, whole (the example page shows their labels).
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// What these are ([`DOCUMENT_NOTE`] or [`STREAM_NOTE`]).
    pub note: &'static str,
    /// The examples before it, in document order.
    pub before: Vec<Example>,
    /// The examples after it, in document order.
    pub after: Vec<Example>,
}

/// One example as `GET /api/examples/{id}` and its page show it: `show --json`'s document
/// (with its document context) with its neighbours (every stored neighbours source;
/// retrieved now when none is stored).
#[derive(Debug, Clone, Serialize)]
pub struct ExampleView {
    /// The example, knowledge and missing records and context (`show --json`).
    #[serde(flatten)]
    pub show: Show,
    /// Its neighbours, best first per source.
    pub neighbours: Vec<NeighbourView>,
    /// The examples around it, whole, for the page (the document shows `show`'s context).
    #[serde(skip)]
    pub context: Context,
}

/// The example `id` with its neighbours and `context` examples either side. Neighbours come
/// from its stored neighbours records; when it has none, `live` (if given) retrieves `k` now.
/// `None` when the store has no such example.
pub fn example(
    store: &Store,
    id: ExampleId,
    live: Option<&Retriever>,
    k: usize,
    context: usize,
) -> Result<Option<ExampleView>> {
    let Some(show) = show_with_context(store, id, context)? else {
        return Ok(None);
    };
    let mut neighbours = Vec::new();
    for kn in &show.entry.knowledge {
        if kn.kind != KnowledgeKind::Neighbours {
            continue;
        }
        for n in &kn.neighbours {
            neighbours.push(NeighbourView {
                source: kn.source.clone(),
                id: n.id,
                score: n.score,
                labels: n.labels,
                text: store.example(n.id)?.map(|e| e.text),
            });
        }
    }
    if neighbours.is_empty() {
        if let Some(r) = live {
            let ex = std::slice::from_ref(&show.entry.example);
            for h in r
                .for_examples(store, ex, k, LabelSet::EMPTY)?
                .into_iter()
                .flatten()
            {
                neighbours.push(NeighbourView {
                    source: LIVE_NEIGHBOURS.to_string(),
                    id: h.id,
                    score: h.score,
                    labels: h.labels,
                    text: Some(h.text),
                });
            }
        }
    }
    let (before, after) = store.context(id, context)?;
    let note = show.context.note;
    Ok(Some(ExampleView {
        show,
        neighbours,
        context: Context {
            note,
            before,
            after,
        },
    }))
}

/// One hit of `similar --json` and `GET /api/similar`: the neighbour and a rationale of it.
#[derive(Debug, Clone, Serialize)]
pub struct SimilarHit {
    /// The neighbour (id, score, labels, text).
    #[serde(flatten)]
    pub hit: Hit,
    /// Its sanitized rationale, if any source has one.
    pub rationale: Option<String>,
}

/// The hits with their rationales.
pub fn similar_hits(store: &Store, hits: Vec<Hit>) -> Result<Vec<SimilarHit>> {
    hits.into_iter()
        .map(|hit| {
            Ok(SimilarHit {
                rationale: best_rationale(store, hit.id)?,
                hit,
            })
        })
        .collect()
}

/// The sanitized rationale of an example, if any source has one.
pub fn best_rationale(store: &Store, id: ExampleId) -> Result<Option<String>> {
    Ok(store
        .knowledge(id)?
        .into_iter()
        .find(|k| k.kind == KnowledgeKind::Rationale)
        .map(|k| k.sanitized))
}

/// The text of neighbour `id` of a prediction by `model`: from the pool packed into the model
/// (the first member of an ensemble that has one holding it), else from `store`; empty when
/// neither holds it.
pub fn neighbour_text(store: Option<&Store>, model: &Model, id: ExampleId) -> Result<String> {
    for leaf in model.leaves() {
        if let Some(e) = leaf
            .packed_pool()
            .and_then(|r| r.pool.examples.iter().find(|e| e.id == id))
        {
            return Ok(e.text.clone());
        }
    }
    Ok(match store {
        Some(s) => s.example(id)?.map(|e| e.text).unwrap_or_default(),
        None => String::new(),
    })
}

/// What a prediction for a text with nothing the model knows says.
pub const UNKNOWN_WARNING: &str =
    "no known words: the model knows none of this text's words, so the prediction is its prior (the same for any such text), not about this text";

/// A model's predictions for new texts.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// The texts as given.
    pub given: Vec<String>,
    /// Per text, the sample of the single model that attaches knowledge (the first such
    /// member of an ensemble; else the first): what `--explain` shows. Its text is the text
    /// that model read (brought into its training text's style).
    pub samples: Vec<Sample>,
    /// Per text, the probabilities (canonical label order).
    pub probs: Vec<Probs>,
    /// Per text, the labels (thresholded, or the decoded set).
    pub labels: Vec<LabelSet>,
    /// Per text, the most probable label sets with their probabilities (see
    /// [`Model::top_sets`]), most probable first.
    pub sets: Vec<Vec<(LabelSet, f64)>>,
    /// Per text, for a model decoding sets for micro-F1, each label's probability under the
    /// sets and the cut its labels exceed (see [`Model::set_label_probabilities`]).
    pub under_sets: Vec<Option<(Probs, f32)>>,
    /// Per text, whether the model knows none of it (see [`Model::unknown_texts`]).
    pub unknown: Vec<bool>,
    /// What knowledge the model attaches.
    pub mode: KnowledgeMode,
}

/// Predicts `texts` (not in the store) with `model`: samples built by `builder`
/// (neighbours retrieved and text embedded now, as the model's spec says), probabilities,
/// labels and the unknown-text flags.
pub fn predict(
    builder: &mut SampleBuilder<'_>,
    model: &Model,
    texts: &[String],
) -> Result<Predictions> {
    predict_in(builder, model, texts, None)
}

/// [`predict`] for texts that are sentences of documents (`places`, see
/// [`crate::samples::batch_contexts`]): a model reading context gets each text's
/// neighbours in its document.
pub fn predict_in(
    builder: &mut SampleBuilder<'_>,
    model: &Model,
    texts: &[String],
    places: Option<&[Option<TextPlace>]>,
) -> Result<Predictions> {
    let mut inputs = builder.for_model_texts_in(model, texts, None, places)?;
    let (probs, labels) = model.predict(&inputs)?;
    let sets = probs.iter().map(|p| model.top_sets(p, TOP_SETS)).collect();
    let under_sets = probs
        .iter()
        .map(|p| model.set_label_probabilities(p))
        .collect();
    let unknown = model.unknown_texts(&inputs)?;
    let shown = model
        .leaves()
        .iter()
        .position(|m| m.meta.attach.mode != KnowledgeMode::None)
        .unwrap_or(0);
    let samples = if shown < inputs.len() {
        inputs.swap_remove(shown)
    } else {
        Vec::new()
    };
    Ok(Predictions {
        given: texts.to_vec(),
        samples,
        probs,
        labels,
        sets,
        under_sets,
        unknown,
        mode: model.knowledge_spec().mode,
    })
}

/// Probabilities as a JSON object keyed by emotion name.
fn by_emotion(p: &Probs) -> serde_json::Map<String, serde_json::Value> {
    Emotion::ALL
        .iter()
        .map(|e| (e.name().to_string(), serde_json::json!(p[e.index()])))
        .collect()
}

/// Label sets a prediction lists with their probabilities (`--explain`, the classify page).
pub const TOP_SETS: usize = 3;

impl Predictions {
    /// The predictions of the first `n` texts, taken out of these (a batch of several
    /// requests' texts split back into each request's).
    pub fn split_front(&mut self, n: usize) -> Predictions {
        let n = n.min(self.probs.len());
        let rest = Predictions {
            given: self.given.split_off(n.min(self.given.len())),
            samples: self.samples.split_off(n.min(self.samples.len())),
            probs: self.probs.split_off(n),
            labels: self.labels.split_off(n.min(self.labels.len())),
            sets: self.sets.split_off(n.min(self.sets.len())),
            under_sets: self.under_sets.split_off(n.min(self.under_sets.len())),
            unknown: self.unknown.split_off(n.min(self.unknown.len())),
            mode: self.mode,
        };
        std::mem::replace(self, rest)
    }

    /// The document of `predict --json` and `POST /api/predict`: per text, `text` (as given),
    /// `read` (the text the model read, in its training text's style), `labels`,
    /// `probabilities` by emotion name (calibrated), `warning` for an unknown text, and with
    /// `explain` the `knowledge` and `neighbours` attached (and, for a model reading context,
    /// the `context`: `before` and `after` texts as the model read them), the most probable
    /// label `sets` with their `probability`, and for a model decoding sets for micro-F1
    /// `under_sets`: each label's `probabilities` under the sets and the `cut` they exceed.
    pub fn json(&self, explain: bool) -> Vec<serde_json::Value> {
        self.samples
            .iter()
            .zip(&self.given)
            .zip(&self.probs)
            .zip(&self.labels)
            .zip(&self.unknown)
            .enumerate()
            .map(|(i, ((((s, given), p), l), &unknown))| {
                let mut v = serde_json::json!({
                    "text": given,
                    "read": s.text,
                    "labels": l,
                    "probabilities": by_emotion(p)
                });
                if unknown {
                    v["warning"] = serde_json::json!(UNKNOWN_WARNING);
                }
                if explain {
                    v["sets"] = self.sets.get(i).map_or(serde_json::json!([]), |sets| {
                        sets.iter()
                            .map(|(set, q)| serde_json::json!({"labels": set, "probability": q}))
                            .collect()
                    });
                    if let Some(Some((q, cut))) = self.under_sets.get(i) {
                        v["under_sets"] = serde_json::json!({
                            "cut": cut,
                            "probabilities": by_emotion(q),
                        });
                    }
                    v["knowledge"] = serde_json::json!(s.knowledge);
                    v["neighbours"] = serde_json::to_value(&s.neighbours).unwrap_or_default();
                    if let Some(c) = &s.context {
                        v["context"] = serde_json::json!({
                            "before": c.before_text(),
                            "after": c.after_text(),
                        });
                    }
                }
                v
            })
            .collect()
    }
}

/// A model's predictions on labelled samples, scored.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Gold labels, in sample order.
    pub gold: Vec<LabelSet>,
    /// Probabilities (calibrated).
    pub probs: Vec<Probs>,
    /// Scores before calibration.
    pub scores: Vec<Probs>,
    /// Predicted labels (thresholded, or the decoded set).
    pub pred: Vec<LabelSet>,
    /// The metrics (`eval --json`).
    pub report: Report,
    /// How well the probabilities are calibrated.
    pub calibration: Reliability,
    /// The pooled ECE of the scores before calibration (the same as `calibration`'s for a
    /// model without one).
    pub uncalibrated_ece: f64,
}

/// Writes `eval`'s per-example predictions to `path` as JSON Lines (`id` where given, `gold`,
/// `labels`, `probabilities`, `scores`), through a temporary file renamed into place; an
/// existing `path` is refused.
pub fn write_predictions(path: &Path, ids: &[Option<u64>], ev: &Evaluation) -> Result<()> {
    if path.exists() {
        return Err(Error::Invalid(format!(
            "{} exists: give --predictions a new file",
            path.display()
        )));
    }
    let by_name = |p: &Probs| -> serde_json::Map<String, serde_json::Value> {
        Emotion::ALL
            .iter()
            .map(|e| (e.name().to_string(), serde_json::json!(p[e.index()])))
            .collect()
    };
    // Written beside its name and renamed into place; removed if this fails or Ctrl-C stops it.
    let tmp = path.with_extension("jsonl.tmp");
    crate::temps::write_beside(&tmp, path, || {
        use std::io::Write;
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
        for i in 0..ev.gold.len() {
            let mut v = serde_json::json!({
                "gold": ev.gold[i],
                "labels": ev.pred[i],
                "probabilities": by_name(&ev.probs[i]),
                "scores": by_name(&ev.scores[i]),
            });
            if let Some(Some(id)) = ids.get(i) {
                v["id"] = serde_json::json!(id);
            }
            writeln!(out, "{v}").map_err(|e| Error::io(&tmp, e))?;
        }
        out.into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io(&tmp, e))
    })
}

/// Predicts and scores `inputs` (one sample list per single model, as
/// [`SampleBuilder::for_model`] builds them), with gold from the first list.
pub fn evaluate(model: &Model, inputs: &[Vec<Sample>]) -> Result<Evaluation> {
    let gold: Vec<LabelSet> = inputs
        .first()
        .map(|s| s.iter().map(|s| s.labels).collect())
        .unwrap_or_default();
    let d = model.decide(inputs)?;
    let report = metrics::evaluate(&gold, &d.labels);
    Ok(Evaluation {
        calibration: reliability(&d.probs, &gold),
        uncalibrated_ece: reliability(&d.scores, &gold).ece,
        gold,
        probs: d.probs,
        scores: d.scores,
        pred: d.labels,
        report,
    })
}

/// Label `label`'s F1 against its threshold on validation.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdCurve {
    /// The label.
    pub label: String,
    /// The model's tuned threshold.
    pub threshold: f32,
    /// `[threshold, F1]` at every grid threshold (0.01 … 0.99).
    pub points: Vec<(f32, f64)>,
}

/// A model's report, as `GET /api/eval/{model}` answers and its page draws: `eval --json`'s
/// metrics on a split, which emotion is mistaken for which, and the per-label threshold
/// curves on validation.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The model's name.
    pub model: String,
    /// The split evaluated.
    pub split: Split,
    /// The metrics (`eval --json`'s keys).
    #[serde(flatten)]
    pub report: Report,
    /// `label_confusion[gold][predicted]` (see [`metrics::label_confusion`]).
    pub label_confusion: Vec<Vec<usize>>,
    /// Per label, F1 against the threshold on the validation split (empty without one).
    pub threshold_curves: Vec<ThresholdCurve>,
    /// How well the probabilities are calibrated on the split: ECE and reliability curves.
    pub calibration: Reliability,
    /// The pooled ECE before calibration.
    pub uncalibrated_ece: f64,
}

/// The report of model `name` from its evaluation on `split` and, for the threshold curves,
/// its predictions on validation.
pub fn model_report(
    name: &str,
    split: Split,
    eval: &Evaluation,
    val: Option<&Evaluation>,
    thresholds: &[f32; NUM_EMOTIONS],
) -> ModelReport {
    let threshold_curves = match val {
        Some(v) if !v.gold.is_empty() => Emotion::ALL
            .iter()
            .map(|e| ThresholdCurve {
                label: e.name().to_string(),
                threshold: thresholds[e.index()],
                points: label_f1_curve(&v.probs, &v.gold, e.index()),
            })
            .collect(),
        _ => Vec::new(),
    };
    ModelReport {
        model: name.to_string(),
        split,
        report: eval.report.clone(),
        label_confusion: metrics::label_confusion(&eval.gold, &eval.pred),
        threshold_curves,
        calibration: eval.calibration.clone(),
        uncalibrated_ece: eval.uncalibrated_ece,
    }
}

/// A loaded model as `GET /api/models` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView<'a> {
    /// The name it is served under.
    pub name: &'a str,
    /// Its directory.
    pub dir: String,
    /// Its `meta.json` (settings, thresholds, validation metrics).
    pub meta: &'a Meta,
}

/// A piece of text cut around its first keyword match, with the matches marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// The text of the window (whitespace runs collapsed to one space).
    pub text: String,
    /// Byte ranges of `text` that match a token, sorted, not overlapping.
    pub marks: Vec<(usize, usize)>,
    /// Whether text was cut before the window.
    pub cut_before: bool,
    /// Whether text was cut after it.
    pub cut_after: bool,
}

impl Snippet {
    /// The window as consecutive `(piece, marked)` parts.
    pub fn parts(&self) -> Vec<(&str, bool)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for &(s, e) in &self.marks {
            if let (Some(before), Some(mark)) = (self.text.get(pos..s), self.text.get(s..e)) {
                if !before.is_empty() {
                    out.push((before, false));
                }
                out.push((mark, true));
                pos = e;
            }
        }
        if let Some(rest) = self.text.get(pos..) {
            if !rest.is_empty() {
                out.push((rest, false));
            }
        }
        out
    }

    /// The snippet as one line: marks between `open` and `close`, `…` where it was cut.
    pub fn render(&self, open: &str, close: &str) -> String {
        let mut out = String::new();
        if self.cut_before {
            out.push('…');
        }
        for (piece, marked) in self.parts() {
            if marked {
                out.push_str(open);
                out.push_str(piece);
                out.push_str(close);
            } else {
                out.push_str(piece);
            }
        }
        if self.cut_after {
            out.push('…');
        }
        out
    }
}

/// `text` on one line, cut to about `width` characters starting a little before the first
/// occurrence of any token, with every occurrence in the window marked (case-insensitive for
/// ASCII).
pub fn snippet(text: &str, tokens: &[String], width: usize) -> Snippet {
    // One line per snippet: rationales carry paragraph breaks.
    let text = &text.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = text.to_lowercase();
    // Byte ranges of matches (lower-casing keeps CJK offsets; skipped when it does not).
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    if lower.len() == text.len() {
        for t in tokens.iter().filter(|t| !t.is_empty()) {
            let mut from = 0;
            while let Some(p) = lower.get(from..).and_then(|rest| rest.find(t.as_str())) {
                ranges.push((from + p, from + p + t.len()));
                from += p + t.len();
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
            _ => merged.push(r),
        }
    }
    // Window of `width` chars starting a little before the first match.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let first = merged.first().map(|r| r.0).unwrap_or(0);
    let first_char = chars.iter().position(|&(b, _)| b >= first).unwrap_or(0);
    let start = first_char.saturating_sub(width / 4);
    let end = (start + width).min(chars.len());
    let start = end.saturating_sub(width).min(start);
    let (b0, b1) = (
        chars.get(start).map_or(text.len(), |c| c.0),
        chars.get(end).map_or(text.len(), |c| c.0),
    );
    let marks = merged
        .iter()
        .filter(|r| r.1 > b0 && r.0 < b1)
        .map(|&(s, e)| (s.max(b0) - b0, e.min(b1) - b0))
        .collect();
    Snippet {
        text: text.get(b0..b1).unwrap_or("").to_string(),
        marks,
        cut_before: start > 0,
        cut_after: end < chars.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_line_and_mark_every_token_in_the_window() {
        let s = snippet("理由:\n\n担忧\n未来", &["担忧".into()], 40);
        assert_eq!(s.render("【", "】"), "理由: 【担忧】 未来");
        let s = snippet("我 担忧 孩子 的 未来", &["担忧".into(), "未来".into()], 40);
        assert_eq!(s.render("【", "】"), "我 【担忧】 孩子 的 【未来】");
        assert_eq!(
            s.parts(),
            [
                ("我 ", false),
                ("担忧", true),
                (" 孩子 的 ", false),
                ("未来", true)
            ]
        );
        let long = format!("{}担忧{}", "甲".repeat(50), "乙".repeat(50));
        let h = snippet(&long, &["担忧".into()], 20).render("【", "】");
        assert!(
            h.starts_with('…') && h.ends_with('…') && h.contains("【担忧】"),
            "{h}"
        );
        assert_eq!(snippet("", &["x".into()], 10).render("[", "]"), "");
    }
}
