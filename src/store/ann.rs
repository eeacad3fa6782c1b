//! The store's side of the approximate nearest-neighbour indexes (built in
//! [`crate::neighbours::ann`]): one file per encoder under `STORE/ann/`, described by a record in
//! sled (`a` + encoder id → [`AnnRecord`]).
//!
//! The file is derived data: it can always be rebuilt from the text vectors. The record says
//! what the file was built from (how many vectors, their dimension, a fingerprint of their ids),
//! so a file that no longer matches the vectors (stale) or its record (damaged) is detected.
//! Writers remove the record first, write the file beside and rename it into place, then write
//! the record: after a kill -9 at any moment, a record always describes the file beside it, and
//! a file without a record is simply not used. The record also holds a CRC-32 of the file's
//! bytes: a file whose content changed is never handed to usearch (damage in the graph could
//! crash it), and a record written before checksums marks its file stale.

use super::records::ExampleId;
use super::{decode, encode, Store};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
    /// CRC-32 (IEEE) of the file's bytes; `None` in a record written before checksums.
    pub crc32: Option<u32>,
}

/// A record as written before checksums (bincode: the same fields, without the last).
#[derive(Deserialize)]
struct AnnRecordV1 {
    encoder_id: String,
    count: u64,
    dim: u64,
    fingerprint: String,
    version: u32,
    bytes: u64,
    built_at: u64,
}

fn decode_record(bytes: &[u8]) -> Result<AnnRecord> {
    const WHAT: &str = "ANN index record";
    decode(bytes, WHAT).or_else(|e| match decode::<AnnRecordV1>(bytes, WHAT) {
        Ok(r) => Ok(AnnRecord {
            encoder_id: r.encoder_id,
            count: r.count,
            dim: r.dim,
            fingerprint: r.fingerprint,
            version: r.version,
            bytes: r.bytes,
            built_at: r.built_at,
            crc32: None,
        }),
        Err(_) => Err(e),
    })
}

/// CRC-32 (IEEE) of the file at `path`, read in blocks of 1 MiB.
pub fn file_crc32(path: &Path) -> Result<u32> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(h.finalize()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
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
            Some(v) => Ok(Some(decode_record(&v)?)),
            None => Ok(None),
        }
    }

    /// Every ANN index record.
    pub fn ann_records(&self) -> Result<Vec<AnnRecord>> {
        self.db
            .scan_prefix([P_ANN])
            .values()
            .map(|v| decode_record(&v?))
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
    fn a_record_written_before_checksums_reads_without_one() {
        #[derive(Serialize)]
        struct V1<'a>(&'a str, u64, u64, &'a str, u32, u64, u64);
        let old = encode(&V1("enc", 3, 8, "ab", 2, 100, 7));
        let r = decode_record(&old).unwrap();
        assert_eq!((r.count, r.bytes, r.built_at, r.crc32), (3, 100, 7, None));
        let new = AnnRecord {
            crc32: Some(0xdead_beef),
            ..r
        };
        assert_eq!(decode_record(&encode(&new)).unwrap(), new);
        assert!(decode_record(&old[..old.len() - 1]).is_err());
    }

    #[test]
    fn fingerprint_tells_id_sets_apart() {
        assert_eq!(ids_fingerprint(&[1, 2, 3]), ids_fingerprint(&[1, 2, 3]));
        assert_ne!(ids_fingerprint(&[1, 2, 3]), ids_fingerprint(&[1, 2, 4]));
        assert_ne!(ids_fingerprint(&[1, 2]), ids_fingerprint(&[1, 2, 3]));
    }
}
