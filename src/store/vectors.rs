//! Embedding vectors in the store: one per (encoder id, what, example), little-endian f32.
//!
//! Keys in the `vectors` tree: `encoder id` 0 `what` 0 `example id (BE u64)`. `what` is `text`
//! or `k:<source>` (the sanitized knowledge of one source). Encoder descriptions live in the
//! main tree under `c`+encoder id. Nothing here knows how vectors are computed.

use super::records::ExampleId;
use super::{decode, encode, CheckReport, Store, P_ENCODER};
use crate::corpus::Split;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub use crate::spec::EncoderInfo;
use std::collections::{BTreeMap, HashMap};

/// What text a vector embeds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum What {
    /// The example's text.
    Text,
    /// The sanitized knowledge of this source.
    Knowledge(String),
}

impl What {
    fn key(&self) -> String {
        match self {
            What::Text => "text".to_string(),
            What::Knowledge(s) => format!("k:{s}"),
        }
    }

    fn from_key(s: &str) -> What {
        match s.strip_prefix("k:") {
            Some(src) => What::Knowledge(src.to_string()),
            None => What::Text,
        }
    }
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// Vector counts of one encoder (for `stats`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EncoderStats {
    /// The encoder.
    pub encoder: Option<EncoderInfo>,
    /// Vectors per `what`.
    pub vectors: BTreeMap<String, usize>,
}

/// Vectors loaded for brute-force search: row `i` of `data` belongs to `ids[i]`.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    /// Example ids, ascending.
    pub ids: Vec<ExampleId>,
    /// Dimension.
    pub dim: usize,
    /// Row-major `ids.len() × dim`.
    pub data: Vec<f32>,
}

impl VectorSet {
    /// The vector of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Row index of example `id`.
    pub fn position(&self, id: ExampleId) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }
}

fn prefix(encoder: &str, what: &What) -> Vec<u8> {
    let mut k = encoder.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(what.key().as_bytes());
    k.push(0);
    k
}

fn encoder_key(id: &str) -> Vec<u8> {
    let mut k = vec![P_ENCODER];
    k.extend_from_slice(id.as_bytes());
    k
}

fn split_key(key: &[u8]) -> Option<(&str, &str, ExampleId)> {
    let a = key.iter().position(|&b| b == 0)?;
    let rest = &key[a + 1..];
    let b = rest.iter().position(|&b| b == 0)?;
    let id = u64::from_be_bytes(rest[b + 1..].try_into().ok()?);
    Some((
        std::str::from_utf8(&key[..a]).ok()?,
        std::str::from_utf8(&rest[..b]).ok()?,
        id,
    ))
}

impl Store {
    /// Registers an encoder (idempotent).
    pub fn put_encoder(&self, info: &EncoderInfo) -> Result<()> {
        self.db.insert(encoder_key(&info.id), encode(info))?;
        Ok(())
    }

    /// Encoders the store knows.
    pub fn encoders(&self) -> Result<Vec<EncoderInfo>> {
        self.db
            .scan_prefix([P_ENCODER])
            .values()
            .map(|v| decode(&v?, "encoder"))
            .collect()
    }

    /// Writes vectors in one atomic batch and flushes. Each must have the encoder's dimension.
    pub fn put_vectors(
        &self,
        encoder: &EncoderInfo,
        what: &What,
        items: &[(ExampleId, Vec<f32>)],
    ) -> Result<()> {
        let p = prefix(&encoder.id, what);
        let mut batch = sled::Batch::default();
        for (id, v) in items {
            if v.len() != encoder.dim {
                return Err(Error::Invalid(format!(
                    "vector for example {id} has dimension {}, encoder {} has {}",
                    v.len(),
                    encoder.name,
                    encoder.dim
                )));
            }
            let mut k = p.clone();
            k.extend_from_slice(&id.to_be_bytes());
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            batch.insert(k, bytes);
        }
        self.vectors.apply_batch(batch)?;
        self.vectors.flush()?;
        Ok(())
    }

    /// Keys of every vector (any encoder, any `what`) of the given examples.
    pub(super) fn vector_keys_of(
        &self,
        ids: &std::collections::HashSet<ExampleId>,
    ) -> Result<Vec<sled::IVec>> {
        let mut out = Vec::new();
        if ids.is_empty() {
            return Ok(out);
        }
        for k in self.vectors.iter().keys() {
            let k = k?;
            if split_key(&k).is_some_and(|(_, _, id)| ids.contains(&id)) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Whether a vector exists.
    pub fn has_vector(&self, encoder: &str, what: &What, id: ExampleId) -> Result<bool> {
        let mut k = prefix(encoder, what);
        k.extend_from_slice(&id.to_be_bytes());
        Ok(self.vectors.contains_key(k)?)
    }

    /// All vectors of (encoder, what), restricted to `ids` when given.
    pub fn vectors(
        &self,
        encoder: &EncoderInfo,
        what: &What,
        only: Option<&std::collections::HashSet<ExampleId>>,
    ) -> Result<VectorSet> {
        let mut set = VectorSet {
            dim: encoder.dim,
            ..Default::default()
        };
        for kv in self.vectors.scan_prefix(prefix(&encoder.id, what)) {
            let (k, v) = kv?;
            let Some((_, _, id)) = split_key(&k) else {
                return Err(Error::Corrupt(format!(
                    "vector key {:?} of encoder {} is malformed (run `emoknow check`)",
                    String::from_utf8_lossy(&k),
                    encoder.name
                )));
            };
            if only.is_some_and(|o| !o.contains(&id)) {
                continue;
            }
            if v.len() != encoder.dim * 4 {
                return Err(Error::Corrupt(format!(
                    "vector of example {id} has {} bytes, expected {}",
                    v.len(),
                    encoder.dim * 4
                )));
            }
            set.ids.push(id);
            set.data.extend(
                v.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        Ok(set)
    }

    /// Looks an encoder up by id or unique id prefix or name.
    pub fn find_encoder(&self, key: &str) -> Result<EncoderInfo> {
        let all = self.encoders()?;
        let m: Vec<_> = all
            .iter()
            .filter(|e| e.id == key || e.id.starts_with(key) || e.name == key)
            .collect();
        match m.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NoEmbeddings {
                encoder: Some(key.to_string()),
            }),
            _ => Err(Error::AmbiguousEncoder {
                key: Some(key.to_string()),
                candidates: m.iter().map(|e| e.id.clone()).collect(),
            }),
        }
    }

    pub(super) fn encoder_stats(&self) -> Result<Vec<EncoderStats>> {
        let infos: HashMap<String, EncoderInfo> = self
            .encoders()?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let mut by: BTreeMap<String, EncoderStats> = BTreeMap::new();
        for k in self.vectors.iter().keys() {
            let k = k?;
            if let Some((enc, what, _)) = split_key(&k) {
                let s = by.entry(enc.to_string()).or_insert_with(|| EncoderStats {
                    encoder: infos.get(enc).cloned(),
                    ..Default::default()
                });
                *s.vectors.entry(what.to_string()).or_default() += 1;
            }
        }
        Ok(by.into_values().collect())
    }

    /// Checks every vector's dimension, and that each split with any text vector of an
    /// encoder has one for every example.
    pub(super) fn check_vectors(
        &self,
        split_of: &HashMap<ExampleId, Split>,
        r: &mut CheckReport,
    ) -> Result<()> {
        let infos: HashMap<String, EncoderInfo> = self
            .encoders()?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        // (encoder, split) → text vectors present
        let mut present: HashMap<(String, Split), usize> = HashMap::new();
        for kv in self.vectors.iter() {
            let (k, v) = kv?;
            let Some((enc, what, id)) = split_key(&k) else {
                r.problems.push("malformed vector key".into());
                continue;
            };
            let Some(info) = infos.get(enc) else {
                r.problems
                    .push(format!("vectors of unregistered encoder {enc}"));
                continue;
            };
            r.vectors += 1;
            if v.len() != info.dim * 4 {
                r.problems.push(format!(
                    "vector {enc}/{what}/{id}: {} bytes, expected {}",
                    v.len(),
                    info.dim * 4
                ));
            }
            match split_of.get(&id) {
                None => r
                    .problems
                    .push(format!("vector {enc}/{what}/{id} for an unknown example")),
                Some(&sp) if What::from_key(what) == What::Text => {
                    *present.entry((enc.to_string(), sp)).or_default() += 1;
                }
                Some(_) => {}
            }
        }
        let mut per_split: HashMap<Split, usize> = HashMap::new();
        for sp in split_of.values() {
            *per_split.entry(*sp).or_default() += 1;
        }
        for ((enc, sp), n) in present {
            let want = per_split.get(&sp).copied().unwrap_or(0);
            if n != want {
                r.problems.push(format!(
                    "encoder {} has text vectors for {n} of {want} {sp} examples (run `emoknow embed` again to finish)",
                    infos.get(&enc).map(|i| i.name.as_str()).unwrap_or(&enc)
                ));
            }
        }
        Ok(())
    }
}
