//! `emoknow serve`: the JSON API and the web pages over the store.

use super::{Ctx, INTERRUPTED};
use anyhow::Context;
use emoknow::model::classifier::Model;
use emoknow::serve::{ServeConfig, Server, DEFAULT_BODY_LIMIT};
use emoknow::store::Store;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Serve the store over HTTP: a JSON API and web pages.
///
/// Pages (plain HTML, every state a URL): / (search by emotion and keyword), /examples/ID (an
/// example with every rationale, its neighbours and context), /classify (probabilities,
/// labels and the knowledge used), /models/NAME (metrics, confusions, threshold curves).
///
/// API (the documents of the CLI's --json): GET /api/stats, /api/query?emotion=&keyword=
/// &split=&source=&limit=, /api/examples/ID, /api/similar?text=|id=&k=, /api/models,
/// /api/eval/MODEL?split=, and POST /api/predict {"texts": ["…"], "explain": false}.
/// Bad parameters get a 400 {"error", "param"}; nothing writes to the store.
///
/// The server holds the store while it runs (other commands are told it is in use, and by
/// what). It prints `listening on http://ADDR` once bound; Ctrl-C stops it.
///
/// Example: emoknow serve --model models/linear --bind 127.0.0.1:8080
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Model directory to serve (repeatable; the first answers requests naming none). Loaded
    /// once at start, served under its directory's name.
    #[arg(long = "model", value_name = "DIR")]
    models: Vec<PathBuf>,

    /// Address to listen on; port 0 picks a free port. Anything but a loopback address makes
    /// the store readable from other machines (a warning is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,

    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
}

/// What the store's holder record says: this command line.
fn holder_description() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("emoknow {}", args.join(" "))
}

pub fn run(args: ServeArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let cfg = ServeConfig {
        body_limit: args.body_limit,
        ..ServeConfig::new(args.bind, args.models.clone())
    };
    let models = Server::load_models(&cfg).with_context(|| format!("serving on {}", args.bind))?;
    let loaded: Vec<&Model> = models.models().collect();
    ctx.warn_unverified(&loaded);
    // Without a store, the models alone (when their directories hold all they read).
    let store = ctx.open_for_with(&loaded, || {
        Store::open_held(&ctx.store, &holder_description())
            .with_context(|| format!("opening store {}", ctx.store.display()))
    })?;
    if !args.bind.ip().is_loopback() {
        eprintln!(
            "warning: serving on {}, which is not a loopback address: anyone who can reach it can read the store (there is no authentication)",
            args.bind
        );
    }
    let what = match &store {
        Some(_) => format!("store {}", ctx.store.display()),
        None => "model directories alone (no store)".to_string(),
    };
    let server = Server::bind_loaded(store, models, &cfg)
        .with_context(|| format!("serving on {}", args.bind))?;
    let names = server.model_names();
    ctx.note(format!(
        "serving {what} with {}",
        if names.is_empty() {
            "no model (give --model DIR to classify)".to_string()
        } else {
            format!("model(s) {}", names.join(", "))
        }
    ));
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{}", server.local_addr())?;
    out.flush()?;
    drop(out);
    server.run(async {
        while !INTERRUPTED.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    ctx.note("stopped");
    Ok(ExitCode::SUCCESS)
}
