//! The web pages: `/` (search), `/examples/{id}`, `/classify`, `/models` and `/models/{name}`.
//!
//! Server-rendered HTML with plain GET forms, so every state of a page is a URL a person can
//! bookmark and share (`/?emotion=Joy&emotion=Love&keyword=未来&page=2`,
//! `/classify?text=…`); `page.js` only adds conveniences. Every string that comes from the
//! store, a model directory or a request goes through [`escape`] before it is written into
//! the page: a rationale holding `<script>` shows as text.

use super::api::{self, blocking, ApiError, Params};
use super::{svg, State};
use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use crate::metrics::Report;
use crate::model::sample::KnowledgeMode;
use crate::store::index::tokenize;
use crate::store::records::{Example, KnowledgeKind, Split};
use crate::views::{self, ModelReport, Predictions, Snippet};
use axum::extract::{Path, RawQuery, State as St};
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/page.js");

/// Hits per search page.
const PER_PAGE: usize = 20;
/// The last search page reachable (the query asks the index for `page × PER_PAGE` hits).
const MAX_PAGE: usize = 200;

/// `s` with the characters that mean something in HTML (`& < > " '`) replaced by entities:
/// safe in element content and in quoted attribute values.
///
/// ```
/// assert_eq!(emoknow::serve::escape("<img onerror='x'> & \"y\""),
///            "&lt;img onerror=&#39;x&#39;&gt; &amp; &quot;y&quot;");
/// ```
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment with everything but unreserved characters percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `path?query` from name/value pairs (values form-encoded).
fn url(path: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return path.to_string();
    }
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    format!("{path}?{}", ser.finish())
}

/// The label chips of a set (or a dash for none).
fn chips(labels: LabelSet) -> String {
    if labels.is_empty() {
        return r#"<span class="chip none">none</span>"#.to_string();
    }
    labels
        .iter()
        .map(|e| {
            format!(
                r#"<span class="chip e-{n}" title="{zh}">{n}</span>"#,
                n = escape(e.name()),
                zh = escape(e.chinese())
            )
        })
        .collect::<Vec<_>>()
        .join("")
}

/// A snippet as HTML: matches in `<mark>`, `…` where it was cut.
fn snippet_html(s: &Snippet) -> String {
    let mut out = String::new();
    if s.cut_before {
        out.push('…');
    }
    for (piece, marked) in s.parts() {
        if marked {
            let _ = write!(out, "<mark>{}</mark>", escape(piece));
        } else {
            out.push_str(&escape(piece));
        }
    }
    if s.cut_after {
        out.push('…');
    }
    out
}

/// `s` with its first letter upper-case.
fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What a model attaches to the text, in words.
fn mode_name(mode: KnowledgeMode) -> &'static str {
    match mode {
        KnowledgeMode::None => "none (text only)",
        KnowledgeMode::Rationale => "rationale",
        KnowledgeMode::Neighbours => "neighbours",
        KnowledgeMode::All => "rationale and neighbours",
        KnowledgeMode::Context => "document context",
    }
}

fn example_link(id: u64) -> String {
    format!(r#"<a class="id" href="/examples/{id}">#{id}</a>"#)
}

/// A whole page: head, navigation, `body`.
fn layout(state: &State, title: &str, active: &str, body: &str) -> String {
    let mut nav = String::new();
    for (href, name) in [
        ("/", "Search"),
        ("/classify", "Classify"),
        ("/models", "Models"),
    ] {
        let class = if name == active {
            r#" class="active""#
        } else {
            ""
        };
        let _ = write!(nav, r#"<a href="{href}"{class}>{name}</a>"#);
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · emoknow</title>
<link rel="stylesheet" href="/assets/style.css">
<script src="/assets/page.js" defer></script>
</head>
<body>
<header><a class="brand" href="/">emoknow</a><nav>{nav}</nav><span class="store" title="store">{store}</span></header>
<main>
{body}
</main>
<footer>emoknow · {n} model(s) loaded · every page is a URL: bookmark it, share it</footer>
</body>
</html>
"#,
        title = escape(title),
        store = escape(
            &state
                .store_path()
                .map_or("no store: models only".to_string(), |p| p
                    .display()
                    .to_string())
        ),
        n = state.models.len(),
    )
}

fn html(status: StatusCode, page: String) -> Response {
    (status, Html(page)).into_response()
}

/// An error page (the form above it, if any, stays usable).
fn error_box(e: &ApiError) -> String {
    format!(
        r#"<div class="error" role="alert"><strong>{}</strong> {}{}</div>"#,
        e.status.as_u16(),
        escape(&e.error),
        e.param
            .as_ref()
            .map(|p| format!(r#" <span class="param">(parameter {})</span>"#, escape(p)))
            .unwrap_or_default()
    )
}

fn error_page(state: &State, title: &str, active: &str, e: &ApiError) -> Response {
    html(e.status, layout(state, title, active, &error_box(e)))
}

/// `GET /assets/style.css`.
pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// `GET /assets/page.js`.
pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// Any other path: a JSON 404 under `/api/`, a page otherwise.
pub(crate) async fn not_found(St(state): St<Arc<State>>, uri: Uri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return api::unknown_endpoint(path).into_response();
    }
    let e = ApiError::not_found("path", format!("no page {path}"));
    error_page(&state, "Not found", "", &e)
}

// ---------------------------------------------------------------------------------------------
// Search

/// What the search form holds.
struct SearchForm {
    emotions: LabelSet,
    keyword: String,
    split: Option<Split>,
    source: String,
}

fn search_form(state: &State, f: &SearchForm) -> String {
    let mut boxes = String::new();
    for e in Emotion::ALL {
        let _ = write!(
            boxes,
            r#"<label class="emo e-{n}"><input type="checkbox" name="emotion" value="{n}"{checked}> {n} <span lang="zh">{zh}</span></label>"#,
            n = e.name(),
            zh = e.chinese(),
            checked = if f.emotions.contains(e) {
                " checked"
            } else {
                ""
            }
        );
    }
    let mut splits = String::from(r#"<option value="">any split</option>"#);
    for s in Split::ALL {
        let _ = write!(
            splits,
            r#"<option value="{n}"{sel}>{n}</option>"#,
            n = s.name(),
            sel = if f.split == Some(s) { " selected" } else { "" }
        );
    }
    let mut sources = String::from(r#"<option value="">any source</option>"#);
    for s in &state.sources {
        let _ = write!(
            sources,
            r#"<option value="{v}"{sel}>{v}</option>"#,
            v = escape(s),
            sel = if &f.source == s { " selected" } else { "" }
        );
    }
    format!(
        r#"<form class="search" method="get" action="/" role="search">
<div class="row"><input type="search" id="keyword" name="keyword" value="{kw}" placeholder="keyword in text or rationale, e.g. 担忧未来" lang="zh" autofocus>
<select name="split" aria-label="split">{splits}</select>
<select name="source" aria-label="knowledge source">{sources}</select>
<button type="submit">Search</button></div>
<fieldset class="emotions"><legend>gold labels include all of</legend>{boxes}</fieldset>
</form>"#,
        kw = escape(&f.keyword),
    )
}

/// `GET /?emotion=&keyword=&split=&source=&page=`: the search page.
pub(crate) async fn search(St(state): St<Arc<State>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let form = SearchForm {
        emotions: p.emotions().unwrap_or_default(),
        keyword: p.one("keyword").ok().flatten().unwrap_or("").to_string(),
        split: p.split().ok().flatten(),
        source: p.one("source").ok().flatten().unwrap_or("").to_string(),
    };
    let head = search_form(&state, &form);
    let spec = p
        .number("page", 1, 1, MAX_PAGE)
        .and_then(|page| Ok((page, api::query_spec(&p, page * PER_PAGE + 1)?)));
    let (page, spec) = match spec {
        Ok(x) => x,
        Err(e) => {
            let body = format!("{head}{}", error_box(&e));
            return html(e.status, layout(&state, "Search", "Search", &body));
        }
    };
    let st = state.clone();
    let hits = blocking(move || Ok(views::query(st.store()?, &spec)?)).await;
    let hits = match hits {
        Ok(h) => h,
        Err(e) => {
            let body = format!("{head}{}", error_box(&e));
            return html(e.status, layout(&state, "Search", "Search", &body));
        }
    };
    let tokens = if form.keyword.is_empty() {
        Vec::new()
    } else {
        tokenize(&form.keyword)
    };
    let offset = (page - 1) * PER_PAGE;
    let more = hits.len() > offset + PER_PAGE;
    let shown: Vec<_> = hits.iter().skip(offset).take(PER_PAGE).collect();
    let mut body = head;
    if shown.is_empty() {
        body.push_str(r#"<p class="empty" id="no-hits">No example matches.</p>"#);
    } else {
        let _ = write!(
            body,
            r#"<p class="count">{}–{} {}</p><ol class="hits" start="{}">"#,
            offset + 1,
            offset + shown.len(),
            if form.keyword.is_empty() {
                "in id order"
            } else {
                "best first (BM25)"
            },
            offset + 1
        );
        for h in shown {
            let ex = &h.entry.example;
            let _ = write!(
                body,
                r#"<li class="hit"><div class="hit-head"><a class="hit-link" href="/examples/{id}">#{id}</a> <span class="split">{split}</span> {chips}{score}{matched}</div><p class="text" lang="zh">{text}</p>"#,
                id = ex.id,
                split = ex.split.name(),
                chips = chips(ex.labels),
                score = h
                    .score
                    .map(|s| format!(r#" <span class="score" title="BM25">{s:.2}</span>"#))
                    .unwrap_or_default(),
                matched = h
                    .matched
                    .map(|m| format!(r#" <span class="matched">matched in {m}</span>"#))
                    .unwrap_or_default(),
                text = snippet_html(&views::snippet(&ex.text, &tokens, 120)),
            );
            if !h.entry.knowledge.is_empty() {
                body.push_str(r#"<ul class="knowledge">"#);
                for k in &h.entry.knowledge {
                    if k.kind == KnowledgeKind::Neighbours {
                        let _ = write!(
                            body,
                            r#"<li class="nb"><span class="source">{}</span> {} stored neighbours</li>"#,
                            escape(&k.source),
                            k.neighbours.len()
                        );
                        continue;
                    }
                    let text = views::best_knowledge_text(k, &tokens);
                    let _ = write!(
                        body,
                        r#"<li class="rationale"><span class="source">{}</span> {} <span class="snippet" lang="zh">{}</span></li>"#,
                        escape(&k.source),
                        chips(k.asserted),
                        snippet_html(&views::snippet(text, &tokens, 110))
                    );
                }
                body.push_str("</ul>");
            }
            body.push_str("</li>");
        }
        body.push_str("</ol>");
    }
    // Paging: the same query with another page.
    let mut pairs: Vec<(&str, String)> = form
        .emotions
        .iter()
        .map(|e| ("emotion", e.name().to_string()))
        .collect();
    if !form.keyword.is_empty() {
        pairs.push(("keyword", form.keyword.clone()));
    }
    if let Some(s) = form.split {
        pairs.push(("split", s.name().to_string()));
    }
    if !form.source.is_empty() {
        pairs.push(("source", form.source.clone()));
    }
    let page_url = |n: usize| {
        let mut all: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let n = n.to_string();
        all.push(("page", &n));
        escape(&url("/", &all))
    };
    body.push_str(r#"<nav class="pager">"#);
    if page > 1 {
        let _ = write!(
            body,
            r#"<a rel="prev" href="{}">← previous</a>"#,
            page_url(page - 1)
        );
    }
    let _ = write!(body, r#"<span>page {page}</span>"#);
    if more && page < MAX_PAGE {
        let _ = write!(
            body,
            r#"<a rel="next" href="{}">next →</a>"#,
            page_url(page + 1)
        );
    }
    body.push_str("</nav>");
    let title = if form.keyword.is_empty() {
        "Search".to_string()
    } else {
        format!("{} – Search", form.keyword)
    };
    html(StatusCode::OK, layout(&state, &title, "Search", &body))
}

// ---------------------------------------------------------------------------------------------
// Example

fn example_row(e: &Example, current: bool) -> String {
    format!(
        r#"<tr{cls}><td>{link}</td><td>{split}</td><td>{chips}</td><td lang="zh">{text}</td></tr>"#,
        cls = if current { r#" class="current""# } else { "" },
        link = example_link(e.id),
        split = e.split.name(),
        chips = chips(e.labels),
        text = escape(&e.text)
    )
}

/// `GET /examples/{id}`: one example with all its knowledge, neighbours and context.
pub(crate) async fn example(St(state): St<Arc<State>>, Path(id): Path<String>) -> Response {
    let id = match api::parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error_page(&state, "Example", "", &e),
    };
    let st = state.clone();
    let view = match blocking(move || api::example_view(&st, id)).await {
        Ok(v) => v,
        Err(e) => return error_page(&state, &format!("Example {id}"), "", &e),
    };
    let ex = &view.show.entry.example;
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<article class="example" id="example"><h1>Example #{id} {chips}</h1>
<p class="sentence" lang="zh" id="text">{text}</p>
<table class="facts"><tr><th>gold labels</th><td id="gold">{gold}</td></tr><tr><th>split</th><td>{split}</td></tr><tr><th>from</th><td>{file}:{line}</td></tr></table>"#,
        id = ex.id,
        chips = chips(ex.labels),
        text = escape(&ex.text),
        gold = escape(&ex.labels.to_string()),
        split = ex.split.name(),
        file = escape(&ex.origin.file),
        line = ex.origin.line,
    );
    b.push_str(r#"<section id="knowledge"><h2>Knowledge</h2>"#);
    let rationales: Vec<_> = view
        .show
        .entry
        .knowledge
        .iter()
        .filter(|k| k.kind == KnowledgeKind::Rationale)
        .collect();
    if rationales.is_empty() {
        b.push_str(r#"<p class="empty">No source has a rationale for this example.</p>"#);
    }
    for k in rationales {
        let _ = write!(
            b,
            r#"<div class="card rationale" data-source="{src}"><h3><span class="source">{src}</span> <span class="asserted">asserts {chips}</span></h3>
<p class="meta">{prompt} prompt · model {model} · {attempts} request(s)</p>
<h4>Sanitized (what classifiers read)</h4><p class="sanitized" lang="zh">{san}</p>
<h4>Raw answer</h4><pre class="raw" lang="zh">{raw}</pre></div>"#,
            src = escape(&k.source),
            chips = chips(k.asserted),
            prompt = k.prompt_kind.name(),
            model = escape(&k.model),
            attempts = k.attempts,
            san = escape(&k.sanitized),
            raw = escape(&k.raw),
        );
    }
    for m in &view.show.missing {
        let _ = write!(
            b,
            r#"<div class="card missing"><span class="source">{}</span> had nothing usable: {}</div>"#,
            escape(&m.source),
            escape(&m.reason)
        );
    }
    b.push_str("</section>");
    b.push_str(r#"<section id="neighbours"><h2>Neighbours</h2>"#);
    if view.neighbours.is_empty() {
        b.push_str(r#"<p class="empty">No neighbours stored or found.</p>"#);
    } else {
        b.push_str(r#"<table class="list"><thead><tr><th>source</th><th>example</th><th>score</th><th>labels</th><th>text</th></tr></thead><tbody>"#);
        for n in &view.neighbours {
            let _ = write!(
                b,
                r#"<tr><td class="source">{src}</td><td>{link}</td><td class="num">{score:.3}</td><td>{chips}</td><td lang="zh">{text}</td></tr>"#,
                src = escape(&n.source),
                link = example_link(n.id),
                score = n.score,
                chips = chips(n.labels),
                text = escape(n.text.as_deref().unwrap_or("(no longer in the store)")),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
    let _ = write!(
        b,
        r#"<section id="context"><h2>Context</h2><p class="note">{note}.</p><table class="list"><tbody>"#,
        note = escape(&capitalized(view.context.note))
    );
    for e in &view.context.before {
        b.push_str(&example_row(e, false));
    }
    b.push_str(&example_row(ex, true));
    for e in &view.context.after {
        b.push_str(&example_row(e, false));
    }
    b.push_str("</tbody></table></section></article>");
    html(
        StatusCode::OK,
        layout(&state, &format!("Example {}", ex.id), "", &b),
    )
}

// ---------------------------------------------------------------------------------------------
// Classify

fn model_select(state: &State, chosen: &str) -> String {
    if state.models.len() < 2 {
        return state
            .models
            .first()
            .map(|m| {
                format!(
                    r#"<input type="hidden" name="model" value="{}">"#,
                    escape(&m.name)
                )
            })
            .unwrap_or_default();
    }
    let mut s = String::from(r#"<select name="model" aria-label="model">"#);
    for m in &state.models {
        let _ = write!(
            s,
            r#"<option value="{v}"{sel}>{v}</option>"#,
            v = escape(&m.name),
            sel = if m.name == chosen { " selected" } else { "" }
        );
    }
    s.push_str("</select>");
    s
}

fn prediction_html(state: &State, model: &str, text: &str, pred: &Predictions) -> String {
    let mut b = String::new();
    let (Some(p), Some(labels)) = (pred.probs.first(), pred.labels.first()) else {
        return b;
    };
    let loaded = state.model(model);
    let whole_sets = loaded.is_some_and(|m| m.model.meta.decode.is_some());
    // What decides the labels, from one match: the bars and their ticks, the legend saying so,
    // and the table's third column (its head and a cell per label).
    let under = pred.under_sets.first().copied().flatten();
    let (bars, ticks, legend, head, column): (_, _, String, &str, [String; NUM_EMOTIONS]) =
        match under {
            Some((q, cut)) => (
                q,
                Some([cut; NUM_EMOTIONS]),
                format!(
                    "bars are each label's probability under the label sets (calibrated \
                     probabilities with how labels co-occur in training), ticks the cut \
                     {cut:.2} (chosen on validation) its labels exceed"
                ),
                "under the sets",
                std::array::from_fn(|j| format!("{:.3}", q[j])),
            ),
            None if whole_sets => (
                *p,
                None,
                "bars are calibrated probabilities; the labels are the label set the model \
                 decodes from them and how labels co-occur in training (the most probable sets \
                 are below)"
                    .to_string(),
                "",
                Default::default(),
            ),
            None => {
                let t = loaded
                    .map(|m| m.model.calibrated_thresholds())
                    .unwrap_or([0.5; NUM_EMOTIONS]);
                (
                    *p,
                    Some(t),
                    "bars are calibrated probabilities, ticks the model's per-label thresholds \
                     (tuned on validation)"
                        .to_string(),
                    "threshold",
                    std::array::from_fn(|j| format!("≥ {:.2}", t[j])),
                )
            }
        };
    let _ = write!(
        b,
        r#"<section class="result" id="result"><h2>Labels <span id="labels" data-labels="{names}">{chips}</span></h2>
<p class="meta">model <a href="/models/{seg}">{model}</a> · {legend}</p>"#,
        names = escape(&labels.to_string()),
        chips = chips(*labels),
        seg = segment(model),
        model = escape(model),
    );
    if let Some(s) = pred.samples.first() {
        let note = if s.text == text {
            "as you wrote it"
        } else {
            "your text in the style of the model's training text"
        };
        let _ = write!(
            b,
            r#"<p class="meta">Read as <code id="read" lang="zh">{}</code> ({note})</p>"#,
            escape(&s.text)
        );
    }
    if pred.unknown.first().copied().unwrap_or(false) {
        let _ = write!(
            b,
            r#"<p class="warning">{}</p>"#,
            escape(views::UNKNOWN_WARNING)
        );
    }
    b.push_str(&svg::probability_bars(&bars, ticks.as_ref(), *labels));
    let _ = write!(
        b,
        r#"<table class="list probs"><thead><tr><th>emotion</th><th class="num">calibrated probability</th><th class="num">{head}</th></tr></thead><tbody>"#
    );
    for e in Emotion::ALL {
        let j = e.index();
        let _ = write!(
            b,
            r#"<tr data-emotion="{n}"><td>{n}</td><td class="num">{p:.3}</td><td class="num">{c}</td></tr>"#,
            n = e.name(),
            p = p[j],
            c = column[j],
        );
    }
    b.push_str("</tbody></table>");
    if let Some(sets) = pred.sets.first().filter(|s| !s.is_empty()) {
        b.push_str(
            r#"<h2>Most probable label sets</h2><table class="list sets" id="sets"><tbody>"#,
        );
        for (set, q) in sets {
            let _ = write!(
                b,
                r#"<tr data-labels="{names}"><td>{chips}</td><td class="num">{q:.3}</td></tr>"#,
                names = escape(&set.to_string()),
                chips = chips(*set),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str(r#"<h2>Knowledge used</h2>"#);
    let sample = pred.samples.first();
    match pred.mode {
        KnowledgeMode::None => {
            b.push_str(r#"<p class="empty">None: this model reads the text only.</p>"#)
        }
        mode => {
            if mode.rationale() {
                b.push_str(r#"<p class="empty">Rationale: none — a new text has no LLM rationale (<code>emoknow annotate</code> writes them for stored examples).</p>"#);
            }
            if mode.neighbours() {
                b.push_str(
                    r#"<p>Neighbours retrieved now, their labels appended to the text:</p>"#,
                );
            }
        }
    }
    if let Some(s) = sample {
        if !s.neighbours.is_empty() {
            b.push_str(r#"<table class="list" id="used-neighbours"><thead><tr><th>example</th><th>score</th><th>labels</th><th>text</th></tr></thead><tbody>"#);
            for n in &s.neighbours {
                let text = state
                    .model(model)
                    .and_then(|m| views::neighbour_text(state.store, &m.model, n.id).ok())
                    .unwrap_or_default();
                let _ = write!(
                    b,
                    r#"<tr><td>{}</td><td class="num">{:.3}</td><td>{}</td><td lang="zh">{}</td></tr>"#,
                    example_link(n.id),
                    n.score,
                    chips(n.labels),
                    escape(&text)
                );
            }
            b.push_str("</tbody></table>");
        }
        if !s.knowledge.is_empty() {
            let _ = write!(
                b,
                r#"<p class="meta">The model read: <code lang="zh">{}</code></p>"#,
                escape(&s.joined())
            );
        }
    }
    let _ = write!(
        b,
        r#"<p class="meta">Same as <code>POST /api/predict</code> with <code>{{"texts": [{}], "explain": true}}</code>.</p></section>"#,
        escape(&serde_json::Value::String(text.to_string()).to_string())
    );
    b
}

/// `GET /classify?text=&model=`: a text box, and for a text its probabilities, labels and the
/// knowledge used.
pub(crate) async fn classify(St(state): St<Arc<State>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let text = p.one("text").ok().flatten().unwrap_or("").to_string();
    let chosen = p
        .one("model")
        .ok()
        .flatten()
        .map(str::to_string)
        .or_else(|| state.models.first().map(|m| m.name.clone()))
        .unwrap_or_default();
    let mut b = format!(
        r#"<h1>Classify a sentence</h1>
<form class="classify" method="get" action="/classify">
<textarea id="text" name="text" rows="3" lang="zh" placeholder="我很担心明天的考试。 (as you would write it: it is brought into the style of the model's training text)">{text}</textarea>
<div class="row">{select}<button type="submit">Classify</button></div>
</form>"#,
        text = escape(&text),
        select = model_select(&state, &chosen),
    );
    if state.models.is_empty() {
        b.push_str(r#"<p class="error">No model is loaded: start the server with <code>--model DIR</code>.</p>"#);
        return html(StatusCode::OK, layout(&state, "Classify", "Classify", &b));
    }
    let mut status = StatusCode::OK;
    if !text.trim().is_empty() {
        let st = state.clone();
        let t = text.clone();
        let name = chosen.clone();
        let result = match p.text("text") {
            Err(e) => Err(e),
            Ok(_) => blocking(move || api::predict_texts(&st, Some(&name), &[t])).await,
        };
        match result {
            Ok((name, pred)) => b.push_str(&prediction_html(&state, &name, &text, &pred)),
            Err(e) => {
                status = e.status;
                b.push_str(&error_box(&e));
            }
        }
    }
    let title = if text.is_empty() {
        "Classify".to_string()
    } else {
        format!("{text} – Classify")
    };
    html(status, layout(&state, &title, "Classify", &b))
}

// ---------------------------------------------------------------------------------------------
// Models

fn metrics_row(name: &str, r: &Report) -> String {
    format!(
        r#"<tr><th>{}</th><td class="num">{:.3}</td><td class="num">{:.3}</td><td class="num">{:.3}</td><td class="num">{:.3}</td><td class="num">{}</td></tr>"#,
        escape(name),
        r.hamming_accuracy,
        r.exact_match,
        r.micro_f1,
        r.macro_f1,
        r.n
    )
}

const METRICS_HEAD: &str = r#"<table class="list metrics"><thead><tr><th></th><th>hamming</th><th>exact</th><th>micro-F1</th><th>macro-F1</th><th>n</th></tr></thead><tbody>"#;

/// `GET /models`: the served models.
pub(crate) async fn models(St(state): St<Arc<State>>) -> Response {
    let mut b = String::from("<h1>Models</h1>");
    if state.models.is_empty() {
        b.push_str(r#"<p class="empty">No model is loaded: start the server with <code>--model DIR</code>.</p>"#);
    } else {
        b.push_str(r#"<table class="list"><thead><tr><th>model</th><th>kind</th><th>knowledge</th><th>trained on</th><th>validation micro-F1</th><th>macro-F1</th></tr></thead><tbody>"#);
        for m in &state.models {
            let meta = &m.model.meta;
            let _ = write!(
                b,
                r#"<tr><td><a href="/models/{seg}">{name}</a></td><td>{kind}</td><td>{mode}</td><td class="num">{n}</td><td class="num">{mi:.3}</td><td class="num">{ma:.3}</td></tr>"#,
                seg = segment(&m.name),
                name = escape(&m.name),
                kind = m.model.kind().name(),
                mode = mode_name(meta.attach.mode),
                n = meta.n_train,
                mi = meta.val.micro_f1,
                ma = meta.val.macro_f1,
            );
        }
        b.push_str("</tbody></table>");
    }
    html(StatusCode::OK, layout(&state, "Models", "Models", &b))
}

fn size_confusion_html(r: &Report) -> String {
    // Sizes that occur in gold or predictions.
    let n = r.size_confusion.len();
    let used: Vec<usize> = (0..n)
        .filter(|&i| {
            r.size_confusion[i].iter().any(|&c| c > 0)
                || r.size_confusion
                    .iter()
                    .any(|row| row.get(i).is_some_and(|&c| c > 0))
        })
        .collect();
    let max = r
        .size_confusion
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let mut b = String::from(
        r#"<table class="confusion" id="size-confusion"><thead><tr><th>gold \ predicted</th>"#,
    );
    for &j in &used {
        let _ = write!(b, "<th>{j}</th>");
    }
    b.push_str("</tr></thead><tbody>");
    for &i in &used {
        let _ = write!(b, "<tr><th>{i} label(s)</th>");
        for &j in &used {
            let c = r.size_confusion[i].get(j).copied().unwrap_or(0);
            let alpha = c as f64 / max as f64;
            let _ = write!(
                b,
                r#"<td class="num{diag}" style="background: rgba(63, 127, 191, {alpha:.2})">{c}</td>"#,
                diag = if i == j { " diag" } else { "" }
            );
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table>");
    b
}

fn report_html(report: &ModelReport) -> String {
    let mut b = String::new();
    let r = &report.report;
    let _ = write!(
        b,
        r#"<section id="per-label"><h2>Per label on {split}</h2>{bars}<table class="list"><thead><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th><th>predicted</th></tr></thead><tbody>"#,
        split = report.split,
        bars = svg::prf_bars(&r.per_label),
    );
    for l in &r.per_label {
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td class="num">{:.3}</td><td class="num">{:.3}</td><td class="num">{:.3}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(&l.label),
            l.precision,
            l.recall,
            l.f1,
            l.support,
            l.predicted
        );
    }
    b.push_str("</tbody></table></section>");
    let _ = write!(
        b,
        r#"<section id="sizes"><h2>Label-set sizes</h2><p class="note">How many labels each sentence has, against how many the model gave it.</p>{}</section>"#,
        size_confusion_html(r)
    );
    let names: Vec<&str> = Emotion::ALL.iter().map(|e| e.name()).collect();
    let _ = write!(
        b,
        r#"<section id="label-confusion"><h2>Which emotion is mistaken for which</h2><p class="note">Row: a gold label the model missed; column: a label it gave instead (not gold) in the same sentence. The diagonal (green) counts hits; red shading is relative to the most frequent mistake.</p>{}</section>"#,
        svg::heatmap(&report.label_confusion, &names, &names)
    );
    b.push_str(r#"<section id="thresholds"><h2>Threshold curves (validation)</h2>"#);
    if report.threshold_curves.is_empty() {
        b.push_str(r#"<p class="empty">No validation split to draw them on.</p>"#);
    } else {
        b.push_str(r#"<p class="note">Each label's F1 on validation as its threshold moves (the label alone); the line marks the tuned threshold.</p><div class="curves">"#);
        for c in &report.threshold_curves {
            b.push_str(&svg::threshold_curve(c));
        }
        b.push_str("</div>");
    }
    b.push_str("</section>");
    let _ = write!(
        b,
        r#"<section id="calibration"><h2>Calibration ({split})</h2><p class="note">Expected calibration error {ece:.3} over the eight labels' probabilities (10 bins; {before:.3} before calibration). Each dot is a bin of predictions: its mean probability against how often the label was gold; a calibrated model follows the dashed diagonal.</p><div class="curves">"#,
        split = report.split,
        ece = report.calibration.ece,
        before = report.uncalibrated_ece,
    );
    for c in &report.calibration.per_label {
        b.push_str(&svg::reliability_curve(c));
    }
    b.push_str("</div></section>");
    b
}

/// How a model turns probabilities into labels, in words.
fn decoding(meta: &crate::model::classifier::Meta) -> String {
    let calibrated = if meta.calibration.is_some() {
        "calibrated probabilities (Platt, fitted on validation)"
    } else {
        "scores (trained before calibration)"
    };
    match &meta.decode {
        None => format!("per-label thresholds on the scores; shows {calibrated}"),
        Some(d) => format!(
            "label sets ({}; β {}, sets seen at least {} times in training) from {calibrated}",
            match (d.target, d.cut) {
                (crate::model::decode::SetTarget::Exact, _) => "exact-match target".to_string(),
                (crate::model::decode::SetTarget::F1, _) => "expected-F1 target".to_string(),
                (crate::model::decode::SetTarget::Micro, cut) => format!(
                    "micro-F1 target: each label whose probability under the sets exceeds {}",
                    cut.unwrap_or(0.5)
                ),
            },
            d.beta,
            d.min_count
        ),
    }
}

/// `GET /models/{name}?split=`: a model's settings, validation and test metrics, per-label
/// scores, confusions and threshold curves.
pub(crate) async fn model(
    St(state): St<Arc<State>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::parse(q.as_deref());
    let split = match p.split() {
        Ok(s) => s.unwrap_or(Split::Test),
        Err(e) => return error_page(&state, "Model", "Models", &e),
    };
    if state.model(&name).is_none() {
        let e = ApiError::not_found("model", format!("no model {name:?} is served"));
        return error_page(&state, "Model", "Models", &e);
    }
    let st = state.clone();
    let n = name.clone();
    let report = blocking(move || {
        let served = api::pick_model(&st, Some(&n))?;
        api::model_report(&st, served, split)
    })
    .await;
    let Some(served) = state.model(&name) else {
        return error_page(
            &state,
            "Model",
            "Models",
            &ApiError::not_found("model", "no such model"),
        );
    };
    let meta = &served.model.meta;
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<h1>Model {name} <span class="kind">{kind}</span></h1>
<table class="facts"><tr><th>directory</th><td>{dir}</td></tr><tr><th>knowledge</th><td>{mode}</td></tr><tr><th>trained on</th><td>{n_train} examples ({secs:.1} s), thresholds tuned for {obj} on {n_val} validation examples</td></tr>
<tr><th>thresholds</th><td>{ths}</td></tr><tr><th>decoding</th><td>{decode}</td></tr></table>"#,
        name = escape(&served.name),
        kind = served.model.kind().name(),
        dir = escape(&served.model.dir().display().to_string()),
        mode = mode_name(meta.attach.mode),
        n_train = meta.n_train,
        secs = meta.train_secs,
        obj = meta.objective,
        n_val = meta.n_val,
        ths = {
            let t = served.model.calibrated_thresholds();
            Emotion::ALL
                .iter()
                .map(|e| format!("{} {:.2}", e.name(), t[e.index()]))
                .collect::<Vec<_>>()
                .join(" · ")
        },
        decode = escape(&decoding(meta)),
    );
    let other = match split {
        Split::Test => Split::Val,
        _ => Split::Test,
    };
    let _ = write!(
        b,
        r#"<section id="metrics"><h2>Metrics</h2>{head}{val}"#,
        head = METRICS_HEAD,
        val = metrics_row("validation (at training)", &meta.val),
    );
    let status = match &report {
        Ok(r) => {
            b.push_str(&metrics_row(&format!("{} split (now)", r.split), &r.report));
            b.push_str("</tbody></table>");
            let _ = write!(
                b,
                r#"<p class="meta">Showing the {split} split · <a href="/models/{seg}?split={o}">show the {o} split</a> · JSON: <a href="/api/eval/{seg}?split={split}">/api/eval/{name}?split={split}</a></p></section>"#,
                seg = segment(&served.name),
                name = escape(&served.name),
                o = other,
            );
            b.push_str(&report_html(r));
            StatusCode::OK
        }
        Err(e) => {
            b.push_str("</tbody></table></section>");
            b.push_str(&error_box(e));
            e.status
        }
    };
    html(
        status,
        layout(&state, &format!("Model {}", served.name), "Models", &b),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralizes_markup_and_keeps_text() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(
            escape("<img src=x onerror='alert(1)'>"),
            "&lt;img src=x onerror=&#39;alert(1)&#39;&gt;"
        );
        assert_eq!(escape("a & b &amp;"), "a &amp; b &amp;amp;");
        assert_eq!(escape("担忧 未来 · 理由"), "担忧 未来 · 理由");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn snippets_and_chips_escape_their_text() {
        let s = views::snippet("<b>担忧</b> 未来", &["担忧".into()], 40);
        assert_eq!(
            snippet_html(&s),
            "&lt;b&gt;<mark>担忧</mark>&lt;/b&gt; 未来"
        );
        let c = chips("Love,Joy".parse().unwrap());
        assert!(
            c.contains(r#"class="chip e-Love""#) && c.contains(">Joy<"),
            "{c}"
        );
    }

    #[test]
    fn urls_encode_values_and_segments() {
        assert_eq!(
            url("/", &[("emotion", "Joy"), ("keyword", "未来 & 担忧")]),
            "/?emotion=Joy&keyword=%E6%9C%AA%E6%9D%A5+%26+%E6%8B%85%E5%BF%A7"
        );
        assert_eq!(segment("my model/1"), "my%20model%2F1");
    }
}
