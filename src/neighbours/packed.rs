//! A neighbour pool packed into a model directory: what a model that attaches neighbours (or
//! votes with them) needs to retrieve for new text without the store.
//!
//! `pool/` holds `pool.json` ([`PoolHeader`]: the retrieval spec, the encoder, the row count),
//! `ids.bin` (u64 little-endian per row), `labels.bin` (one [`LabelSet`] byte per row),
//! `texts.txt` (one text per line: the pool never returns a text equal to the query's, and
//! `--explain` shows them) and, for dense retrieval, `vectors.bin` (the rows' f32 vectors,
//! little-endian, `rows × dim`). The model directory's checksums cover them; a packed pool is
//! the store's pool of the moment it was written (the train split, as retrieval read it), and a
//! model that has one always retrieves from it, with or without a store, so its predictions do
//! not depend on where it runs.
//!
//! Dense retrieval only: a BM25 pool reads the store's search index (its statistics span the
//! whole store), which a model directory does not carry.

use super::retriever::Retriever;
use crate::error::{Error, Result};
use crate::labels::LabelSet;
use crate::spec::{EncoderInfo, ExampleId, NeighbourBy, NeighbourSpec};
use crate::store::records::{Example, Origin};
use crate::store::vectors::VectorSet;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;

/// The directory of a model that holds its packed pool.
pub const POOL_DIR: &str = "pool";

/// `pool/pool.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolHeader {
    /// How the pool is searched (dense, with which encoder; k; the split it came from).
    pub spec: NeighbourSpec,
    /// The encoder whose vectors these are (new text is embedded with it).
    pub encoder: EncoderInfo,
    /// Examples in the pool.
    pub rows: usize,
}

/// A pool read from (or about to be written to) a model directory.
#[derive(Debug, Clone)]
pub struct PackedPool {
    /// Spec, encoder and size.
    pub header: PoolHeader,
    /// The pool's examples (id, text as given, labels).
    pub examples: Vec<Example>,
    /// Their vectors, row-aligned.
    pub vectors: VectorSet,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::ModelDamaged {
        dir: path.to_path_buf(),
        msg: format!(
            "{}: {}; the model directory's checksums matched, so it was written this way: \
             train the model again",
            path.display(),
            msg.into()
        ),
    }
}

impl PackedPool {
    /// The files of `pool/`.
    pub const FILES: [&'static str; 5] = [
        "pool.json",
        "ids.bin",
        "labels.bin",
        "texts.txt",
        "vectors.bin",
    ];

    /// The pool retrieval `spec` reads in `store` now (the examples of its split with their
    /// vectors). `None` for BM25 retrieval, which cannot be packed.
    pub fn from_store(store: &Store, spec: &NeighbourSpec) -> Result<Option<PackedPool>> {
        let NeighbourBy::Dense { .. } = &spec.by else {
            return Ok(None);
        };
        let r = Retriever::open_with(store, spec, super::SearchMode::Exact, None)?;
        let Some(encoder) = r.encoder().cloned() else {
            return Ok(None);
        };
        let examples = r.pool.examples.clone();
        let mut data = Vec::with_capacity(examples.len() * encoder.dim);
        let stored = r.vectors();
        for e in &examples {
            let row = stored
                .position(e.id)
                .ok_or_else(|| Error::NotFound(format!("example {} has no stored vector", e.id)))?;
            data.extend_from_slice(stored.row(row));
        }
        let vectors =
            VectorSet::from_rows(examples.iter().map(|e| e.id).collect(), encoder.dim, data)?;
        Ok(Some(PackedPool {
            header: PoolHeader {
                spec: spec.clone(),
                encoder,
                rows: examples.len(),
            },
            examples,
            vectors,
        }))
    }

    /// Writes `pool/` into the model directory `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let d = dir.join(POOL_DIR);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        let write = |name: &str, bytes: &[u8]| -> Result<()> {
            let p = d.join(name);
            std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))
        };
        let header = serde_json::to_vec_pretty(&self.header)
            .map_err(|e| Error::model_file(d.join("pool.json"), e))?;
        write("pool.json", &header)?;
        let ids: Vec<u8> = self
            .examples
            .iter()
            .flat_map(|e| e.id.to_le_bytes())
            .collect();
        write("ids.bin", &ids)?;
        let labels: Vec<u8> = self.examples.iter().map(|e| e.labels.0).collect();
        write("labels.bin", &labels)?;
        let p = d.join("texts.txt");
        let f = std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
        let mut w = std::io::BufWriter::new(f);
        for e in &self.examples {
            writeln!(w, "{}", e.text.replace(['\n', '\r'], " ")).map_err(|e| Error::io(&p, e))?;
        }
        w.flush().map_err(|e| Error::io(&p, e))?;
        let mut vectors = Vec::with_capacity(self.examples.len() * self.header.encoder.dim * 4);
        for i in 0..self.examples.len() {
            for x in self.vectors.row(i) {
                vectors.extend_from_slice(&x.to_le_bytes());
            }
        }
        write("vectors.bin", &vectors)
    }

    /// Whether the model directory `dir` holds a packed pool.
    pub fn exists(dir: &Path) -> bool {
        dir.join(POOL_DIR).join("pool.json").is_file()
    }

    /// Reads `pool/` of the model directory `dir` (its files already checked against the
    /// model's checksums), refusing sizes that do not agree.
    pub fn read(dir: &Path) -> Result<PackedPool> {
        let d = dir.join(POOL_DIR);
        let read = |name: &str| -> Result<Vec<u8>> {
            let p = d.join(name);
            std::fs::read(&p).map_err(|e| Error::io(&p, e))
        };
        let hp = d.join("pool.json");
        let header: PoolHeader = serde_json::from_slice(&read("pool.json")?)
            .map_err(|e| bad(&hp, format!("does not parse ({e})")))?;
        let (n, dim) = (header.rows, header.encoder.dim);
        let ids = read("ids.bin")?;
        let labels = read("labels.bin")?;
        let vectors = read("vectors.bin")?;
        if ids.len() != n * 8 || labels.len() != n || Some(vectors.len()) != n.checked_mul(dim * 4)
        {
            return Err(bad(
                &d,
                format!(
                    "{} ids, {} labels and {} vector bytes for {n} rows of dimension {dim}",
                    ids.len() / 8,
                    labels.len(),
                    vectors.len()
                ),
            ));
        }
        let tp = d.join("texts.txt");
        let f = std::fs::File::open(&tp).map_err(|e| Error::io(&tp, e))?;
        let texts: Vec<String> = std::io::BufReader::new(f)
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(&tp, e))?;
        if texts.len() != n {
            return Err(bad(&tp, format!("{} texts for {n} rows", texts.len())));
        }
        let ids: Vec<ExampleId> = ids
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let data: Vec<f32> = vectors
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let examples = ids
            .iter()
            .zip(labels)
            .zip(texts)
            .map(|((&id, l), text)| Example {
                id,
                text,
                labels: LabelSet(l),
                split: header.spec.from,
                origin: Origin {
                    file: format!("{}/{POOL_DIR}", dir.display()),
                    line: 0,
                },
            })
            .collect();
        let vectors = VectorSet::from_rows(ids, dim, data)?;
        Ok(PackedPool {
            header,
            examples,
            vectors,
        })
    }

    /// The retrieval over this pool (exact cosine search).
    pub fn retriever(self) -> Result<Retriever> {
        Retriever::packed(
            self.header.spec,
            self.header.encoder,
            self.examples,
            self.vectors,
        )
    }
}
