//! A retrieval set up once: a [`NeighbourSpec`] (dense with an encoder, or BM25; k; the pool
//! split; what to exclude) turned into a pool with its vectors, then queried by stored examples
//! or by new text.

use super::ann::{self, SearchMode, ANN_MIN_ROWS};
use super::embed::{pick_encoder, Embedder};
use super::pool::{Hit, Pool, Probe};
use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::labels::LabelSet;
use crate::spec::{EncoderInfo, NeighbourBy, NeighbourSpec};
use crate::store::records::Example;
use crate::store::vectors::{VectorSet, What};
use crate::store::Store;

/// Dense (cosine over stored embeddings) or BM25 (shared words, no model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Cosine over stored embeddings.
    Dense,
    /// BM25 over the search index.
    Bm25,
}

/// A retrieval as a user describes it; [`Retriever::choose`] resolves it into a
/// [`NeighbourSpec`].
#[derive(Debug, Clone)]
pub struct Choice {
    /// Neighbours per query.
    pub k: usize,
    /// The split neighbours come from.
    pub from: Split,
    /// Dense or BM25 (default: dense when the store holds vectors or an encoder is named).
    pub by: Option<By>,
    /// Stored encoder (id, id prefix or name) for dense retrieval (default: the only one).
    pub encoder: Option<String>,
    /// Never return examples whose id is within this distance of the query's.
    pub exclude_within: u64,
    /// Exact search, the ANN index, or whichever suits the store's size.
    pub search: SearchMode,
    /// Candidates an ANN search keeps (`ef`; default: [`super::ann::default_ef`] for the
    /// index's size).
    pub ef: Option<usize>,
}

impl Choice {
    /// The `k` nearest training examples, by whatever the store supports (dense when it holds
    /// vectors, else BM25), with the only encoder, nothing excluded, the search its size suits.
    pub fn nearest(k: usize) -> Choice {
        Choice {
            k,
            from: Split::Train,
            by: None,
            encoder: None,
            exclude_within: 0,
            search: SearchMode::default(),
            ef: None,
        }
    }
}

/// The pool and encoder of one retrieval.
pub struct Retriever {
    /// The labelled examples neighbours come from.
    pub pool: Pool,
    /// How neighbours are found.
    pub spec: NeighbourSpec,
    encoder: Option<EncoderInfo>,
    /// Every stored text vector of the encoder (queries by stored example look theirs up).
    vectors: VectorSet,
    /// Whether dense search goes through the ANN index.
    approximate: bool,
    /// Why the ANN index asked for was not used (exact search instead), for the caller to show.
    pub note: Option<String>,
}

impl Retriever {
    /// Resolves a user's choice (dense when vectors exist, the only encoder, …) and opens it.
    pub fn choose(store: &Store, c: &Choice) -> Result<Retriever> {
        let dense = match c.by {
            Some(By::Dense) => true,
            Some(By::Bm25) => false,
            None => c.encoder.is_some() || !store.encoders()?.is_empty(),
        };
        // An ef is the ANN search's: asking for one asks for the index.
        let search = match (c.search, c.ef) {
            (SearchMode::Exact, Some(_)) => {
                return Err(Error::Invalid(
                    "ef sets how the ANN index is searched, and exact search was asked for".into(),
                ))
            }
            (SearchMode::Auto, Some(_)) => SearchMode::Ann,
            (search, _) => search,
        };
        let by = if dense {
            NeighbourBy::Dense {
                encoder_id: pick_encoder(store, c.encoder.as_deref())?.id,
            }
        } else if let Some(e) = &c.encoder {
            return Err(Error::Invalid(format!(
                "encoder {e:?} named for BM25 retrieval, which reads words, not vectors"
            )));
        } else if search != SearchMode::Auto {
            return Err(Error::Invalid(
                "exact or ANN search (and its ef) is for dense retrieval, and this one is BM25 \
                 (asked for, or the store holds no vectors)"
                    .into(),
            ));
        } else {
            NeighbourBy::Bm25
        };
        Retriever::open_with(
            store,
            &NeighbourSpec {
                by,
                k: c.k,
                from: c.from,
                exclude_within: c.exclude_within,
            },
            search,
            c.ef,
        )
    }

    /// Opens the retrieval `spec` describes over the store as it is now
    /// ([`SearchMode::Auto`]).
    pub fn open(store: &Store, spec: &NeighbourSpec) -> Result<Retriever> {
        Retriever::open_with(store, spec, SearchMode::Auto, None)
    }

    /// Opens the retrieval `spec` describes, dense search as `mode` says: exact, or through
    /// the encoder's ANN index when it is fresh (exact with a [`Retriever::note`] when not),
    /// keeping `ef` candidates (default: [`super::ann::default_ef`] for the index's size).
    pub fn open_with(
        store: &Store,
        spec: &NeighbourSpec,
        mode: SearchMode,
        ef: Option<usize>,
    ) -> Result<Retriever> {
        let pool_examples = store.examples(Some(spec.from))?;
        if pool_examples.is_empty() {
            return Err(Error::Invalid(format!(
                "the {} split is empty: nothing to retrieve from",
                spec.from
            )));
        }
        let mut note = None;
        let mut approximate = false;
        let (pool, encoder, vectors) = match &spec.by {
            NeighbourBy::Bm25 => (Pool::sparse(pool_examples), None, VectorSet::default()),
            NeighbourBy::Dense { encoder_id } => {
                let info = store.find_encoder(encoder_id)?;
                let vectors = store.vectors(&info, &What::Text, None)?;
                let try_ann = match mode {
                    SearchMode::Exact => false,
                    SearchMode::Ann => true,
                    // A pool that is a small part of the index (the test split, say) is
                    // searched exactly: a graph walk that may visit only a few allowed nodes
                    // would miss neighbours, and a small pool is cheap to scan.
                    SearchMode::Auto => {
                        vectors.ids.len() >= ANN_MIN_ROWS
                            && pool_examples.len() * 10 >= vectors.ids.len()
                    }
                };
                let index = if try_ann {
                    match ann::open(store, &info, &vectors, ef)? {
                        Ok(ix) => Some(ix),
                        Err(why) => {
                            note = Some(why);
                            None
                        }
                    }
                } else {
                    None
                };
                approximate = index.is_some();
                let pool = match index {
                    Some(ix) => Pool::dense_ann(pool_examples, &vectors, ix),
                    None => Pool::dense(pool_examples, &vectors),
                }
                .map_err(|e| {
                    Error::NotFound(format!(
                        "the {} split is not fully embedded by {}: {e}",
                        spec.from, info.name
                    ))
                })?;
                (pool, Some(info), vectors)
            }
        };
        Ok(Retriever {
            pool: pool.exclude_within(spec.exclude_within),
            spec: spec.clone(),
            encoder,
            vectors,
            approximate,
            note,
        })
    }

    /// A dense retrieval over `examples` and their `vectors` (row-aligned), searched exactly:
    /// a pool packed into a model directory ([`super::packed`]).
    pub fn packed(
        spec: NeighbourSpec,
        encoder: EncoderInfo,
        examples: Vec<Example>,
        vectors: VectorSet,
    ) -> Result<Retriever> {
        let pool = Pool::dense(examples, &vectors)?.exclude_within(spec.exclude_within);
        Ok(Retriever {
            pool,
            spec,
            encoder: Some(encoder),
            vectors,
            approximate: false,
            note: None,
        })
    }

    /// Every stored text vector of the encoder of a dense retrieval (empty for BM25).
    pub fn vectors(&self) -> &VectorSet {
        &self.vectors
    }

    /// Whether dense search goes through the ANN index (else it is exact, or BM25).
    pub fn approximate(&self) -> bool {
        self.approximate
    }

    /// The encoder of a dense retrieval.
    pub fn encoder(&self) -> Option<&EncoderInfo> {
        self.encoder.as_ref()
    }

    /// The source name neighbours knowledge gets by default: `knn-<encoder name>` or
    /// `knn-bm25` (a name only: what the neighbours are is the spec stored with them).
    pub fn source_name(&self) -> String {
        match &self.encoder {
            Some(e) => format!("knn-{}", e.name),
            None => "knn-bm25".to_string(),
        }
    }

    /// The `k` nearest pool examples of each stored example (never itself), carrying every
    /// emotion of `emotions`. Dense retrieval uses the examples' stored vectors.
    pub fn for_examples(
        &self,
        store: &Store,
        examples: &[Example],
        k: usize,
        emotions: LabelSet,
    ) -> Result<Vec<Vec<Hit>>> {
        let mut probes = Vec::with_capacity(examples.len());
        // BM25 queries with the text models read (the text as given where it is in style).
        let read = match &self.encoder {
            None => store.read_texts()?,
            Some(_) => Default::default(),
        };
        for e in examples {
            let vector = match &self.encoder {
                None => None,
                Some(info) => Some(
                    self.vectors
                        .position(e.id)
                        .map(|r| self.vectors.row(r))
                        .ok_or_else(|| Error::MissingVector {
                            example: e.id,
                            split: e.split.name(),
                            encoder: info.name.clone(),
                        })?,
                ),
            };
            probes.push(Probe {
                id: Some(e.id),
                text: read.get(&e.id).unwrap_or(&e.text),
                vector,
            });
        }
        self.pool.retrieve(Some(store), &probes, k, emotions)
    }

    /// The `k` nearest pool examples of each new text. Dense retrieval embeds the texts with
    /// `embedder`, which must be this retrieval's encoder; BM25 retrieval searches `store`.
    pub fn for_texts(
        &self,
        store: Option<&Store>,
        texts: &[&str],
        embedder: Option<&mut Embedder>,
        k: usize,
        emotions: LabelSet,
    ) -> Result<Vec<Vec<Hit>>> {
        let vectors = match (&self.encoder, embedder) {
            (None, _) => None,
            (Some(info), Some(emb)) if emb.info().id == info.id => Some(emb.embed(texts)?),
            (Some(info), _) => {
                return Err(Error::Invalid(format!(
                    "dense retrieval of new text needs encoder {} to embed it",
                    info.name
                )))
            }
        };
        let probes: Vec<Probe> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Probe {
                id: None,
                text: t,
                vector: vectors.as_ref().map(|v| v[i].as_slice()),
            })
            .collect();
        self.pool.retrieve(store, &probes, k, emotions)
    }
}
