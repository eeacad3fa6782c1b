//! How a model shared by concurrent callers (the server's requests, Python threads) predicts
//! new text.
//!
//! A model that runs an encoder (a fine-tuned or frozen BERT, dense retrieval) has one
//! prediction thread that batches the requests that wait: while it predicts one batch, new
//! requests queue, and it takes all of them (up to [`MAX_BATCH`] texts) as its next batch — one
//! pass of each member model, its encoder and its retrieval for them all. A request that finds
//! the thread idle is predicted at once, alone: no window is waited out, so one client's latency
//! is what it was; many clients share passes.
//!
//! A model without an encoder (linear, BM25) gains nothing from batching: each request predicts
//! on its own handler thread with a sample builder taken from a pool, so requests run in
//! parallel on every core and none waits behind another.

use crate::error::{Error, Result};
use crate::model::classifier::{Kind, Model};
use crate::samples::{SampleBuilder, TextPlace};
use crate::spec::NeighbourBy;
use crate::store::Store;
use crate::views::{self, Predictions};
use std::sync::Arc;
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Texts predicted in one pass at most (a request with more is a pass of its own).
pub const MAX_BATCH: usize = 64;

/// How long a batch waits for the callers the last batch answered ([`gather`]).
const GATHER: Duration = Duration::from_millis(5);

/// Texts with their places in documents, if any (see [`views::predict_in`]).
type Places = Option<Vec<Option<TextPlace>>>;

/// One caller's texts, waiting for the prediction thread.
struct Job {
    texts: Vec<String>,
    places: Places,
    reply: mpsc::SyncSender<Result<Predictions>>,
}

/// How one shared model predicts new text (see the module's documentation).
pub struct Batcher(Inner);

enum Inner {
    /// The queue of its prediction thread (a model that runs an encoder).
    Queue(mpsc::Sender<Job>),
    /// Requests predict on their own threads (a model without an encoder).
    Parallel {
        model: Arc<Model>,
        store: Option<&'static Store>,
        /// Builders not in use (one is made when none is free).
        idle: Mutex<Vec<SampleBuilder<'static>>>,
    },
}

impl Batcher {
    /// Starts the prediction of `model` (its thread named after `name`, when it has one),
    /// reading `store` when the model needs it.
    pub fn start(name: &str, model: Arc<Model>, store: Option<&'static Store>) -> Result<Batcher> {
        if !runs_encoder(&model) {
            return Ok(Batcher(Inner::Parallel {
                model,
                store,
                idle: Mutex::new(Vec::new()),
            }));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("emoknow-predict-{name}"))
            .spawn(move || run(&rx, &model, store))
            .map_err(|e| Error::io("prediction thread", e))?;
        Ok(Batcher(Inner::Queue(tx)))
    }

    /// The predictions for `texts`, computed with whatever other requests wait beside it.
    pub fn predict(&self, texts: Vec<String>) -> Result<Predictions> {
        self.predict_in(texts, None)
    }

    /// [`Batcher::predict`] for texts that are sentences of documents (`places`, see
    /// [`views::predict_in`]); documents of different callers never mix.
    pub fn predict_in(&self, texts: Vec<String>, places: Places) -> Result<Predictions> {
        match &self.0 {
            Inner::Queue(tx) => {
                let stopped = || Error::Model("the model's prediction thread has stopped".into());
                let (reply, answer) = mpsc::sync_channel(1);
                let job = Job {
                    texts,
                    places,
                    reply,
                };
                tx.send(job).map_err(|_| stopped())?;
                answer.recv().map_err(|_| stopped())?
            }
            Inner::Parallel { model, store, idle } => {
                let taken = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let mut builder = taken.unwrap_or_else(|| SampleBuilder::with_store(*store));
                let out = views::predict_in(&mut builder, model, &texts, places.as_deref());
                builder.forget_texts();
                idle.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(builder);
                out
            }
        }
    }
}

/// Whether `model` (one of its members) embeds text with an encoder: a pass over many texts
/// then costs much less than one pass per text.
fn runs_encoder(model: &Model) -> bool {
    let dense = |by: &NeighbourBy| matches!(by, NeighbourBy::Dense { .. });
    let leaves_encode =
        (model.leaves().iter()).any(|m| !matches!(m.kind(), Kind::Linear | Kind::Knn));
    leaves_encode
        || model.needs().iter().any(|n| {
            n.vectors.is_some()
                || n.retrieve.as_ref().is_some_and(|s| dense(&s.by))
                || n.attach.neighbours.as_ref().is_some_and(|s| dense(&s.by))
        })
}

fn run(rx: &mpsc::Receiver<Job>, model: &Model, store: Option<&'static Store>) {
    let mut builder = SampleBuilder::with_store(store);
    // Callers the last batch answered: they tend to come back together.
    let mut expect = 1;
    while let Ok(first) = rx.recv() {
        let jobs = gather(rx, first, expect, GATHER);
        expect = jobs.len();
        let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        let places = joint_places(&jobs);
        let out = views::predict_in(&mut builder, model, &texts, places.as_deref());
        builder.forget_texts();
        match out {
            Ok(mut all) => {
                for job in jobs {
                    let mine = all.split_front(job.texts.len());
                    let _ = job.reply.send(Ok(mine));
                }
            }
            // One request's error is its own: each is predicted again alone.
            Err(e) if jobs.len() == 1 => {
                let _ = jobs[0].reply.send(Err(e));
            }
            Err(_) => {
                for job in jobs {
                    let out =
                        views::predict_in(&mut builder, model, &job.texts, job.places.as_deref());
                    builder.forget_texts();
                    let _ = job.reply.send(out);
                }
            }
        }
    }
}

/// The batch that starts with `first`: the jobs waiting (up to [`MAX_BATCH`] texts), and, while
/// fewer than `expect` jobs have come, those that come within `wait`. After a batch of many
/// callers, they send their next requests together, a little apart: waiting for them briefly
/// makes one pass of what would be two or three. A lone caller (`expect` 1) never waits.
fn gather(rx: &mpsc::Receiver<Job>, first: Job, expect: usize, wait: Duration) -> Vec<Job> {
    let deadline = Instant::now() + wait;
    let mut n = first.texts.len();
    let mut jobs = vec![first];
    while n < MAX_BATCH {
        let next = if jobs.len() < expect {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        } else {
            rx.try_recv().ok()
        };
        let Some(job) = next else { break };
        n += job.texts.len();
        jobs.push(job);
    }
    jobs
}

/// The places of the texts of `jobs`, one batch: each job's document names are its own (a
/// name given by two callers is two documents).
fn joint_places(jobs: &[Job]) -> Places {
    if jobs.len() == 1 || jobs.iter().all(|j| j.places.is_none()) {
        return jobs.first().and_then(|j| j.places.clone());
    }
    let mut out = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match &job.places {
            Some(places) => out.extend(places.iter().map(|p| {
                p.as_ref().map(|p| TextPlace {
                    doc: format!("{i}\u{0}{}", p.doc),
                    position: p.position,
                })
            })),
            None => out.extend(job.texts.iter().map(|_| None)),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(texts: &[&str], docs: Option<&[Option<&str>]>) -> Job {
        let (reply, _) = mpsc::sync_channel(1);
        Job {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            places: docs.map(|d| d.iter().map(|d| d.map(TextPlace::in_doc)).collect()),
            reply,
        }
    }

    #[test]
    fn joint_places_keep_callers_documents_apart() {
        let one = [job(&["a", "b"], Some(&[Some("d"), None]))];
        assert_eq!(joint_places(&one), one[0].places);
        assert_eq!(joint_places(&[job(&["a"], None), job(&["b"], None)]), None);
        let jobs = [
            job(&["a", "b"], Some(&[Some("d"), Some("d")])),
            job(&["c"], None),
            job(&["e"], Some(&[Some("d")])),
        ];
        let docs: Vec<Option<String>> = joint_places(&jobs)
            .unwrap()
            .into_iter()
            .map(|p| p.map(|p| p.doc))
            .collect();
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0], docs[1]);
        assert_eq!(docs[2], None);
        assert!(docs[3].is_some() && docs[3] != docs[0]);
    }

    /// Callers that come back a little apart join the batch that expects them; a batch that
    /// expects one caller takes only what already waits, and MAX_BATCH bounds every batch.
    #[test]
    fn a_batch_waits_briefly_for_the_callers_it_expects() {
        let later = |tx: mpsc::Sender<Job>, n: usize| {
            std::thread::spawn(move || {
                for _ in 0..n {
                    std::thread::sleep(Duration::from_millis(2));
                    tx.send(job(&["x"], None)).unwrap();
                }
            })
        };
        let (tx, rx) = mpsc::channel();
        let t = later(tx.clone(), 3);
        let jobs = gather(&rx, job(&["a"], None), 4, Duration::from_secs(10));
        assert_eq!(jobs.len(), 4);
        t.join().unwrap();

        let t = later(tx.clone(), 3);
        assert_eq!(
            gather(&rx, job(&["a"], None), 1, Duration::from_secs(10)).len(),
            1
        );
        t.join().unwrap();
        // What came meanwhile is taken at once by the next batch.
        let jobs = gather(&rx, job(&["b"], None), 1, Duration::from_secs(10));
        assert_eq!(jobs.len(), 4);

        // The wait is bounded: two callers expected, none comes.
        assert_eq!(
            gather(&rx, job(&["c"], None), 2, Duration::from_millis(20)).len(),
            1
        );

        let texts: Vec<&str> = vec!["t"; MAX_BATCH - 1];
        tx.send(job(&texts, None)).unwrap();
        tx.send(job(&["u", "v"], None)).unwrap();
        let jobs = gather(&rx, job(&["s"], None), 3, Duration::from_secs(10));
        assert_eq!(jobs.iter().map(|j| j.texts.len()).sum::<usize>(), MAX_BATCH);
        assert_eq!(gather(&rx, job(&["w"], None), 1, Duration::ZERO).len(), 2);
    }
}
