//! Format migrations. 1 → 2: vectors move from the sled tree `vectors` (key `encoder id` 0
//! `what` 0 `example id (BE u64)`, value little-endian f32 bytes) to flat files (see
//! `vectors` and `flat`).
//!
//! Crash safety: the old tree stays whole until the end. A killed migration leaves version 1,
//! the old tree, and some flat files and file records; the next run removes those and starts
//! over. The version becomes 2 once every file is committed; only then is the old tree dropped
//! (a store at version 2 that still has it, because the process died right then, drops it at
//! its next open).

use super::{flat, Store, FORMAT_VERSION, META_VERSION};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;

/// What a migration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateSummary {
    /// Format version found.
    pub from: u32,
    /// Format version written.
    pub to: u32,
    /// Vectors moved to flat files.
    pub vectors: u64,
    /// File pairs written (one per encoder and `what`).
    pub files: usize,
    /// Vectors left behind: malformed keys, an unregistered encoder, or a length that is not
    /// their encoder's dimension (unreadable before too: `check` reported them).
    pub skipped: u64,
}

/// The sled tree format 1 kept vectors in.
pub(super) const OLD_TREE: &str = "vectors";
/// Rows per committed batch while migrating.
const BATCH: usize = 8192;

/// (encoder id, what key, example id) of a format-1 vector key.
fn split_key(key: &[u8]) -> Option<(&str, &str, u64)> {
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
    /// Moves a format-1 store's vectors to flat files and sets format 2. `progress(done,
    /// total)` is called first with 0 before anything is written, then after each batch.
    pub(super) fn migrate_v1(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<MigrateSummary> {
        let old = self.db.open_tree(OLD_TREE)?;
        let total = old.len() as u64;
        progress(0, total);
        // Whatever a killed migration wrote: start over.
        self.vector_files.clear()?;
        self.vector_files.flush()?;
        let root = flat::root(&self.path);
        match std::fs::remove_dir_all(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&root, e)),
        }
        self.vector_live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let dims: HashMap<String, usize> = self
            .encoders()?
            .into_iter()
            .map(|e| (e.id, e.dim))
            .collect();
        let mut s = MigrateSummary {
            from: 1,
            to: FORMAT_VERSION,
            ..Default::default()
        };
        // The open batch: (encoder, what, dim) and its rows.
        let mut cur: Option<(String, String, usize)> = None;
        let mut ids: Vec<u64> = Vec::with_capacity(BATCH);
        let mut data: Vec<f32> = Vec::new();
        let mut done = 0u64;
        let mut flush = |cur: &Option<(String, String, usize)>,
                         ids: &mut Vec<u64>,
                         data: &mut Vec<f32>,
                         done: &mut u64|
         -> Result<()> {
            if let (Some((enc, what, dim)), false) = (cur, ids.is_empty()) {
                self.append_vectors(enc, *dim, what, ids, data)?;
                *done += ids.len() as u64;
                progress(*done, total);
            }
            ids.clear();
            data.clear();
            Ok(())
        };
        for kv in old.iter() {
            let (k, v) = kv?;
            let Some((enc, what, id)) = split_key(&k) else {
                s.skipped += 1;
                continue;
            };
            // Vectors of an encoder the store does not know could never be read.
            let dim = dims.get(enc).copied().unwrap_or(0);
            if dim == 0 || v.len() != dim * 4 {
                s.skipped += 1;
                continue;
            }
            let same = cur
                .as_ref()
                .is_some_and(|(e, w, d)| e == enc && w == what && *d == dim);
            if !same {
                flush(&cur, &mut ids, &mut data, &mut done)?;
                cur = Some((enc.to_string(), what.to_string(), dim));
                s.files += 1;
            }
            ids.push(id);
            data.extend(
                v.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            s.vectors += 1;
            if ids.len() >= BATCH {
                flush(&cur, &mut ids, &mut data, &mut done)?;
            }
        }
        flush(&cur, &mut ids, &mut data, &mut done)?;
        // The commit point: from here on the files are where vectors live.
        self.db
            .insert(META_VERSION, &FORMAT_VERSION.to_be_bytes())?;
        self.db.flush()?;
        drop(old);
        self.db.drop_tree(OLD_TREE)?;
        self.db.flush()?;
        Ok(s)
    }
}
