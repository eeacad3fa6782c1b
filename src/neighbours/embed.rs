//! Vectors for text the store holds none for (new sentences, rationales never embedded), made
//! by the very encoder whose stored vectors they are compared with; and the choice of encoder.

use crate::encoder::embed::{Encoder, EncoderOptions};
use crate::error::{Error, Result};
use crate::spec::EncoderInfo;
use crate::store::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One encoder, loaded on first use (most work reads stored vectors), with the vectors it has
/// made so far: a text is embedded once however many models or retrievals ask for it.
pub struct Embedder {
    info: EncoderInfo,
    dir: Option<PathBuf>,
    encoder: Option<Encoder>,
    cache: HashMap<String, Vec<f32>>,
}

impl Embedder {
    /// An embedder for `info`, loaded from `dir` (default: where the stored vectors were made).
    pub fn new(info: EncoderInfo, dir: Option<PathBuf>) -> Embedder {
        Embedder {
            info,
            dir,
            encoder: None,
            cache: HashMap::new(),
        }
    }

    /// The encoder's description.
    pub fn info(&self) -> &EncoderInfo {
        &self.info
    }

    /// Forgets the vectors made so far (keeping the loaded encoder): a long-running caller
    /// (the server) embeds an unbounded stream of texts.
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    fn encoder(&mut self, n: usize) -> Result<&Encoder> {
        if self.encoder.is_none() {
            let dir = self
                .dir
                .clone()
                .or_else(|| (!self.info.dir.is_empty()).then(|| PathBuf::from(&self.info.dir)))
                .filter(|d| d.exists())
                .ok_or_else(|| Error::EncoderGone {
                    texts: n,
                    name: self.info.name.clone(),
                    dir: self.info.dir.clone(),
                })?;
            self.encoder = Some(load_checked(&dir, &self.info)?);
        }
        self.encoder
            .as_ref()
            .ok_or_else(|| Error::Model("the encoder did not load".into()))
    }

    /// The vectors of `texts`, in order. Texts not embedded before are embedded together (the
    /// encoder sorts them by length into batches); repeated texts once.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut todo: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| !self.cache.contains_key(*t))
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if !todo.is_empty() {
            let vectors = self.encoder(todo.len())?.encode(&todo, &mut |_| {})?;
            for (t, v) in todo.iter().zip(vectors) {
                self.cache.insert((*t).to_string(), v);
            }
        }
        texts
            .iter()
            .map(|t| {
                self.cache
                    .get(*t)
                    .cloned()
                    .ok_or_else(|| Error::Model(format!("no vector was made for {t:?}")))
            })
            .collect()
    }
}

/// Loads the encoder in `dir` and checks it is the one `info` describes (same weights,
/// tokenizer, pooling and length: vectors of another encoder are not comparable).
fn load_checked(dir: &Path, info: &EncoderInfo) -> Result<Encoder> {
    let enc = Encoder::load(
        dir,
        EncoderOptions {
            max_len: info.max_len,
            pooling: info.pooling.parse()?,
            ..Default::default()
        },
    )?;
    if enc.encoder_id() != info.id {
        return Err(Error::Invalid(format!(
            "encoder at {} has id {}, the vectors were made by {}",
            dir.display(),
            enc.encoder_id(),
            info.id
        )));
    }
    Ok(enc)
}

/// The stored encoder `key` names (id, id prefix or name), or the only one the store holds.
pub fn pick_encoder(store: &Store, key: Option<&str>) -> Result<EncoderInfo> {
    if let Some(k) = key {
        return store.find_encoder(k);
    }
    let mut all = store.encoders()?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(Error::NoEmbeddings { encoder: None }),
        _ => Err(Error::AmbiguousEncoder {
            key: None,
            candidates: all
                .iter()
                .map(|e| format!("{} ({})", e.id, e.name))
                .collect(),
        }),
    }
}
