//! An LLM source scored as a classifier: the labels its stored answers assert, against gold.
//!
//! The seed judged its LLMs this way (`emoknow eval --source NAME`). Every example the source
//! was asked about counts: one with a usable answer predicts the labels the answer asserts
//! (as stored, or parsed from the raw answer for records imported without them); one whose
//! answer was unusable (a missing record) predicts nothing.

use crate::corpus::Split;
use crate::knowledge::sanitize::asserted_labels;
use crate::labels::LabelSet;
use crate::metrics::{self, Report};
use crate::store::Store;
use crate::{Error, Result};

/// How a source's answers score against gold; see [`score_source`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceScore {
    /// Examples the source was asked about (knowledge or a missing record).
    pub examples: usize,
    /// Of those, examples with a usable answer (knowledge).
    pub answered: usize,
    /// The metrics, missing answers counting as predicting no label.
    pub report: Report,
}

/// Words for a split filter: "the test split", or "all splits" for `None`.
pub fn split_phrase(split: Option<Split>) -> String {
    split
        .map(|s| format!("the {s} split"))
        .unwrap_or_else(|| "all splits".into())
}

/// Scores the labels asserted by `source`'s answers on `split` (all splits for `None`)
/// against the gold labels.
///
/// Errors: [`Error::NotFound`] when the source has no knowledge or missing record about any
/// example of the split.
pub fn score_source(store: &Store, source: &str, split: Option<Split>) -> Result<SourceScore> {
    let mut gold = Vec::new();
    let mut pred = Vec::new();
    let mut answered = 0;
    for e in &store.examples(split)? {
        let k = store.knowledge_of(e.id, source)?;
        if k.is_none() && !store.has_attempt(e.id, source)? {
            continue;
        }
        gold.push(e.labels);
        pred.push(match k {
            Some(k) => {
                answered += 1;
                if k.asserted.is_empty() {
                    asserted_labels(&k.raw)
                } else {
                    k.asserted
                }
            }
            None => LabelSet::EMPTY,
        });
    }
    if gold.is_empty() {
        return Err(Error::NotFound(format!(
            "source {source:?} has no knowledge about {}",
            split_phrase(split)
        )));
    }
    Ok(SourceScore {
        examples: gold.len(),
        answered,
        report: metrics::evaluate(&gold, &pred),
    })
}
