//! The store's side of the approximate nearest-neighbour indexes (built in
//! [`crate::neighbours::ann`]): one file per encoder under `STORE/ann/`, described by a record in
//! sled (`a` + encoder id → [`AnnRecord`]).
//!
//! The file is derived data: it can always be rebuilt from the text vectors. The record says
//! what the file was built from (how many vectors, their dimension, a fingerprint of their ids),
//! so a file that no longer matches the vectors (stale) or its record (damaged) is detected.
//! Writers remove the record first, write the file beside and rename it into place, then write
//! the record: after a kill -9 at any moment, a record always describes the file beside it, and
//! a file without a record is simply not used.

use super::records::ExampleId;
use super::{decode, encode, Store};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

const P_ANN: u8 = b'a';

/// What an ANN index file was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnRecord {
    /// The encoder whose text vectors it indexes.
    pub encoder_id: String,
    /// Vectors indexed.
    pub count: u64,
    /// Their dimension.
    pub dim: u64,
    /// [`ids_fingerprint`] of the indexed example ids.
    pub fingerprint: String,
    /// Layout version of the file (bumped when the index parameters change).
    pub version: u32,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Seconds since the Unix epoch when it was written.
    pub built_at: u64,
}

/// A fingerprint of a set of example ids (ascending): equal fingerprints, same ids.
pub fn ids_fingerprint(ids: &[ExampleId]) -> String {
    let mut h = Sha256::new();
    h.update((ids.len() as u64).to_le_bytes());
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key(encoder_id: &str) -> Vec<u8> {
    let mut k = vec![P_ANN];
    k.extend_from_slice(encoder_id.as_bytes());
    k
}

impl Store {
    /// The directory of the ANN index files (`STORE/ann`).
    pub fn ann_dir(&self) -> PathBuf {
        self.path.join("ann")
    }

    /// The ANN index file of an encoder (`STORE/ann/<encoder id>.usearch`).
    pub fn ann_file(&self, encoder_id: &str) -> PathBuf {
        self.ann_dir().join(format!("{encoder_id}.usearch"))
    }

    /// The record of an encoder's ANN index, if one was written.
    pub fn ann_record(&self, encoder_id: &str) -> Result<Option<AnnRecord>> {
        match self.db.get(key(encoder_id))? {
            Some(v) => Ok(Some(decode(&v, "ANN index record")?)),
            None => Ok(None),
        }
    }

    /// Every ANN index record.
    pub fn ann_records(&self) -> Result<Vec<AnnRecord>> {
        self.db
            .scan_prefix([P_ANN])
            .values()
            .map(|v| decode(&v?, "ANN index record"))
            .collect()
    }

    /// Writes an ANN index record (after its file is in place) and flushes.
    pub fn put_ann_record(&self, r: &AnnRecord) -> Result<()> {
        self.db.insert(key(&r.encoder_id), encode(r))?;
        self.db.flush()?;
        Ok(())
    }

    /// Removes an encoder's ANN index record (before its file is replaced) and flushes.
    /// Returns the record that was there.
    pub fn remove_ann_record(&self, encoder_id: &str) -> Result<Option<AnnRecord>> {
        let old = self.ann_record(encoder_id)?;
        if old.is_some() {
            self.db.remove(key(encoder_id))?;
            self.db.flush()?;
        }
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_tells_id_sets_apart() {
        assert_eq!(ids_fingerprint(&[1, 2, 3]), ids_fingerprint(&[1, 2, 3]));
        assert_ne!(ids_fingerprint(&[1, 2, 3]), ids_fingerprint(&[1, 2, 4]));
        assert_ne!(ids_fingerprint(&[1, 2]), ids_fingerprint(&[1, 2, 3]));
    }
}
