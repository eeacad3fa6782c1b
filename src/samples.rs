//! Building classifier inputs: the samples a model's [`Needs`] describe, for stored examples
//! (their stored rationale, neighbours and vectors) or for new text (neighbours retrieved and
//! vectors embedded now). Trainers, evaluators and `predict` all get their samples here, so
//! training and inference see knowledge in the same form.
//!
//! The seed's protocol is expressible: train on one rationale source (qwen-max, written with
//! the gold answer in view) and evaluate on another (the fine-tuned LLM's, written blind).

use crate::corpus::Split;
use crate::error::{Error, Result, SourceRole};
use crate::labels::LabelSet;
use crate::model::classifier::Model;
use crate::model::sample::{AttachSpec, Context, ContextVectors, KnowledgeMode, Needs, Sample};
use crate::neighbours::{stored_spec, Embedder, Retriever};
use crate::spec::{EncoderInfo, ExampleId, Neighbour, NeighbourSpec};
use crate::store::records::{Example, Knowledge, KnowledgeKind};
use crate::store::vectors::What;
use crate::store::{DocIndex, Store};
use crate::text::Normalizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// The rationale and neighbours `spec` attaches, picked from an example's stored records.
pub fn pick(
    records: &[Knowledge],
    spec: &AttachSpec,
    eval: bool,
) -> (Option<String>, Vec<Neighbour>) {
    let mut rationale = None;
    let mut neighbours = Vec::new();
    if spec.mode.rationale() {
        let src = spec.rationale_source(eval);
        rationale = records
            .iter()
            .find(|k| Some(&k.source) == src && k.kind == KnowledgeKind::Rationale)
            .map(|k| k.sanitized.clone());
    }
    if spec.mode.neighbours() {
        if let Some(k) = records.iter().find(|k| {
            Some(&k.source) == spec.neighbours_source.as_ref()
                && k.kind == KnowledgeKind::Neighbours
        }) {
            neighbours = k
                .neighbours
                .iter()
                .take(spec.neighbours_k.max(1))
                .cloned()
                .collect();
        }
    }
    (rationale, neighbours)
}

/// Checks that the sources a spec names exist in the store, and records how the neighbours
/// source was retrieved (so a model trained on them finds new texts' neighbours the same way);
/// refuses more neighbours than that retrieval stored.
pub fn resolve(store: &Store, spec: &mut AttachSpec) -> Result<()> {
    if spec.mode == KnowledgeMode::None {
        return Ok(());
    }
    let sources: Vec<String> = store.stats()?.sources.into_keys().collect();
    let need = |name: &Option<String>, role: SourceRole| -> Result<()> {
        match name {
            Some(n) if sources.contains(n) => Ok(()),
            _ => Err(Error::MissingSource {
                role,
                name: name.clone(),
                available: sources.clone(),
            }),
        }
    };
    if spec.mode.rationale() {
        need(&spec.source, SourceRole::Rationale)?;
        if spec.eval_source.is_some() {
            need(&spec.eval_source, SourceRole::EvalRationale)?;
        }
    }
    if spec.mode.neighbours() {
        need(&spec.neighbours_source, SourceRole::Neighbours)?;
        if let Some(src) = &spec.neighbours_source {
            let stored = stored_spec(store, src)?;
            // Stored examples have `stored.k` neighbours, new text would get `neighbours_k`:
            // training and prediction would read different inputs.
            if spec.neighbours_k > stored.k {
                return Err(Error::Setting {
                    name: "neighbours_k",
                    msg: format!(
                        "{} neighbours asked for, but the store holds {} per example of \
                         source {src:?}",
                        spec.neighbours_k, stored.k
                    ),
                });
            }
            spec.neighbours = Some(stored);
        }
    }
    Ok(())
}

/// Whether the example has a rationale of the spec's source (evaluation source when `eval`),
/// whatever the mode (for `--only-with-knowledge`).
pub fn has_rationale(store: &Store, id: ExampleId, spec: &AttachSpec, eval: bool) -> Result<bool> {
    Ok(match spec.rationale_source(eval) {
        Some(s) => store.knowledge_of(id, s)?.is_some(),
        None => true,
    })
}

/// Where a text of a batch of new texts sits: `doc` names its document, `position` orders it
/// there (ties and absent positions in batch order). Texts without a place stand alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPlace {
    /// The document's name (texts of one batch with the same name are one document).
    pub doc: String,
    /// Its position in the document.
    pub position: Option<u32>,
}

impl TextPlace {
    /// A place in the batch's document named `doc`, in batch order.
    pub fn in_doc(doc: &str) -> TextPlace {
        TextPlace {
            doc: doc.to_string(),
            position: None,
        }
    }
}

/// The batch indices of each text's context: the `w` texts before it (nearest last) and
/// after it (nearest first) in its document (`places[i]` for text `i`, see [`TextPlace`]); a
/// text without a place (or every text, when `places` is `None`) stands alone.
pub fn batch_context_indices(
    n: usize,
    places: Option<&[Option<TextPlace>]>,
    w: usize,
) -> Vec<(Vec<usize>, Vec<usize>)> {
    let mut out: Vec<(Vec<usize>, Vec<usize>)> = vec![(Vec::new(), Vec::new()); n];
    let Some(places) = places else {
        return out;
    };
    let mut docs: HashMap<&str, Vec<(u32, usize)>> = HashMap::new();
    for i in 0..n {
        if let Some(p) = places.get(i).and_then(|p| p.as_ref()) {
            docs.entry(p.doc.as_str())
                .or_default()
                .push((p.position.unwrap_or(0), i));
        }
    }
    for members in docs.values_mut() {
        // Stable: equal positions keep batch order.
        members.sort_by_key(|m| m.0);
        for (k, &(_, i)) in members.iter().enumerate() {
            let side = |range: std::ops::Range<usize>| -> Vec<usize> {
                members[range].iter().map(|m| m.1).collect()
            };
            out[i] = (
                side(k.saturating_sub(w)..k),
                side(k + 1..(k + 1).saturating_add(w).min(members.len())),
            );
        }
    }
    out
}

/// The context ([`Context`]) of each text of a batch: the `w` texts on each
/// side in its document (see [`batch_context_indices`]).
pub fn batch_contexts(
    texts: &[String],
    places: Option<&[Option<TextPlace>]>,
    w: usize,
) -> Vec<Context> {
    batch_context_indices(texts.len(), places, w)
        .into_iter()
        .map(|(before, after)| {
            let side =
                |ix: &[usize]| -> Vec<&str> { ix.iter().map(|&i| texts[i].as_str()).collect() };
            Context::new(&side(&before), &side(&after))
        })
        .collect()
}

fn texts_of_part(part: &[(ExampleId, String)]) -> Vec<&str> {
    part.iter().map(|(_, t)| t.as_str()).collect()
}

/// Which stored examples a training run reads.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Train and validate only on examples that have a rationale of the spec's source
    /// (training) and evaluation source (validation), whatever the knowledge mode.
    pub only_with_knowledge: bool,
    /// Use at most this many training examples (a seeded random subset).
    pub max_train: Option<usize>,
    /// Seed of the subset.
    pub seed: u64,
}

/// The training and validation examples of a run: the train and val splits, restricted as
/// `sel` asks. The test split is never read.
pub fn training_examples(
    store: &Store,
    attach: &AttachSpec,
    sel: &Selection,
) -> Result<(Vec<Example>, Vec<Example>)> {
    let split_examples = |split: Split, eval: bool| -> Result<Vec<Example>> {
        let mut ex = store.examples(Some(split))?;
        // With a source named, the restriction holds even for text-only models, so a
        // text-only baseline can be trained on exactly the rows the knowledge model sees.
        if sel.only_with_knowledge
            && (attach.mode != KnowledgeMode::None || attach.source.is_some())
        {
            let mut keep = Vec::with_capacity(ex.len());
            for e in ex {
                if has_rationale(store, e.id, attach, eval)? {
                    keep.push(e);
                }
            }
            ex = keep;
        }
        Ok(ex)
    };
    let mut train = split_examples(Split::Train, false)?;
    let val = split_examples(Split::Val, true)?;
    if let Some(n) = sel.max_train {
        if n < train.len() {
            let mut rng = rand::rngs::StdRng::seed_from_u64(sel.seed);
            train.shuffle(&mut rng);
            train.truncate(n);
            train.sort_by_key(|e| e.id);
        }
    }
    Ok((train, val))
}

/// Builds samples from one store, sharing work across models and calls: each encoder is
/// loaded once and each text embedded once, each retrieval opened once.
///
/// Without a store ([`SampleBuilder::without_store`]) it builds samples of new text for models
/// whose directory holds what they need (their packed neighbour pool, see
/// [`crate::neighbours::packed`]); stored examples, and new text for a model that retrieves
/// from the store, are refused with an error naming what is missing.
pub struct SampleBuilder<'s> {
    store: Option<&'s Store>,
    embedders: HashMap<String, Embedder>,
    retrievers: HashMap<NeighbourSpec, Retriever>,
    train_ids: Option<HashSet<ExampleId>>,
    documents: Option<DocIndex>,
    /// Stored examples' texts as models read them, where they differ (read on first use).
    read: Option<HashMap<ExampleId, String>>,
}

impl<'s> SampleBuilder<'s> {
    /// A builder over `store`.
    pub fn new(store: &'s Store) -> SampleBuilder<'s> {
        SampleBuilder::with_store(Some(store))
    }

    /// A builder of samples of new text that reads no store.
    pub fn without_store() -> SampleBuilder<'static> {
        SampleBuilder::with_store(None)
    }

    /// A builder over `store`, if any.
    pub fn with_store(store: Option<&'s Store>) -> SampleBuilder<'s> {
        SampleBuilder {
            store,
            embedders: HashMap::new(),
            retrievers: HashMap::new(),
            train_ids: None,
            documents: None,
            read: None,
        }
    }

    /// Forgets the vectors of texts embedded so far, keeping loaded encoders and opened
    /// retrievals: a long-running builder (the server's) would otherwise keep every text it
    /// was ever asked about.
    pub fn forget_texts(&mut self) {
        for e in self.embedders.values_mut() {
            e.forget();
        }
    }

    /// The store, or an error saying that `what` needs one.
    fn store(&self, what: &str) -> Result<&'s Store> {
        self.store.ok_or_else(|| {
            Error::Invalid(format!(
                "{what} needs the store, and none was opened (give --store DIR)"
            ))
        })
    }

    fn embedder(&mut self, info: &EncoderInfo, dir: Option<&PathBuf>) -> &mut Embedder {
        self.embedders
            .entry(info.id.clone())
            .or_insert_with(|| Embedder::new(info.clone(), dir.cloned()))
    }

    fn retriever(&mut self, spec: &NeighbourSpec) -> Result<&Retriever> {
        if !self.retrievers.contains_key(spec) {
            let store = self.store("retrieving neighbours from the store's pool")?;
            let r = Retriever::open(store, spec)?;
            self.retrievers.insert(spec.clone(), r);
        }
        self.retrievers
            .get(spec)
            .ok_or_else(|| Error::Model("a retrieval did not open".into()))
    }

    /// Retrieves for new texts with `spec` (embedding them first when dense): from `packed`,
    /// a model's own pool, when it has one, else from the store.
    fn retrieve_texts(
        &mut self,
        spec: &NeighbourSpec,
        packed: Option<&Retriever>,
        dir: Option<&PathBuf>,
        texts: &[&str],
        k: usize,
    ) -> Result<Vec<Vec<Neighbour>>> {
        if packed.is_none() {
            self.retriever(spec)?;
        }
        let info = match packed {
            Some(r) => r.encoder().cloned(),
            None => self.retrievers.get(spec).and_then(|r| r.encoder().cloned()),
        };
        if let Some(info) = &info {
            self.embedder(info, dir);
        }
        let store = self.store;
        let r = match packed {
            Some(r) => r,
            None => self
                .retrievers
                .get(spec)
                .ok_or_else(|| Error::Model("a retrieval did not open".into()))?,
        };
        let emb = info.as_ref().and_then(|i| self.embedders.get_mut(&i.id));
        Ok(r.for_texts(store, texts, emb, k, LabelSet::EMPTY)?
            .into_iter()
            .map(|hits| hits.iter().map(|h| h.neighbour()).collect())
            .collect())
    }

    fn train_ids(&mut self) -> Result<&HashSet<ExampleId>> {
        if self.train_ids.is_none() {
            let ids = self
                .store("stored examples' neighbours")?
                .examples(Some(Split::Train))?
                .iter()
                .map(|e| e.id)
                .collect();
            self.train_ids = Some(ids);
        }
        self.train_ids
            .as_ref()
            .ok_or_else(|| Error::Model("train ids did not load".into()))
    }

    /// The store's documents (texts as models read them), read on first use.
    fn documents(&mut self) -> Result<&DocIndex> {
        if self.documents.is_none() {
            self.documents = Some(
                self.store("a stored example's context")?
                    .documents_as_read()?,
            );
        }
        self.documents
            .as_ref()
            .ok_or_else(|| Error::Model("documents did not load".into()))
    }

    /// Samples of stored examples for `needs`. `eval` picks the evaluation rationale source.
    ///
    /// With a context ([`AttachSpec::context`]), each sample carries the text of the sentences
    /// around it in its document, whatever their split (text, never labels).
    ///
    /// Attached neighbours are the stored ones, which must be present and other examples of
    /// the train split (neighbours stored before the splits changed could carry validation or
    /// test labels into the features), and retrieved as the model's spec says.
    pub fn examples(
        &mut self,
        needs: &Needs,
        examples: &[Example],
        eval: bool,
    ) -> Result<Vec<Sample>> {
        let spec = &needs.attach;
        if spec.mode.neighbours() {
            self.check_stored_spec(spec)?;
            self.train_ids()?;
        }
        let store = self.store("samples of stored examples")?;
        if self.read.is_none() {
            self.read = Some(store.read_texts()?);
        }
        let empty = HashSet::new();
        let train = self.train_ids.as_ref().unwrap_or(&empty);
        let no_read = HashMap::new();
        let read = self.read.as_ref().unwrap_or(&no_read);
        let mut out = Vec::with_capacity(examples.len());
        for e in examples {
            let (rationale, neighbours) = if spec.mode == KnowledgeMode::None {
                (None, Vec::new())
            } else {
                let records = store.knowledge(e.id)?;
                if spec.mode.neighbours()
                    && !records.iter().any(|k| {
                        Some(&k.source) == spec.neighbours_source.as_ref()
                            && k.kind == KnowledgeKind::Neighbours
                    })
                {
                    return Err(Error::NotFound(format!(
                        "example {} ({}) has no neighbours of source {}: the retrieval stopped part-way or did not cover the {} split; run `emoknow knowledge retrieve` again (it resumes)",
                        e.id,
                        e.split,
                        spec.neighbours_source.as_deref().unwrap_or("?"),
                        e.split
                    )));
                }
                pick(&records, spec, eval)
            };
            if let Some(n) = neighbours
                .iter()
                .find(|n| n.id == e.id || !train.contains(&n.id))
            {
                return Err(Error::Invalid(format!(
                    "the stored neighbours ({}) of example {} include example {}, which is {}: \
                     the splits changed after they were retrieved; run `emoknow knowledge \
                     retrieve` again",
                    spec.neighbours_source.as_deref().unwrap_or("?"),
                    e.id,
                    n.id,
                    if n.id == e.id {
                        "itself"
                    } else {
                        "not in the train split now"
                    }
                )));
            }
            out.push(Sample::new(
                e.id,
                read.get(&e.id).unwrap_or(&e.text).clone(),
                e.labels,
                rationale,
                neighbours,
                spec,
            ));
        }
        if spec.context > 0 {
            let docs = self.documents()?;
            for s in &mut out {
                let (before, after) = docs.context(s.id, spec.context);
                s.context = Some(Context::new(&texts_of_part(before), &texts_of_part(after)));
            }
        }
        if let Some(r) = &needs.retrieve {
            let found = self
                .retriever(r)?
                .for_examples(store, examples, r.k, LabelSet::EMPTY)?;
            for (s, hits) in out.iter_mut().zip(found) {
                s.neighbours = hits.iter().map(|h| h.neighbour()).collect();
            }
        }
        if let Some(info) = &needs.vectors {
            self.stored_vectors(info, needs.encoder_dir.as_ref(), spec, &mut out, eval)?;
            if spec.context > 0 {
                self.stored_context_vectors(info, needs.encoder_dir.as_ref(), spec, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Fills each sample's pooled context vectors from the stored vectors of the sentences
    /// around it in its document (whatever their split; embedded now when not stored).
    fn stored_context_vectors(
        &mut self,
        info: &EncoderInfo,
        dir: Option<&PathBuf>,
        spec: &AttachSpec,
        samples: &mut [Sample],
    ) -> Result<()> {
        let w = spec.context;
        self.documents()?;
        let docs = self
            .documents
            .take()
            .ok_or_else(|| Error::Model("documents did not load".into()))?;
        let mut ids: HashSet<ExampleId> = HashSet::new();
        for s in samples.iter() {
            let (before, after) = docs.context(s.id, w);
            ids.extend(before.iter().chain(after).map(|(id, _)| *id));
        }
        let stored =
            self.store("stored context vectors")?
                .vectors(info, &What::Text, Some(&ids))?;
        // Context sentences without stored vectors (an interrupted `embed`): embedded now.
        let mut missing: Vec<(ExampleId, &str)> = Vec::new();
        for s in samples.iter() {
            let (before, after) = docs.context(s.id, w);
            for (id, text) in before.iter().chain(after) {
                if stored.position(*id).is_none() && !missing.iter().any(|m| m.0 == *id) {
                    missing.push((*id, text.as_str()));
                }
            }
        }
        let texts: Vec<&str> = missing.iter().map(|m| m.1).collect();
        let embedded: HashMap<ExampleId, Vec<f32>> = if texts.is_empty() {
            HashMap::new()
        } else {
            let vs = self.embedder(info, dir).embed(&texts)?;
            missing.iter().map(|m| m.0).zip(vs).collect()
        };
        let vector_of = |id: ExampleId| -> Result<&[f32]> {
            match stored.position(id) {
                Some(r) => Ok(stored.row(r)),
                None => embedded
                    .get(&id)
                    .map(Vec::as_slice)
                    .ok_or_else(|| Error::NotFound(format!("no vector for context sentence {id}"))),
            }
        };
        for s in samples.iter_mut() {
            let (before, after) = docs.context(s.id, w);
            let b: Vec<&[f32]> = before
                .iter()
                .map(|(id, _)| vector_of(*id))
                .collect::<Result<_>>()?;
            let a: Vec<&[f32]> = after
                .iter()
                .map(|(id, _)| vector_of(*id))
                .collect::<Result<_>>()?;
            s.context_vectors = Some(ContextVectors::pool(&b, &a, info.dim, spec.context_decay));
        }
        self.documents = Some(docs);
        Ok(())
    }

    /// Refuses stored neighbours found otherwise than the model was trained on.
    fn check_stored_spec(&self, spec: &AttachSpec) -> Result<()> {
        let (Some(source), Some(want)) = (&spec.neighbours_source, &spec.neighbours) else {
            return Ok(());
        };
        if let Some(run) = self.store("stored neighbours")?.neighbour_run(source)? {
            if run.spec != *want {
                return Err(Error::Invalid(format!(
                    "the neighbours of source {source} in the store were retrieved with {:?}, the model was trained on neighbours retrieved with {want:?}: retrieve them again with the model's settings, or train again",
                    run.spec
                )));
            }
        }
        Ok(())
    }

    /// Fills text (and attached rationale) vectors: stored ones, else embedded now.
    fn stored_vectors(
        &mut self,
        info: &EncoderInfo,
        dir: Option<&PathBuf>,
        spec: &AttachSpec,
        samples: &mut [Sample],
        eval: bool,
    ) -> Result<()> {
        let ids: HashSet<ExampleId> = samples.iter().map(|s| s.id).filter(|&id| id != 0).collect();
        let store = self.store("stored vectors")?;
        let text = store.vectors(info, &What::Text, Some(&ids))?;
        let rationale_src = spec
            .rationale_source(eval)
            .filter(|_| spec.mode.rationale())
            .cloned();
        let rationale = match &rationale_src {
            Some(src) => Some(store.vectors(info, &What::Knowledge(src.clone()), Some(&ids))?),
            None => None,
        };
        let mut todo_text: Vec<usize> = Vec::new();
        let mut todo_rationale: Vec<usize> = Vec::new();
        for (i, s) in samples.iter_mut().enumerate() {
            match text.position(s.id).filter(|_| s.id != 0) {
                Some(r) => s.vector = Some(text.row(r).to_vec()),
                None => todo_text.push(i),
            }
            if let Some(rv) = &rationale {
                match rv.position(s.id).filter(|_| s.id != 0) {
                    Some(r) => s.rationale_vector = Some(rv.row(r).to_vec()),
                    None if s.rationale.as_ref().is_some_and(|r| !r.is_empty()) => {
                        todo_rationale.push(i)
                    }
                    None => {}
                }
            }
        }
        if !todo_text.is_empty() || !todo_rationale.is_empty() {
            let emb = self.embedder(info, dir);
            let texts: Vec<&str> = todo_text
                .iter()
                .map(|&i| samples[i].text.as_str())
                .collect();
            let vt = emb.embed(&texts)?;
            let rts: Vec<&str> = todo_rationale
                .iter()
                .map(|&i| samples[i].rationale.as_deref().unwrap_or(""))
                .collect();
            let vr = emb.embed(&rts)?;
            for (&i, v) in todo_text.iter().zip(vt) {
                samples[i].vector = Some(v);
            }
            for (&i, v) in todo_rationale.iter().zip(vr) {
                samples[i].rationale_vector = Some(v);
            }
        }
        Ok(())
    }

    /// Samples of texts the store does not hold (with gold `labels` when known): no rationale
    /// (they were never annotated), neighbours retrieved now as the model's spec says, vectors
    /// embedded now. Each text stands alone (no context): see [`SampleBuilder::texts_in`].
    pub fn texts(
        &mut self,
        needs: &Needs,
        texts: &[String],
        labels: Option<&[LabelSet]>,
    ) -> Result<Vec<Sample>> {
        self.texts_in(needs, texts, labels, None)
    }

    /// [`SampleBuilder::texts`] for texts that are sentences of documents (`places`, see
    /// [`batch_contexts`]): a model attaching context gets the batch's surrounding texts.
    pub fn texts_in(
        &mut self,
        needs: &Needs,
        texts: &[String],
        labels: Option<&[LabelSet]>,
        places: Option<&[Option<TextPlace>]>,
    ) -> Result<Vec<Sample>> {
        self.texts_with(needs, None, texts, labels, places)
    }

    /// [`SampleBuilder::texts_in`], retrieving neighbours from `packed` (the model's own
    /// pool) when given, else from the store.
    fn texts_with(
        &mut self,
        needs: &Needs,
        packed: Option<&Retriever>,
        texts: &[String],
        labels: Option<&[LabelSet]>,
        places: Option<&[Option<TextPlace>]>,
    ) -> Result<Vec<Sample>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let spec = &needs.attach;
        let mut neighbours: Vec<Vec<Neighbour>> = vec![Vec::new(); texts.len()];
        if spec.mode.neighbours() {
            let nspec = match (&spec.neighbours, &spec.neighbours_source) {
                (Some(s), _) => s.clone(),
                // Models trained before the spec was recorded: the store's record of it.
                (None, Some(src)) => stored_spec(
                    self.store("a model trained before its neighbours' retrieval was recorded")?,
                    src,
                )?,
                (None, None) => {
                    return Err(Error::Invalid(
                        "the model attaches neighbours but names no neighbours source".into(),
                    ))
                }
            };
            let k = spec.neighbours_k.max(1);
            neighbours =
                self.retrieve_texts(&nspec, packed, needs.encoder_dir.as_ref(), &refs, k)?;
        }
        let mut out: Vec<Sample> = texts
            .iter()
            .zip(neighbours)
            .enumerate()
            .map(|(i, (t, n))| {
                let gold = labels.and_then(|l| l.get(i)).copied().unwrap_or_default();
                Sample::new(0, t.clone(), gold, None, n, spec)
            })
            .collect();
        let context_ix = batch_context_indices(texts.len(), places, spec.context);
        if spec.context > 0 {
            for (s, c) in out
                .iter_mut()
                .zip(batch_contexts(texts, places, spec.context))
            {
                s.context = Some(c);
            }
        }
        if let Some(r) = &needs.retrieve {
            let found = self.retrieve_texts(r, packed, needs.encoder_dir.as_ref(), &refs, r.k)?;
            for (s, n) in out.iter_mut().zip(found) {
                s.neighbours = n;
            }
        }
        if let Some(info) = &needs.vectors {
            let vectors = self
                .embedder(info, needs.encoder_dir.as_ref())
                .embed(&refs)?;
            if spec.context > 0 {
                // The context sentences are texts of the same batch: their vectors too.
                for (s, (before, after)) in out.iter_mut().zip(&context_ix) {
                    let side = |ix: &[usize]| -> Vec<&[f32]> {
                        ix.iter().map(|&i| vectors[i].as_slice()).collect()
                    };
                    s.context_vectors = Some(ContextVectors::pool(
                        &side(before),
                        &side(after),
                        info.dim,
                        spec.context_decay,
                    ));
                }
            }
            for (s, v) in out.iter_mut().zip(vectors) {
                s.vector = Some(v);
            }
        }
        Ok(out)
    }

    /// For each single model of `model` (see [`Model::needs`]), the samples of stored
    /// examples, with the evaluation rationale source.
    pub fn for_model(&mut self, model: &Model, examples: &[Example]) -> Result<Vec<Vec<Sample>>> {
        model
            .needs()
            .iter()
            .map(|n| self.examples(n, examples, true))
            .collect()
    }

    /// For each single model of `model`, the samples of new texts.
    pub fn for_model_texts(
        &mut self,
        model: &Model,
        texts: &[String],
        labels: Option<&[LabelSet]>,
    ) -> Result<Vec<Vec<Sample>>> {
        self.for_model_texts_in(model, texts, labels, None)
    }

    /// [`SampleBuilder::for_model_texts`] for sentences of documents (see [`batch_contexts`]).
    ///
    /// Each single model reads the texts brought into its training text's style (its
    /// [`Model::normalizer`]) before anything is computed from them (features, vectors,
    /// neighbours, context): [`Sample::text`] is the text it read.
    pub fn for_model_texts_in(
        &mut self,
        model: &Model,
        texts: &[String],
        labels: Option<&[LabelSet]>,
        places: Option<&[Option<TextPlace>]>,
    ) -> Result<Vec<Vec<Sample>>> {
        // Members trained on one store share a normalizer: normalize once per normalizer.
        let mut read: Vec<(&Normalizer, Vec<String>)> = Vec::new();
        let leaves = model.leaves();
        let mut out = Vec::with_capacity(leaves.len());
        for (leaf, needs) in leaves.iter().zip(model.needs()) {
            let packed = leaf.packed_pool();
            let samples = match leaf.normalizer() {
                None => self.texts_with(&needs, packed, texts, labels, places)?,
                Some(n) => {
                    let i = match read.iter().position(|(k, _)| std::ptr::eq(*k, n)) {
                        Some(i) => i,
                        None => {
                            read.push((n, n.normalize_all(texts)));
                            read.len() - 1
                        }
                    };
                    self.texts_with(&needs, packed, &read[i].1, labels, places)?
                }
            };
            out.push(samples);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::PromptKind;

    fn k(source: &str, kind: KnowledgeKind, sanitized: &str, nb: Vec<Neighbour>) -> Knowledge {
        Knowledge {
            example_id: 1,
            source: source.into(),
            kind,
            raw: String::new(),
            sanitized: sanitized.into(),
            asserted: LabelSet::EMPTY,
            prompt_kind: PromptKind::Imported,
            attempts: 0,
            model: String::new(),
            created_at: 0,
            neighbours: nb,
        }
    }

    #[test]
    fn batch_contexts_group_by_document_and_order_by_position() {
        let texts: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let at = |doc: &str, p: Option<u32>| {
            Some(TextPlace {
                doc: doc.into(),
                position: p,
            })
        };
        let places = [
            at("x", Some(2)),
            at("y", None),
            at("x", Some(0)),
            None,
            at("x", Some(1)),
        ];
        let c = batch_contexts(&texts, Some(&places), 1);
        assert_eq!(c[0], Context::new(&["e"], &[]));
        assert_eq!(c[2], Context::new(&[], &["e"]));
        assert_eq!(c[4], Context::new(&["c"], &["a"]));
        assert_eq!(c[1], Context::new(&[], &[]));
        assert_eq!(c[3], Context::new(&[], &[]));
        assert!(batch_contexts(&texts, None, 2)
            .iter()
            .all(|c| c == &Context::new(&[], &[])));
    }

    #[test]
    fn train_and_eval_sources_differ_and_neighbours_render_labels() {
        let nb = vec![
            Neighbour {
                id: 2,
                score: 0.9,
                labels: "Love,Joy".parse().unwrap(),
            },
            Neighbour {
                id: 3,
                score: 0.8,
                labels: "Anger".parse().unwrap(),
            },
        ];
        let recs = vec![
            k("qwen", KnowledgeKind::Rationale, "甲", vec![]),
            k("glm", KnowledgeKind::Rationale, "乙", vec![]),
            k("knn", KnowledgeKind::Neighbours, "", nb),
        ];
        let spec = AttachSpec {
            mode: KnowledgeMode::All,
            source: Some("qwen".into()),
            eval_source: Some("glm".into()),
            neighbours_source: Some("knn".into()),
            neighbours_k: 1,
            neighbours: None,
            context: 0,
            ..Default::default()
        };
        let sample = |eval| {
            let (r, n) = pick(&recs, &spec, eval);
            Sample::new(1, "文".into(), LabelSet::EMPTY, r, n, &spec)
        };
        assert_eq!(sample(false).knowledge, "甲 [SEP] 近邻: Love,Joy");
        assert_eq!(sample(true).knowledge, "乙 [SEP] 近邻: Love,Joy");
        assert_eq!(sample(true).joined(), "文 [SEP] 乙 [SEP] 近邻: Love,Joy");
        let (r, n) = pick(&recs, &AttachSpec::default(), false);
        assert_eq!((r, n.len()), (None, 0));
    }
}
