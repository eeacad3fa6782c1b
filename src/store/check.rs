//! Whole-store reports and repair: [`Store::stats`] (counts and coverage), [`Store::check`]
//! (sled decodes and the index, vectors and neighbour runs agree with it) and
//! [`Store::reindex`] (rebuilds the index from sled).

use super::records::{Example, ExampleId, Knowledge, KnowledgeKind};
use super::{decode, id_from_key, records, vectors, Store, P_EXAMPLE, P_KNOWLEDGE};
use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::labels::{Emotion, NUM_EMOTIONS};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Counts by split, label, source and label-set size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Store directory.
    pub path: String,
    /// All examples.
    pub examples: usize,
    /// Examples per split.
    pub by_split: BTreeMap<String, usize>,
    /// Examples carrying each label, per split (`label → split → count`).
    pub by_label: BTreeMap<String, BTreeMap<String, usize>>,
    /// Examples by number of labels (`"1"`, `"2"`, …).
    pub label_set_sizes: BTreeMap<String, usize>,
    /// Per knowledge source: records, missing, and coverage per split.
    pub sources: BTreeMap<String, SourceStats>,
    /// Stored vectors per encoder.
    pub encoders: Vec<vectors::EncoderStats>,
    /// How the corpus is written (absent: a store written before styles were learned; its
    /// models read text as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_style: Option<super::StyleRecord>,
    /// Examples stored as given whose text models read normalized into the style.
    pub normalized: usize,
}

/// Knowledge counts of one source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStats {
    /// Kind (`rationale`, `neighbours`).
    pub kind: String,
    /// Knowledge records.
    pub records: usize,
    /// Examples recorded as missing (nan, empty, unparseable).
    pub missing: usize,
    /// Records per prompt kind (blind, guided, imported, computed).
    pub by_prompt: BTreeMap<String, usize>,
    /// Fraction of each split's examples with a record.
    pub coverage: BTreeMap<String, f64>,
    /// For neighbours: the last retrieval stopped part-way (rerun it to resume).
    pub partial: bool,
    /// For neighbours: how they were retrieved (absent for neighbours stored before it was
    /// recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<records::NeighbourSpec>,
}

/// The result of `check`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Examples in sled.
    pub examples: usize,
    /// Knowledge records in sled.
    pub knowledge: usize,
    /// Example documents in the index.
    pub indexed_examples: u64,
    /// Rationale documents in the index (neighbour lists are not indexed).
    pub indexed_knowledge: u64,
    /// Vectors verified.
    pub vectors: usize,
    /// Everything found wrong; empty means the store is consistent.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Counts by split, label, source and label-set size, knowledge coverage, vectors.
    pub fn stats(&self) -> Result<Stats> {
        let examples = self.examples(None)?;
        let mut s = Stats {
            path: self.path.display().to_string(),
            examples: examples.len(),
            ..Default::default()
        };
        let mut split_of: HashMap<ExampleId, Split> = HashMap::new();
        for ex in &examples {
            *s.by_split.entry(ex.split.name().into()).or_default() += 1;
            for e in ex.labels.iter() {
                *s.by_label
                    .entry(e.name().into())
                    .or_default()
                    .entry(ex.split.name().into())
                    .or_default() += 1;
            }
            *s.label_set_sizes
                .entry(ex.labels.len().to_string())
                .or_default() += 1;
            split_of.insert(ex.id, ex.split);
        }
        let mut covered: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
        for k in self.all_knowledge(None)? {
            let src = s.sources.entry(k.source.clone()).or_default();
            src.kind = k.kind.name().into();
            src.records += 1;
            *src.by_prompt
                .entry(k.prompt_kind.name().into())
                .or_default() += 1;
            if let Some(sp) = split_of.get(&k.example_id) {
                *covered
                    .entry(k.source.clone())
                    .or_default()
                    .entry(sp.name().into())
                    .or_default() += 1;
            }
        }
        for m in self.all_missing(None)? {
            s.sources.entry(m.source.clone()).or_default().missing += 1;
        }
        for (name, src) in s.sources.iter_mut() {
            for (split, n) in &s.by_split {
                let c = covered
                    .get(name)
                    .and_then(|m| m.get(split))
                    .copied()
                    .unwrap_or(0);
                src.coverage.insert(split.clone(), c as f64 / *n as f64);
            }
        }
        for (name, run) in self.neighbour_runs()? {
            if let Some(src) = s.sources.get_mut(&name) {
                src.partial = !run.complete;
                src.retrieval = Some(run.spec);
            }
        }
        s.encoders = self.encoder_stats()?;
        s.text_style = self.text_style()?;
        s.normalized = self.read_texts()?.len();
        Ok(s)
    }

    /// Verifies that sled decodes and the index agrees with it (counts and ids), and that
    /// every example of an embedded split has a vector of the right dimension.
    pub fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let mut ids = HashSet::new();
        let mut labels_per_emotion = [0usize; NUM_EMOTIONS];
        let mut split_of = HashMap::new();
        for kv in self.db.scan_prefix([P_EXAMPLE]) {
            let (k, v) = kv?;
            match decode::<Example>(&v, "example") {
                Ok(ex) => {
                    if ex.id != id_from_key(&k) {
                        r.problems.push(format!(
                            "example key {} holds id {}",
                            id_from_key(&k),
                            ex.id
                        ));
                    }
                    for e in ex.labels.iter() {
                        labels_per_emotion[e.index()] += 1;
                    }
                    split_of.insert(ex.id, ex.split);
                    ids.insert(ex.id);
                }
                Err(e) => r.problems.push(e.full_message()),
            }
        }
        r.examples = ids.len();
        let mut rationales = 0u64;
        for kv in self.db.scan_prefix([P_KNOWLEDGE]) {
            let (k, v) = kv?;
            match decode::<Knowledge>(&v, "knowledge") {
                Ok(kn) => {
                    if !ids.contains(&kn.example_id) {
                        r.problems.push(format!(
                            "knowledge of {} for example {} which does not exist",
                            kn.source, kn.example_id
                        ));
                    }
                    if kn.example_id != id_from_key(&k) {
                        r.problems.push("knowledge key and record disagree".into());
                    }
                    r.knowledge += 1;
                    if kn.kind == KnowledgeKind::Rationale {
                        rationales += 1;
                    }
                }
                Err(e) => r.problems.push(e.full_message()),
            }
        }
        let pending = self.pending_ids()?;
        if !pending.is_empty() {
            r.problems.push(format!(
                "{} example(s) pending indexing (run `emoknow reindex`)",
                pending.len()
            ));
        }
        match self.check_index(&ids, rationales, &labels_per_emotion, &mut r) {
            Ok(()) => {}
            Err(e @ Error::IndexDamaged { .. }) => r.problems.push(e.full_message()),
            Err(e) => return Err(e),
        }
        self.check_vectors(&split_of, &mut r)?;
        self.check_neighbour_runs(&mut r)?;
        Ok(r)
    }

    /// The index half of [`Store::check`]: reads every segment in full, then compares counts,
    /// ids and labels with sled's. [`Error::IndexDamaged`] when the index cannot be read.
    fn check_index(
        &self,
        ids: &HashSet<ExampleId>,
        rationales: u64,
        labels_per_emotion: &[usize; NUM_EMOTIONS],
        r: &mut CheckReport,
    ) -> Result<()> {
        let census = self.index.verify()?;
        r.indexed_examples = census.examples;
        r.indexed_knowledge = census.knowledge;
        if census.examples != r.examples as u64 {
            r.problems.push(format!(
                "index holds {} example documents, sled {} examples (run `emoknow reindex`)",
                census.examples, r.examples
            ));
        }
        if census.knowledge != rationales {
            r.problems.push(format!(
                "index holds {} rationale documents, sled {} rationales (run `emoknow reindex`)",
                census.knowledge, rationales
            ));
        }
        let missing: Vec<_> = ids.difference(&census.example_ids).take(5).collect();
        let extra: Vec<_> = census.example_ids.difference(ids).take(5).collect();
        if !missing.is_empty() {
            r.problems
                .push(format!("examples not in the index, e.g. {missing:?}"));
        }
        if !extra.is_empty() {
            r.problems.push(format!(
                "index documents for unknown examples, e.g. {extra:?}"
            ));
        }
        if !census.duplicate_ids.is_empty() {
            r.problems.push(format!(
                "examples indexed twice, e.g. {:?}",
                &census.duplicate_ids[..census.duplicate_ids.len().min(5)]
            ));
        }
        for e in Emotion::ALL {
            let n = self.index.count_label(e)?;
            if n != labels_per_emotion[e.index()] {
                r.problems.push(format!(
                    "label {e}: index {n} examples, sled {}",
                    labels_per_emotion[e.index()]
                ));
            }
        }
        Ok(())
    }

    /// Rebuilds the index from sled, whatever state it is in (missing, damaged or fine: it is
    /// derived data), and clears the pending marks. Returns (examples, knowledge) indexed.
    pub fn reindex(&self) -> Result<(usize, usize)> {
        let examples = self.examples(None)?;
        let mut by_id: HashMap<ExampleId, Vec<Knowledge>> = HashMap::new();
        let mut nk = 0;
        for k in self.all_knowledge(None)? {
            nk += 1;
            by_id.entry(k.example_id).or_default().push(k);
        }
        let empty = Vec::new();
        self.index.rebuild(
            examples
                .iter()
                .map(|e| (e, by_id.get(&e.id).unwrap_or(&empty).as_slice())),
        )?;
        self.clear_pending()
            .map_err(|e| e.disk_full_at(&self.path))?;
        Ok((examples.len(), nk))
    }
}
