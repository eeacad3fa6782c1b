//! `emoknow serve`: a JSON API and server-rendered web pages over one store and the models
//! given at start — the second front end beside the command line.
//!
//! Handlers parse parameters, call the library (the documents come from [`crate::views`], the
//! same functions the CLI's `--json` prints) and answer JSON or HTML; nothing here writes to
//! the store. The server holds the store for its whole life (sled's lock: one process per
//! store), so everything it reads stays true while it runs, and what is costly to open — a
//! retrieval's pool, an encoder, a model's report — is opened once and kept.
//!
//! - `api`: `/api/…` handlers, parameter parsing, JSON errors (`{"error", "param"}`).
//! - `page`: the pages (`/`, `/examples/{id}`, `/classify`, `/models/{name}`), plain HTML
//!   with GET forms, every store or LLM string escaped by [`escape`].
//! - `svg`: the charts, drawn here (no script, no CDN).
//! - `assets/`: `style.css` and a small `page.js` (progressive enhancement only), embedded.
//!
//! Heavy work (prediction, evaluation, retrieval, queries) runs on tokio's blocking pool.

mod api;
mod page;
mod svg;

pub use page::escape;

use crate::batch::Batcher;
use crate::error::{Error, Result};
use crate::model::classifier::Model;
use crate::neighbours::{By, Choice, Embedder, Retriever};
use crate::samples::SampleBuilder;
use crate::store::records::Split;
use crate::store::{Stats, Store};
use crate::text::Normalizer;
use crate::views::ModelReport;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The default largest request body (`POST /api/predict`), bytes.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port; see [`Server::local_addr`]).
    pub bind: SocketAddr,
    /// Model directories, loaded once at start; each is served under its directory's name
    /// (`-2`, `-3`, … appended to repeated names).
    pub models: Vec<PathBuf>,
    /// Largest request body accepted, bytes (larger: 413).
    pub body_limit: usize,
}

impl ServeConfig {
    /// Serving `models` on `bind` with the default body limit.
    pub fn new(bind: SocketAddr, models: Vec<PathBuf>) -> ServeConfig {
        ServeConfig {
            bind,
            models,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// A model as the server holds it.
pub(crate) struct Served {
    /// The name in URLs.
    pub(crate) name: String,
    pub(crate) model: Arc<Model>,
    /// Its prediction thread (new text; started when the server binds).
    pub(crate) batcher: Option<Batcher>,
    /// Reports computed so far, by split (computed on first request, then kept).
    pub(crate) reports: Mutex<HashMap<Split, Arc<ModelReport>>>,
}

/// Dense or BM25, and the encoder named.
/// Dense or BM25, the encoder asked for, the ANN search's ef asked for.
type RetrievalKey = (bool, Option<String>, Option<usize>);

/// Retrievals a server keeps open; one asked for beyond them (another ef, say) is opened for
/// its request alone.
const KEPT_RETRIEVALS: usize = 16;

/// Everything a handler reads.
pub(crate) struct State {
    /// The store served (`None`: the models alone; the browse pages and the API's store
    /// questions say so).
    store: Option<&'static Store>,
    pub(crate) models: Vec<Served>,
    /// Builds samples for prediction and evaluation; keeps encoders and retrievals open.
    pub(crate) builder: Mutex<SampleBuilder<'static>>,
    retrievers: Mutex<HashMap<RetrievalKey, Arc<Retriever>>>,
    embedders: Mutex<HashMap<String, Embedder>>,
    stats: OnceLock<Stats>,
    /// Whether the store holds vectors (dense retrieval is then the default, as in the CLI).
    pub(crate) has_vectors: bool,
    /// Knowledge source names (the search form's choice).
    pub(crate) sources: Vec<String>,
    /// What brings a query text into the store's style (built on first use).
    normalizer: OnceLock<Option<Normalizer>>,
    /// Largest request body read, in bytes.
    pub(crate) body_limit: usize,
}

/// The lock's data, even if a thread panicked while holding it (every value kept behind
/// these locks stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// The served model called `name`.
    pub(crate) fn model(&self, name: &str) -> Option<&Served> {
        self.models.iter().find(|m| m.name == name)
    }

    /// A query text (`/api/similar`, the search page) as the store's models read text: in its
    /// text style.
    pub(crate) fn read_query(&self, text: &str) -> Result<String> {
        if self.normalizer.get().is_none() {
            let n = self.store()?.normalizer()?;
            let _ = self.normalizer.set(n);
        }
        Ok(match self.normalizer.get() {
            Some(Some(n)) => n.normalize(text),
            _ => text.to_string(),
        })
    }

    /// The store served, or the error a question about it gets when the server serves model
    /// directories alone (the API answers it with a 409).
    pub(crate) fn store(&self) -> Result<&'static Store> {
        self.store
            .ok_or_else(|| Error::Invalid(NO_STORE.to_string()))
    }

    /// The store's directory, if one is served.
    pub(crate) fn store_path(&self) -> Option<&Path> {
        self.store.map(Store::path)
    }

    /// The store's statistics (computed once: the store does not change while served).
    pub(crate) fn stats(&self) -> Result<&Stats> {
        if let Some(s) = self.stats.get() {
            return Ok(s);
        }
        let s = self.store()?.stats()?;
        Ok(self.stats.get_or_init(|| s))
    }

    /// The retrieval over the train split, dense (with `encoder`, or the only one) or BM25,
    /// through the ANN index with `ef` candidates when one is given, opened on first use and
    /// kept (up to [`KEPT_RETRIEVALS`] of them).
    pub(crate) fn retriever(
        &self,
        dense: bool,
        encoder: Option<&str>,
        ef: Option<usize>,
    ) -> Result<Arc<Retriever>> {
        let key = (dense, encoder.map(str::to_string), ef);
        if let Some(r) = lock(&self.retrievers).get(&key) {
            return Ok(r.clone());
        }
        let r = Arc::new(Retriever::choose(
            self.store()?,
            &Choice {
                by: Some(if dense { By::Dense } else { By::Bm25 }),
                encoder: encoder.map(str::to_string),
                ef,
                ..Choice::nearest(10)
            },
        )?);
        let mut kept = lock(&self.retrievers);
        if kept.len() < KEPT_RETRIEVALS {
            kept.insert(key, r.clone());
        }
        Ok(r)
    }

    /// Runs `f` with the embedder of the dense retrieval `r` (loaded on first use and kept;
    /// the vectors it makes are forgotten afterwards).
    pub(crate) fn with_embedder<T>(
        &self,
        r: &Retriever,
        f: impl FnOnce(Option<&mut Embedder>) -> Result<T>,
    ) -> Result<T> {
        let Some(info) = r.encoder() else {
            return f(None);
        };
        let mut all = lock(&self.embedders);
        let emb = all
            .entry(info.id.clone())
            .or_insert_with(|| Embedder::new(info.clone(), None));
        let out = f(Some(&mut *emb));
        emb.forget();
        out
    }
}

/// What a server's store questions get when it serves model directories alone.
pub const NO_STORE: &str = "this server has no store: it serves model directories alone \
     (classify a text); start it with --store DIR to browse and search a store";

/// Models loaded for a server ([`Server::load_models`]).
pub struct LoadedModels(Vec<Served>);

impl LoadedModels {
    /// The models, in the order given.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.0.iter().map(|s| &*s.model)
    }
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    state: Arc<State>,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    body_limit: usize,
}

impl Server {
    /// Loads the models and binds `cfg.bind`. The store is kept until the process exits
    /// (handlers share it for the server's whole life): a store given to a server is not
    /// released by dropping the server.
    ///
    /// Errors: a model that does not load (named), an address that cannot be bound.
    pub fn bind(store: Store, cfg: &ServeConfig) -> Result<Server> {
        Server::bind_loaded(Some(store), Server::load_models(cfg)?, cfg)
    }

    /// The models of `cfg`, loaded (to ask what they need before binding, see
    /// [`Model::needs_store`]).
    pub fn load_models(cfg: &ServeConfig) -> Result<LoadedModels> {
        let mut models: Vec<Served> = Vec::new();
        for dir in &cfg.models {
            let model = Model::load(dir)?;
            let base = dir
                .canonicalize()
                .ok()
                .as_deref()
                .and_then(|p| p.file_name())
                .or_else(|| dir.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "model".to_string());
            let mut name = base.clone();
            let mut i = 2;
            while models.iter().any(|m| m.name == name) {
                name = format!("{base}-{i}");
                i += 1;
            }
            models.push(Served {
                name,
                model: Arc::new(model),
                batcher: None,
                reports: Mutex::new(HashMap::new()),
            });
        }
        Ok(LoadedModels(models))
    }

    /// Binds `cfg.bind` to serve `store` (or, without one, the models alone: the classify
    /// page and `POST /api/predict`, for models whose directories hold all they read) and the
    /// `models` loaded by [`Server::load_models`].
    pub fn bind_loaded(
        store: Option<Store>,
        models: LoadedModels,
        cfg: &ServeConfig,
    ) -> Result<Server> {
        let mut models = models.0;
        let listener = std::net::TcpListener::bind(cfg.bind)
            .map_err(|e| Error::io(cfg.bind.to_string(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(cfg.bind.to_string(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(cfg.bind.to_string(), e))?;
        let (has_vectors, mut sources) = match &store {
            Some(store) => (
                !store.encoders()?.is_empty(),
                store
                    .all_knowledge(None)?
                    .into_iter()
                    .map(|k| k.source)
                    .collect(),
            ),
            None => (false, Vec::new()),
        };
        sources.sort_unstable();
        sources.dedup();
        // Handlers borrow the store from any thread for the rest of the process.
        let store: Option<&'static Store> = store.map(|s| &*Box::leak(Box::new(s)));
        for m in &mut models {
            m.batcher = Some(Batcher::start(&m.name, m.model.clone(), store)?);
        }
        let state = State {
            store,
            models,
            builder: Mutex::new(SampleBuilder::with_store(store)),
            retrievers: Mutex::new(HashMap::new()),
            embedders: Mutex::new(HashMap::new()),
            stats: OnceLock::new(),
            has_vectors,
            sources,
            normalizer: OnceLock::new(),
            body_limit: cfg.body_limit,
        };
        Ok(Server {
            state: Arc::new(state),
            listener,
            addr,
            body_limit: cfg.body_limit,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The names the models are served under, in the order given.
    pub fn model_names(&self) -> Vec<String> {
        self.state.models.iter().map(|m| m.name.clone()).collect()
    }

    /// Serves until `shutdown` completes (then finishes the requests in flight), on a tokio
    /// runtime of its own; blocks the calling thread. Removes the store's holder record at
    /// the end.
    pub fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let store = self.state.store;
        let app = router(self.state, self.body_limit);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("emoknow-serve")
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let addr = self.addr;
        let listener = self.listener;
        let out = rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            serve_http1(listener, app, shutdown).await
        });
        if let Some(store) = store {
            store.release_holder();
        }
        out.map_err(|e| Error::io(addr.to_string(), e))
    }
}

/// Longest wait for a request's header: a client that opens a connection and sends part of a
/// header (or nothing) is disconnected after it instead of holding the connection open.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves HTTP/1.1 connections of `listener` with `app` until `shutdown` completes, then lets
/// the requests in flight finish. (axum's `serve`, with hyper's header-read timeout set.)
async fn serve_http1(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let (close, closing) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait, as axum does, instead of spinning.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = close.send(());
    while connections.join_next().await.is_some() {}
    Ok(())
}

fn router(state: Arc<State>, body_limit: usize) -> Router {
    Router::new()
        .route("/", get(page::search))
        .route("/examples/{id}", get(page::example))
        .route("/classify", get(page::classify))
        .route("/models", get(page::models))
        .route("/models/{name}", get(page::model))
        .route("/assets/style.css", get(page::style))
        .route("/assets/page.js", get(page::script))
        .route("/api/stats", get(api::stats))
        .route("/api/query", get(api::query))
        .route("/api/examples/{id}", get(api::example))
        .route("/api/similar", get(api::similar))
        .route("/api/predict", post(api::predict))
        .route("/api/models", get(api::models))
        .route("/api/eval/{model}", get(api::eval))
        .fallback(page::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
