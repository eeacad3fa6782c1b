//! The state of each neighbours source's retrieval ([`NeighbourRun`]), kept under
//! `m/nb/<source>` in the main tree: what a run was asked, over which pool, and whether it
//! finished. `check` and `stats` report a run that stopped part-way or whose pool has changed.

use super::records::{Example, NeighbourRun};
use super::{decode, encode, CheckReport, Store};
use crate::corpus::Split;
use crate::error::Result;
use sha2::{Digest, Sha256};

const P_RUN: &[u8] = b"m/nb/";

fn run_key(source: &str) -> Vec<u8> {
    let mut k = P_RUN.to_vec();
    k.extend_from_slice(source.as_bytes());
    k
}

impl Store {
    /// Records the state of `source`'s retrieval (durably).
    pub fn put_neighbour_run(&self, source: &str, run: &NeighbourRun) -> Result<()> {
        self.db.insert(run_key(source), encode(run))?;
        self.db.flush()?;
        Ok(())
    }

    /// The state of `source`'s retrieval, if one was recorded (stores written before runs
    /// were recorded have none).
    pub fn neighbour_run(&self, source: &str) -> Result<Option<NeighbourRun>> {
        self.db
            .get(run_key(source))?
            .map(|v| decode(&v, "neighbour run"))
            .transpose()
    }

    /// Every recorded retrieval, by source name.
    pub fn neighbour_runs(&self) -> Result<Vec<(String, NeighbourRun)>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(P_RUN) {
            let (k, v) = kv?;
            let source = String::from_utf8_lossy(&k[P_RUN.len()..]).into_owned();
            out.push((source, decode(&v, "neighbour run")?));
        }
        Ok(out)
    }

    pub(super) fn delete_neighbour_run(&self, source: &str) -> Result<()> {
        self.db.remove(run_key(source))?;
        Ok(())
    }

    /// A fingerprint of a split's examples (ids, texts, gold labels): equal fingerprints mean
    /// the same retrieval pool.
    pub fn split_fingerprint(&self, split: Split) -> Result<String> {
        Ok(fingerprint(&self.examples(Some(split))?))
    }

    /// Problems with recorded retrievals: stopped part-way, or retrieved from a pool that has
    /// changed since.
    pub(super) fn check_neighbour_runs(&self, r: &mut CheckReport) -> Result<()> {
        for (source, run) in self.neighbour_runs()? {
            if !run.complete {
                r.problems.push(format!(
                    "neighbours of source {source}: the retrieval stopped part-way (run the same `emoknow knowledge retrieve` again to resume)"
                ));
            } else if self.split_fingerprint(run.spec.from)? != run.pool {
                r.problems.push(format!(
                    "neighbours of source {source}: the {} split changed since they were retrieved (run `emoknow knowledge retrieve` again)",
                    run.spec.from
                ));
            }
        }
        Ok(())
    }
}

/// See [`Store::split_fingerprint`].
pub fn fingerprint(examples: &[Example]) -> String {
    let mut h = Sha256::new();
    for e in examples {
        h.update(e.id.to_le_bytes());
        h.update(e.labels.to_string().as_bytes());
        h.update([0]);
        h.update((e.text.len() as u64).to_le_bytes());
        h.update(e.text.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
