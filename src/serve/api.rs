//! The JSON API: `/api/stats`, `/api/query`, `/api/examples/{id}`, `/api/similar`,
//! `POST /api/predict`, `/api/models`, `/api/eval/{model}`. Each answers the document the
//! CLI's `--json` prints for the same question ([`crate::views`]); a bad parameter is a 400
//! `{"error": "...", "param": "<name>"}`, an unknown example or model a 404.

use super::{lock, Served, State};
use crate::error::{self, Error};
use crate::labels::{Emotion, LabelSet};
use crate::store::records::{ExampleId, Split};
use crate::store::{Filter, QuerySpec};
use crate::views::{self, ModelReport, ModelView};
use axum::extract::{Path, RawQuery, State as St};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// Most texts in one `POST /api/predict`.
pub(crate) const MAX_TEXTS: usize = 256;
/// Longest text accepted (characters), in a prediction or a similarity query.
pub(crate) const MAX_TEXT_CHARS: usize = 10_000;
/// Largest `limit` of a query.
pub(crate) const MAX_LIMIT: usize = 1000;
/// Largest `k` of a similarity query.
pub(crate) const MAX_K: usize = 100;
/// Neighbours retrieved now for an example that has none stored.
pub(crate) const LIVE_K: usize = 10;
/// Examples shown either side of an example.
pub(crate) const CONTEXT: usize = 3;

/// An error answer: `{"error": message, "param": name or null}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: String,
    pub(crate) param: Option<String>,
}

impl ApiError {
    /// A 400 about parameter `param`.
    pub(crate) fn bad(param: &str, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            param: Some(param.to_string()),
        }
    }

    /// A 404 about parameter `param`.
    pub(crate) fn not_found(param: &str, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: error.into(),
            param: Some(param.to_string()),
        }
    }

    /// A 409: the request is fine but the store or models cannot answer it (no vectors, no
    /// model loaded, an empty split…).
    pub(crate) fn conflict(param: Option<&str>, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            error: error.into(),
            param: param.map(str::to_string),
        }
    }

    fn internal(error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: error.into(),
            param: None,
        }
    }
}

impl From<Error> for ApiError {
    /// The library's error with its causes; what the store or models lack is a 409, a
    /// damaged index a 503, the rest a 500.
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::NotFound(_)
            | Error::EncoderGone { .. }
            | Error::NoEmbeddings { .. }
            | Error::AmbiguousEncoder { .. }
            | Error::MissingVector { .. }
            | Error::MissingSource { .. }
            | Error::EmptySplit { .. }
            | Error::Invalid(_) => StatusCode::CONFLICT,
            Error::IndexDamaged { .. } | Error::DiskFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            error: error::chain(&e),
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"error": self.error, "param": self.param})),
        )
            .into_response()
    }
}

/// A handler's result.
pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Runs blocking work (store reads, models) on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("request failed: {e}")))?
}

/// The parameters of a query string, in order (repeated names allowed).
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `query` (absent: none).
    pub(crate) fn parse(query: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// A 400 naming the first parameter not in `allowed`.
    pub(crate) fn only(&self, allowed: &[&str]) -> ApiResult<()> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::bad(
                k,
                format!("unknown parameter {k:?} (expected {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// The value of `name`: `None` when absent or empty; a 400 when given twice.
    pub(crate) fn one(&self, name: &str) -> ApiResult<Option<&str>> {
        let mut found = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(ApiError::bad(name, format!("{name} is given twice"))),
            (Some(v), None) if !v.trim().is_empty() => Ok(Some(v.as_str())),
            _ => Ok(None),
        }
    }

    /// Every non-empty value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `name` as a number in `lo..=hi`, `default` when absent.
    pub(crate) fn number(
        &self,
        name: &str,
        default: usize,
        lo: usize,
        hi: usize,
    ) -> ApiResult<usize> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    name,
                    format!("{name} must be a whole number from {lo} to {hi}, not {v:?}"),
                )),
            },
        }
    }

    /// Every `emotion` value as a set (English or Chinese names).
    pub(crate) fn emotions(&self) -> ApiResult<LabelSet> {
        let mut set = LabelSet::EMPTY;
        for v in self.all("emotion") {
            set.insert(
                v.parse::<Emotion>()
                    .map_err(|e| ApiError::bad("emotion", e.to_string()))?,
            );
        }
        Ok(set)
    }

    /// `split`, when given.
    pub(crate) fn split(&self) -> ApiResult<Option<Split>> {
        self.one("split")?
            .map(|v| v.parse::<Split>().map_err(|e| ApiError::bad("split", e)))
            .transpose()
    }

    /// `name` as a text of at most [`MAX_TEXT_CHARS`] characters.
    pub(crate) fn text(&self, name: &str) -> ApiResult<Option<String>> {
        let v = self.one(name)?;
        if let Some(v) = v {
            check_text(name, v)?;
        }
        Ok(v.map(|v| v.trim().to_string()))
    }
}

fn check_text(param: &str, v: &str) -> ApiResult<()> {
    let n = v.chars().count();
    if n > MAX_TEXT_CHARS {
        return Err(ApiError::bad(
            param,
            format!("{param} has {n} characters; at most {MAX_TEXT_CHARS} are accepted"),
        ));
    }
    Ok(())
}

/// An example id from a path segment.
pub(crate) fn parse_id(v: &str) -> ApiResult<ExampleId> {
    v.trim().parse().map_err(|_| {
        ApiError::bad(
            "id",
            format!("example id must be a whole number, not {v:?}"),
        )
    })
}

/// `GET /api/stats`: `stats --json`.
pub(crate) async fn stats(St(state): St<Arc<State>>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    Params::parse(q.as_deref()).only(&[])?;
    blocking(move || {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            stats: &'a crate::store::Stats,
            ann: Vec<crate::neighbours::ann::AnnStats>,
        }
        let ann = crate::neighbours::ann::stats(state.store()?)?;
        Ok(Json(Out {
            stats: state.stats()?,
            ann,
        })
        .into_response())
    })
    .await
}

/// The query `/api/query` and the search page ask for.
pub(crate) fn query_spec(p: &Params, limit: usize) -> ApiResult<QuerySpec> {
    let keyword = p.text("keyword")?;
    Ok(QuerySpec {
        filter: Filter {
            emotions: p.emotions()?,
            split: p.split()?,
            source: p.one("source")?.map(str::to_string),
            exclude: None,
        },
        keyword,
        limit,
    })
}

/// `GET /api/query?emotion=&keyword=&split=&source=&limit=`: `query --json`.
pub(crate) async fn query(St(state): St<Arc<State>>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.only(&["emotion", "keyword", "split", "source", "limit"])?;
    let spec = query_spec(&p, p.number("limit", 10, 1, MAX_LIMIT)?)?;
    blocking(move || Ok(Json(views::query(state.store()?, &spec)?).into_response())).await
}

/// The example page's and `/api/examples/{id}`'s document.
pub(crate) fn example_view(state: &State, id: ExampleId) -> ApiResult<views::ExampleView> {
    // Neighbours retrieved now need a BM25 pool over the train split; without one (no train
    // split), the example is shown without them.
    let live = state.retriever(false, None, None).ok();
    views::example(state.store()?, id, live.as_deref(), LIVE_K, CONTEXT)?
        .ok_or_else(|| ApiError::not_found("id", format!("no example {id} in the store")))
}

/// `GET /api/examples/{id}`: `show --json` with neighbours and context.
pub(crate) async fn example(
    St(state): St<Arc<State>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    Params::parse(q.as_deref()).only(&[])?;
    let id = parse_id(&id)?;
    blocking(move || Ok(Json(example_view(&state, id)?).into_response())).await
}

/// `GET /api/similar?text=|id=&k=&by=&encoder=&emotion=&ef=`: `similar --json` (`ef`:
/// `--ef`, through the ANN index).
pub(crate) async fn similar(
    St(state): St<Arc<State>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.only(&["text", "id", "k", "by", "encoder", "emotion", "ef"])?;
    let k = p.number("k", 10, 1, MAX_K)?;
    let ef = match p.one("ef")? {
        Some(_) => Some(p.number("ef", 0, 1, crate::neighbours::ann::MAX_EF)?),
        None => None,
    };
    let emotions = p.emotions()?;
    let encoder = p.one("encoder")?.map(str::to_string);
    let dense = match p.one("by")? {
        None => state.has_vectors || encoder.is_some(),
        Some("dense") => true,
        Some("bm25") if encoder.is_some() => {
            return Err(ApiError::bad(
                "encoder",
                "an encoder is for by=dense: bm25 reads words, not vectors",
            ))
        }
        Some("bm25") if ef.is_some() => {
            return Err(ApiError::bad(
                "ef",
                "ef sets the ANN search of by=dense: bm25 has none",
            ))
        }
        Some("bm25") => false,
        Some(v) => {
            return Err(ApiError::bad(
                "by",
                format!("by must be dense or bm25, not {v:?}"),
            ))
        }
    };
    let text = p.text("text")?;
    let id = p.one("id")?.map(parse_id).transpose()?;
    let query = match (text, id) {
        (Some(_), Some(_)) => return Err(ApiError::bad("id", "give text or id, not both")),
        (None, None) => return Err(ApiError::bad("text", "give a text or an example id")),
        (Some(t), None) => Err(t),
        (None, Some(id)) => Ok(id),
    };
    blocking(move || {
        let store = state.store()?;
        let r = state.retriever(dense, encoder.as_deref(), ef)?;
        let hits = match query {
            Ok(id) => {
                let ex = store.example(id)?.ok_or_else(|| {
                    ApiError::not_found("id", format!("no example {id} in the store"))
                })?;
                r.for_examples(store, std::slice::from_ref(&ex), k, emotions)?
            }
            Err(text) => {
                let text = state.read_query(&text)?;
                state.with_embedder(&r, |emb| {
                    r.for_texts(Some(store), &[text.as_str()], emb, k, emotions)
                })?
            }
        };
        let hits = hits.into_iter().next().unwrap_or_default();
        Ok(Json(views::similar_hits(store, hits)?).into_response())
    })
    .await
}

/// The model `name` names, or the first one; a 404 or 409 when there is none.
pub(crate) fn pick_model<'a>(state: &'a State, name: Option<&str>) -> ApiResult<&'a Served> {
    match name {
        Some(n) => state
            .model(n)
            .ok_or_else(|| ApiError::not_found("model", format!("no model {n:?} is served"))),
        None => state.models.first().ok_or_else(|| {
            ApiError::conflict(
                Some("model"),
                "no model is loaded: start the server with --model DIR",
            )
        }),
    }
}

/// Predicts `texts` with the model `name` (default: the first).
pub(crate) fn predict_texts(
    state: &State,
    name: Option<&str>,
    texts: &[String],
) -> ApiResult<(String, views::Predictions)> {
    let served = pick_model(state, name)?;
    let out = match &served.batcher {
        Some(b) => b.predict(texts.to_vec()),
        None => Err(crate::Error::Model(
            "the model has no prediction thread".into(),
        )),
    };
    Ok((served.name.clone(), out?))
}

/// What `POST /api/predict` reads.
struct PredictRequest {
    texts: Vec<String>,
    explain: bool,
    model: Option<String>,
}

fn predict_request(body: &[u8]) -> ApiResult<PredictRequest> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("the body is not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| {
        ApiError::bad(
            "body",
            r#"the body must be an object like {"texts": ["…"], "explain": false}"#,
        )
    })?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["texts", "explain", "model"].contains(&k.as_str()))
    {
        return Err(ApiError::bad(
            k,
            format!("unknown field {k:?} (expected texts, explain, model)"),
        ));
    }
    let list = obj
        .get("texts")
        .and_then(|t| t.as_array())
        .ok_or_else(|| ApiError::bad("texts", "texts must be a list of strings"))?;
    if list.is_empty() || list.len() > MAX_TEXTS {
        return Err(ApiError::bad(
            "texts",
            format!(
                "texts must hold 1 to {MAX_TEXTS} strings, not {}",
                list.len()
            ),
        ));
    }
    let mut texts = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let t = t
            .as_str()
            .ok_or_else(|| ApiError::bad("texts", format!("texts[{i}] is not a string")))?;
        if t.trim().is_empty() {
            return Err(ApiError::bad("texts", format!("texts[{i}] is empty")));
        }
        check_text("texts", t)?;
        texts.push(t.to_string());
    }
    let explain = match obj.get("explain") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad("explain", "explain must be true or false")),
    };
    let model = match obj.get("model") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad("model", "model must be a model name")),
    };
    Ok(PredictRequest {
        texts,
        explain,
        model,
    })
}

/// `POST /api/predict` with `{"texts": ["…"], "explain": false, "model": "name"}`:
/// `predict --json` (per text: labels, probabilities by emotion, and with `explain` the
/// knowledge used).
pub(crate) async fn predict(
    St(state): St<Arc<State>>,
    RawQuery(q): RawQuery,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    // Refused from the headers alone. A client that sent `Expect: 100-continue` waits with its
    // body: it is answered at once, never told to go on, and nothing is read. Any other client
    // is sending its body now: at most the body limit of it is read and dropped first, so that
    // it reads the answer rather than a reset connection. Either way the answer closes the
    // connection (the rest of the body is never read).
    if let Some(e) = refused_by_headers(&headers, state.body_limit) {
        let waits = (headers.get(axum::http::header::EXPECT))
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if !waits {
            let _ = axum::body::to_bytes(body, state.body_limit).await;
        }
        return Ok(closing(e));
    }
    let body = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(b) => b,
        Err(e) => {
            let e = crate::error::chain(&e);
            return Ok(closing(ApiError {
                status: if e.contains("length limit") {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                },
                error: format!("the body could not be read: {e}"),
                param: Some("body".to_string()),
            }));
        }
    };
    Params::parse(q.as_deref()).only(&[])?;
    let req = predict_request(&body)?;
    blocking(move || {
        let (_, pred) = predict_texts(&state, req.model.as_deref(), &req.texts)?;
        Ok(Json(pred.json(req.explain)).into_response())
    })
    .await
}

/// A body that is not JSON (415) or declares more bytes than `limit` (413).
fn refused_by_headers(headers: &axum::http::HeaderMap, limit: usize) -> Option<ApiError> {
    if let Some(ctype) = headers.get(axum::http::header::CONTENT_TYPE) {
        let essence = ctype.to_str().unwrap_or("").split(';').next().unwrap_or("");
        let essence = essence.trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Some(ApiError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                error: format!(
                    "the body must be JSON (Content-Type: application/json), not {essence:?}"
                ),
                param: Some("body".to_string()),
            });
        }
    }
    let declared = (headers.get(axum::http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (declared > limit as u64).then(|| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: format!(
            "the body declares {declared} bytes, more than the limit of {limit} (serve --body-limit)"
        ),
        param: Some("body".to_string()),
    })
}

/// `e` as an answer that closes the connection (its request's body was not read to the end).
fn closing(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

/// `GET /api/models`: every served model's name, directory and `meta.json`.
pub(crate) async fn models(
    St(state): St<Arc<State>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    Params::parse(q.as_deref()).only(&[])?;
    let list: Vec<ModelView> = state
        .models
        .iter()
        .map(|m| ModelView {
            name: &m.name,
            dir: m.model.dir().display().to_string(),
            meta: &m.model.meta,
        })
        .collect();
    Ok(Json(list).into_response())
}

/// The report of `served` on `split` (computed on first request, then kept).
pub(crate) fn model_report(
    state: &State,
    served: &Served,
    split: Split,
) -> ApiResult<Arc<ModelReport>> {
    let mut reports = lock(&served.reports);
    if let Some(r) = reports.get(&split) {
        return Ok(r.clone());
    }
    let store = state.store()?;
    let examples = store.examples(Some(split))?;
    if examples.is_empty() {
        return Err(ApiError::conflict(
            Some("split"),
            format!("the {split} split is empty: nothing to evaluate"),
        ));
    }
    let model = &served.model;
    let mut builder = lock(&state.builder);
    let run = |builder: &mut crate::samples::SampleBuilder<'static>, ex| {
        let inputs = builder.for_model(model, ex)?;
        views::evaluate(model, &inputs)
    };
    let eval = run(&mut builder, &examples);
    let val = match (&eval, split) {
        (Ok(_), Split::Val) => None,
        (Ok(_), _) => {
            let val_ex = store.examples(Some(Split::Val))?;
            (!val_ex.is_empty())
                .then(|| run(&mut builder, &val_ex))
                .transpose()?
        }
        (Err(_), _) => None,
    };
    builder.forget_texts();
    drop(builder);
    let eval = eval?;
    let val = if split == Split::Val {
        Some(&eval)
    } else {
        val.as_ref()
    };
    let report = Arc::new(views::model_report(
        &served.name,
        split,
        &eval,
        val,
        &model.calibrated_thresholds(),
    ));
    reports.insert(split, report.clone());
    Ok(report)
}

/// `GET /api/eval/{model}?split=`: `eval --json`'s metrics (default: the test split) with the
/// label × label confusion and the threshold curves on validation.
pub(crate) async fn eval(
    St(state): St<Arc<State>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.only(&["split"])?;
    let split = p.split()?.unwrap_or(Split::Test);
    blocking(move || {
        let served = pick_model(&state, Some(&name))?;
        Ok(Json(&*model_report(&state, served, split)?).into_response())
    })
    .await
}

/// 405 for a known path asked with another method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: "method not allowed here".to_string(),
        param: None,
    }
}

/// 404 for an unknown `/api/…` path.
pub(crate) fn unknown_endpoint(path: &str) -> ApiError {
    ApiError::not_found("path", format!("no endpoint {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_name_what_is_wrong() {
        let p = Params::parse(Some("emotion=Joy&emotion=%E5%96%9C%E7%88%B1&limit=5&x=1"));
        assert_eq!(
            p.only(&["emotion", "limit"]).unwrap_err().param.as_deref(),
            Some("x")
        );
        assert_eq!(p.emotions().unwrap().to_string(), "Love,Joy");
        assert_eq!(p.number("limit", 10, 1, 100).unwrap(), 5);
        let bad = Params::parse(Some("limit=0&emotion=Happy&split=dev2&limit2=x"));
        assert_eq!(
            bad.number("limit", 10, 1, 100)
                .unwrap_err()
                .param
                .as_deref(),
            Some("limit")
        );
        assert_eq!(
            bad.emotions().unwrap_err().param.as_deref(),
            Some("emotion")
        );
        assert_eq!(bad.split().unwrap_err().status, StatusCode::BAD_REQUEST);
        let twice = Params::parse(Some("keyword=a&keyword=b"));
        assert!(twice.one("keyword").is_err());
        assert_eq!(
            Params::parse(Some("keyword=")).one("keyword").unwrap(),
            None
        );
    }

    #[test]
    fn predict_bodies_are_checked_field_by_field() {
        let ok = predict_request(br#"{"texts": ["a b"], "explain": true}"#).unwrap();
        assert_eq!((ok.texts.len(), ok.explain, ok.model), (1, true, None));
        for (body, param) in [
            (&b"not json"[..], "body"),
            (br#"[1]"#, "body"),
            (br#"{"text": ["a"]}"#, "text"),
            (br#"{"texts": "a"}"#, "texts"),
            (br#"{"texts": []}"#, "texts"),
            (br#"{"texts": [" "]}"#, "texts"),
            (br#"{"texts": [1]}"#, "texts"),
            (br#"{"texts": ["a"], "explain": "yes"}"#, "explain"),
            (br#"{"texts": ["a"], "model": 3}"#, "model"),
        ] {
            let e = predict_request(body).err().unwrap();
            assert_eq!(
                e.param.as_deref(),
                Some(param),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }
}
