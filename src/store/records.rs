//! The records sled holds (serde + bincode 2), and their key layout.
//!
//! Every record type is versioned through [`crate::store::FORMAT_VERSION`]: a change to any
//! struct here bumps it, and `Store::open` refuses a store of another version.

pub use crate::corpus::split::Split;
use crate::labels::LabelSet;
use serde::{Deserialize, Serialize};

pub use crate::spec::{now_secs, ExampleId, Neighbour, NeighbourBy, NeighbourSpec};

/// Where a record came from: file name and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The file's name as given on the command line.
    pub file: String,
    /// 1-based line (for CSV: the record's first line).
    pub line: u64,
}

/// One labelled (or, for unlabelled input, empty-labelled) sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Stable id.
    pub id: ExampleId,
    /// The text as given (the seed's is word-segmented with spaces).
    pub text: String,
    /// Gold labels.
    pub labels: LabelSet,
    /// Split.
    pub split: Split,
    /// Source file and line.
    pub origin: Origin,
}

/// Where an example sits in its document (the `docs` tree, keyed by example id). An example
/// without one belongs to its file's unnamed stream, ordered by id: a file without document
/// ids (the seed's) is one document in id order.
///
/// Kept beside the examples rather than in [`Example`], so stores written before documents
/// were known keep their format: every example of such a store is in its file's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    /// The document's name in its file (documents of different files are different).
    pub doc: String,
    /// Position in the document: sentences are ordered by it, then by id.
    pub position: u32,
}

/// What kind of knowledge a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KnowledgeKind {
    /// An LLM's answer with its rationale (理由).
    Rationale,
    /// The K nearest labelled training examples, rendered as text.
    Neighbours,
}

impl KnowledgeKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            KnowledgeKind::Rationale => "rationale",
            KnowledgeKind::Neighbours => "neighbours",
        }
    }
}

/// How the LLM was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    /// Prompt 1: few-shot, without the answer.
    Blind,
    /// Prompt 2: the gold answer was given ("…,答案为<labels>").
    Guided,
    /// Read from a file (e.g. LLaMA-Factory's generated_predictions.jsonl).
    Imported,
    /// Computed by emoknow (retrieved neighbours).
    Computed,
}

impl PromptKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            PromptKind::Blind => "blind",
            PromptKind::Guided => "guided",
            PromptKind::Imported => "imported",
            PromptKind::Computed => "computed",
        }
    }
}

/// Knowledge attached to one example by one source.
///
/// Keyed by (example id, source name): a source holds at most one record per example, so
/// re-importing or re-annotating replaces rather than duplicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knowledge {
    /// The example this knowledge is about.
    pub example_id: ExampleId,
    /// Source name (`qwen-max`, `chatglm3-lora`, `knn-bm25`, …).
    pub source: String,
    /// Kind.
    pub kind: KnowledgeKind,
    /// The text as the source gave it.
    pub raw: String,
    /// The text with the label part and emotion words removed (what trainers append).
    pub sanitized: String,
    /// Labels the raw text asserts (parsed from it), or the neighbours' vote.
    pub asserted: LabelSet,
    /// How the source was asked.
    pub prompt_kind: PromptKind,
    /// Requests it took (1 for blind-accepted; 1 + guided attempts otherwise; 0 when imported).
    pub attempts: u32,
    /// Model name as reported by the source.
    pub model: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The neighbours, for [`KnowledgeKind::Neighbours`].
    pub neighbours: Vec<Neighbour>,
}

/// A source that had nothing usable for an example (the literal "nan", an empty value, an
/// unparseable LLM answer). Counted in stats, never used as knowledge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// The example.
    pub example_id: ExampleId,
    /// Source name.
    pub source: String,
    /// Why nothing was stored.
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// The state of one source's neighbours retrieval: what it was asked, over which pool, and
/// whether it ran to the end. Written before the first neighbour record and updated when the
/// last is stored, so a killed run is seen (by `check`, `stats`, the next run) as partial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourRun {
    /// The retrieval settings.
    pub spec: NeighbourSpec,
    /// Fingerprint of the pool ([`crate::store::Store::split_fingerprint`] of `spec.from`)
    /// when the run started: neighbours found in another pool are not resumed.
    pub pool: String,
    /// The split whose examples the last run gave neighbours (None: every split).
    pub split: Option<Split>,
    /// Whether the last run stored neighbours for every example it was asked for.
    pub complete: bool,
    /// Seconds since the Unix epoch, at the last update.
    pub updated_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::vectors::EncoderInfo;
    use crate::store::{decode, encode};

    /// xorshift64*: a deterministic stream of test bytes.
    struct Bytes(u64);
    impl Bytes {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn fill(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn knowledge() -> Knowledge {
        Knowledge {
            example_id: 7,
            source: "qwen-max".into(),
            kind: KnowledgeKind::Neighbours,
            raw: "理由: 担心".into(),
            sanitized: "担心".into(),
            asserted: "Love,Joy".parse().unwrap(),
            prompt_kind: PromptKind::Guided,
            attempts: 2,
            model: "m".into(),
            created_at: 1,
            neighbours: vec![Neighbour {
                id: 3,
                score: 0.5,
                labels: "Anger".parse().unwrap(),
            }],
        }
    }

    /// Decoding arbitrary bytes, or a valid record cut, flipped or extended, returns a value
    /// or an error: it never panics (nor allocates without bound).
    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let example = Example {
            id: 1,
            text: "我 很 担忧".into(),
            labels: "Anxiety".parse().unwrap(),
            split: Split::Train,
            origin: Origin {
                file: "/data/Train.csv".into(),
                line: 2,
            },
        };
        let run = NeighbourRun {
            spec: NeighbourSpec {
                by: NeighbourBy::Dense {
                    encoder_id: "abc".into(),
                },
                k: 10,
                from: Split::Train,
                exclude_within: 0,
            },
            pool: "00ff".into(),
            split: None,
            complete: true,
            updated_at: 0,
        };
        let valid = [
            encode(&example),
            encode(&knowledge()),
            encode(&Missing {
                example_id: 1,
                source: "s".into(),
                reason: "nan".into(),
                created_at: 0,
            }),
            encode(&run),
        ];
        let mut rng = Bytes(0x9E37_79B9_7F4A_7C15);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for _ in 0..3000 {
            let n = (rng.next() % 64) as usize;
            inputs.push(rng.fill(n));
        }
        for v in &valid {
            for cut in 0..v.len() {
                inputs.push(v[..cut].to_vec());
            }
            for _ in 0..500 {
                let mut m = v.clone();
                let at = (rng.next() as usize) % m.len();
                m[at] = rng.next() as u8;
                inputs.push(m);
            }
            let mut long = v.clone();
            long.extend([0xFF; 16]);
            inputs.push(long);
        }
        for bytes in &inputs {
            let _ = decode::<Example>(bytes, "example");
            let _ = decode::<Knowledge>(bytes, "knowledge");
            let _ = decode::<Missing>(bytes, "missing");
            let _ = decode::<NeighbourRun>(bytes, "run");
            let _ = decode::<EncoderInfo>(bytes, "encoder");
            let _ = decode::<Vec<ExampleId>>(bytes, "pending ids");
            let _ = decode::<u64>(bytes, "origin");
        }
        assert_eq!(decode::<Example>(&valid[0], "example").unwrap(), example);
    }
}
