//! How the store's corpus is written ([`StyleRecord`], learned at the first ingest or
//! declared), and the text its models read where that differs from what was ingested.
//!
//! Both live in the main tree, written in the same atomic batch as the examples: the style
//! under `m/text_style` (JSON), each example's read text under `r` + id (UTF-8), only for
//! examples whose text as given is not in the style. A store written before styles were
//! learned has neither: its models read every text as given, as they did. No format change.

use super::records::{Example, ExampleId};
use super::{id_from_key, key_id, Store};
use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::text::{Normalizer, TextStyle, Vocabulary};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub(super) const META_TEXT_STYLE: &[u8] = b"m/text_style";
pub(super) const P_READ: u8 = b'r';

/// The text style a store records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StyleRecord {
    /// The style new text is brought into; `None`: text reaches models as written.
    pub style: Option<TextStyle>,
    /// Where it came from (`derived from 26000 sentences of …`, `declared in …`).
    pub origin: String,
}

impl StyleRecord {
    /// One line for people.
    pub fn describe(&self) -> String {
        match &self.style {
            Some(s) => format!("{} ({})", s.describe(), self.origin),
            None => format!("as written: new text is not normalized ({})", self.origin),
        }
    }
}

/// What an ingest does about the store's text style.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum StyleChoice {
    /// Learn it from the texts when the store records none; else keep the recorded one.
    #[default]
    Derive,
    /// Models read text as written: no normalization.
    AsWritten,
    /// This style, declared (`origin` says where).
    Declared {
        /// The style.
        style: TextStyle,
        /// Where it was declared (a file name).
        origin: String,
    },
}

impl Store {
    /// The recorded text style, if any (stores written before styles were learned have none).
    pub fn text_style(&self) -> Result<Option<StyleRecord>> {
        match self.db.get(META_TEXT_STYLE)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
                Error::Corrupt(format!(
                    "the store's text style record does not parse ({e}); re-ingest into a new store"
                ))
            }),
        }
    }

    /// The text models read for example `id` when it differs from the text as given.
    pub fn read_text(&self, id: ExampleId) -> Result<Option<String>> {
        self.db
            .get(key_id(P_READ, id))?
            .map(|v| {
                String::from_utf8(v.to_vec())
                    .map_err(|_| Error::Corrupt(format!("read text of example {id} is not UTF-8")))
            })
            .transpose()
    }

    /// Every example's read text that differs from its text as given.
    pub fn read_texts(&self) -> Result<HashMap<ExampleId, String>> {
        let mut out = HashMap::new();
        for kv in self.db.scan_prefix([P_READ]) {
            let (k, v) = kv?;
            let id = id_from_key(&k);
            let t = String::from_utf8(v.to_vec())
                .map_err(|_| Error::Corrupt(format!("read text of example {id} is not UTF-8")))?;
            out.insert(id, t);
        }
        Ok(out)
    }

    /// `examples` with each text replaced by the text models read.
    pub fn as_read(&self, mut examples: Vec<Example>) -> Result<Vec<Example>> {
        let read = self.read_texts()?;
        if !read.is_empty() {
            for e in &mut examples {
                if let Some(t) = read.get(&e.id) {
                    e.text.clone_from(t);
                }
            }
        }
        Ok(examples)
    }

    /// The words of the train split as models read them: the vocabulary a segmented style
    /// cuts new text with (empty for other styles).
    pub fn vocabulary(&self, style: &TextStyle) -> Result<Vocabulary> {
        self.vocabulary_with(style, &[])
    }

    /// [`Store::vocabulary`] with the words of `more` (training texts about to be stored).
    pub(super) fn vocabulary_with(&self, style: &TextStyle, more: &[&str]) -> Result<Vocabulary> {
        if !style.segmented {
            return Ok(Vocabulary::default());
        }
        let train = self.as_read(self.examples(Some(Split::Train))?)?;
        Ok(Vocabulary::from_texts(
            train
                .iter()
                .map(|e| e.text.as_str())
                .chain(more.iter().copied()),
        ))
    }

    /// The normalizer into the store's style, with the train split's vocabulary; `None` when
    /// the store records no style or text as written.
    pub fn normalizer(&self) -> Result<Option<Normalizer>> {
        let Some(StyleRecord {
            style: Some(style), ..
        }) = self.text_style()?
        else {
            return Ok(None);
        };
        let vocab = self.vocabulary(&style)?;
        Ok(Some(Normalizer::new(style, vocab)))
    }

    /// The style this ingest of `texts` (from `file`) writes under, and whether it is new
    /// (to be recorded with the batch). A store keeps one style: another one declared is
    /// refused.
    pub(super) fn style_for_ingest(
        &self,
        choice: &StyleChoice,
        file: &str,
        texts: &[&str],
    ) -> Result<(StyleRecord, bool)> {
        let have = self.text_style()?;
        let want = match choice {
            StyleChoice::Derive => match have {
                Some(rec) => return Ok((rec, false)),
                None => {
                    // A store written before styles were learned: its texts count too.
                    let old = self.examples(None)?;
                    let mut all: Vec<&str> = old.iter().map(|e| e.text.as_str()).collect();
                    all.extend(texts);
                    let style = TextStyle::derive(&all);
                    let origin = if old.is_empty() {
                        format!("derived from {} sentences of {file}", texts.len())
                    } else {
                        format!(
                            "derived from {} stored sentences and {} of {file}",
                            old.len(),
                            texts.len()
                        )
                    };
                    return Ok((
                        StyleRecord {
                            style: Some(style),
                            origin,
                        },
                        true,
                    ));
                }
            },
            StyleChoice::AsWritten => StyleRecord {
                style: None,
                origin: "declared as written".into(),
            },
            StyleChoice::Declared { style, origin } => StyleRecord {
                style: Some(style.clone()),
                origin: format!("declared in {origin}"),
            },
        };
        match have {
            None => Ok((want, true)),
            Some(rec) if rec.style == want.style => Ok((rec, false)),
            Some(rec) => Err(Error::Invalid(format!(
                "the store's text style is already {}; a store keeps one style (its models \
                 were trained on text in it): ingest into a new store (--store DIR) to use \
                 another, or leave out --text-style",
                rec.describe()
            ))),
        }
    }

    /// Encodes a style record for `m/text_style`.
    pub(super) fn style_bytes(rec: &StyleRecord) -> Result<Vec<u8>> {
        serde_json::to_vec(rec).map_err(|e| Error::Invalid(format!("text style: {e}")))
    }
}
