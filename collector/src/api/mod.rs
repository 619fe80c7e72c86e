//! api: HTTP JSON and Prometheus `/metrics`. Reads the engine's views; the changes it
//! makes (retiring a decommissioned node, entering or withdrawing a renewable contract)
//! need the bearer token.

mod contracts;
mod history;
mod metrics;
mod reports;
pub mod serve;
mod web;

pub use metrics::SiteFamilies;

use crate::engine::{Edit, EngineConfig, LevelRule, Snapshot};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dcwatt_common::live::Live;
use dcwatt_common::metrics::Registry;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// What the alerts show the API: the port the alert evaluator fills (the API does not
/// know how alerts work, only what they look like).
pub trait AlertBoard: Send + Sync {
    /// `{"alerts": [...], "suppressed": [...]}`; None when the states cannot be read.
    fn alerts(&self) -> Option<serde_json::Value>;
    /// `{"history": [...]}`, newest first; None when it cannot be read.
    fn history(&self) -> Option<serde_json::Value>;
}

/// The history database, for the trend and energy endpoints.
#[derive(Debug, Clone)]
pub struct HistoryAccess {
    /// The database file (read through read-only connections of the API's own), when
    /// the history runs.
    pub path: Option<std::path::PathBuf>,
    /// The engine's settings, for periods computed from the history by the same rules
    /// (replaced on reload).
    pub engine: Arc<Live<EngineConfig>>,
    /// Each site's projections against its targets, with when they were computed (the
    /// site view carries them; recomputed at most once a minute).
    pub projections: Arc<std::sync::Mutex<BTreeMap<String, (i64, serde_json::Value)>>>,
    /// Each site's time zone (calendar periods).
    pub site_zones: Arc<Live<BTreeMap<String, crate::zone::SiteZone>>>,
}

impl HistoryAccess {
    /// How the IT level of `site` is picked for periods computed from the history: the
    /// same rule as the engine's.
    pub fn level_rule(&self, site: &str) -> LevelRule {
        self.engine.get().level_rule(site)
    }

    /// The targets of `site` (`[[sites]] targets`, presets applied).
    pub fn targets(&self, site: &str) -> Vec<crate::engine::targets::Target> {
        self.engine
            .get()
            .site_targets
            .get(site)
            .cloned()
            .unwrap_or_default()
    }

    /// The emission factors and renewable contracts of `site`, for its figures beyond PUE.
    pub fn kpi_config(&self, site: &str) -> crate::engine::kpi::SiteKpiConfig {
        self.engine
            .get()
            .site_kpis
            .get(site)
            .cloned()
            .unwrap_or_default()
    }
}

/// What the handlers read. Nothing here is the engine: its owner publishes snapshots and
/// takes edits.
#[derive(Clone)]
pub struct AppState {
    /// The latest snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Edits for the engine's owner (retiring a node), each with its answer.
    pub edits: mpsc::Sender<(Edit, oneshot::Sender<crate::engine::Edited>)>,
    /// Every part's families, for `/metrics`.
    pub metrics: Arc<Registry>,
    /// Alert states and history.
    pub alerts: Arc<dyn AlertBoard>,
    /// The history database.
    pub history: HistoryAccess,
    /// True while the intake is connected to its broker.
    pub broker_connected: Arc<AtomicBool>,
    /// True on a fleet collector.
    pub fleet: bool,
    /// Bearer token the API and `/metrics` require, when set.
    pub token: Option<Arc<dcwatt_common::secret::Secret>>,
}

impl AppState {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// The emission factors and renewable contracts of `site` with its live
    /// carbon-intensity series, for the periods computed from the history.
    fn kpi_config(&self, site: &str) -> crate::engine::kpi::SiteKpiConfig {
        let mut cfg = self.history.kpi_config(site);
        let snap = self.snapshots.borrow();
        if let Some(c) = snap.carbon.get(site) {
            cfg.live = c.factors.clone();
        }
        if let Some(c) = snap.contracts.get(site) {
            cfg.entered = c.clone();
        }
        cfg
    }
}

/// The routes. The dashboard's page and assets and `/healthz` are public; the API and
/// `/metrics` require the bearer token when one is configured.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics::render))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/sites/{site}", get(site))
        .route("/api/v1/sites/{site}/nodes", get(nodes))
        .route("/api/v1/sites/{site}/nodes/{node}/retire", post(retire))
        .route("/api/v1/sites/{site}/racks", get(racks))
        .route("/api/v1/sites/{site}/history", get(history::history))
        .route("/api/v1/sites/{site}/energy", get(history::energy))
        .route("/api/v1/sites/{site}/calendar", get(history::calendar))
        .route("/api/v1/sites/{site}/intervals", get(history::intervals))
        .route(
            "/api/v1/sites/{site}/reports/eu-annual",
            get(history::eu_annual),
        )
        .route("/api/v1/sites/{site}/targets", get(history::targets))
        .route(
            "/api/v1/sites/{site}/contracts",
            get(contracts::list).post(contracts::enter),
        )
        .route(
            "/api/v1/sites/{site}/contracts/{id}",
            axum::routing::delete(contracts::withdraw),
        )
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/history", get(alert_history))
        .route_layer(axum::middleware::from_fn(conditional))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/", get(web::index))
        .route("/assets/{name}", get(web::asset))
        .route("/healthz", get(healthz))
        .merge(protected)
        .with_state(state)
}

/// Compares two secrets without leaking where they differ: both are hashed, and the
/// digests compared in full.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use ring::digest::{digest, SHA256};
    let (x, y) = (digest(&SHA256, a), digest(&SHA256, b));
    x.as_ref()
        .iter()
        .zip(y.as_ref())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// Lets a request through when no token is configured or it carries
/// `Authorization: Bearer <token>` (compared in constant time).
async fn require_token(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given.as_bytes(), token.expose().as_bytes()) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"dcwatt\"")],
        Json(json!({"error": "this API needs Authorization: Bearer <http.token>"})),
    )
        .into_response()
}

fn engine_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "engine state unavailable"})),
    )
        .into_response()
}

pub(crate) fn not_found(site: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("unknown site {site:?}")})),
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    let connected = s.broker_connected.load(Ordering::Relaxed);
    let body = json!({"status": "ok", "broker_connected": connected, "fleet": s.fleet});
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn sites(State(s): State<AppState>) -> Response {
    let snap = s.snapshot();
    let views: Vec<_> = snap.views().collect();
    Json(json!({ "sites": views })).into_response()
}

async fn site(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    let snap = s.snapshot();
    let Some(v) = snap.site(&site) else {
        return not_found(&site);
    };
    let mut body = serde_json::to_value(&v.view).unwrap_or_default();
    // The site's zone and today's date there: what a page needs to offer local periods.
    let zone = history::zone_of(&s, &site);
    if let Some(m) = body.as_object_mut() {
        m.insert("time_zone".into(), json!(zone.name()));
        let today = zone.local(v.view.ts_ms).map(|t| t.date().to_string());
        m.insert("local_date".into(), json!(today));
    }
    // Each target with the year's projection from the history, where there is one.
    if let Some(report) = history::cached_projections(&s, &site).await {
        if let Some(targets) = body["targets"].as_array_mut() {
            for t in targets {
                let line = report["targets"]
                    .as_array()
                    .and_then(|l| l.iter().find(|l| l["kpi"] == t["kpi"]));
                if let (Some(line), Some(m)) = (line, t.as_object_mut()) {
                    let mut p = serde_json::Map::new();
                    for key in [
                        "year_to_date",
                        "trailing_12_months",
                        "projected_annual",
                        "status",
                        "reason",
                    ] {
                        if let Some(v) = line.get(key) {
                            p.insert(key.to_owned(), v.clone());
                        }
                    }
                    if line.get("projected_annual").is_some() {
                        p.insert("method".into(), report["method"].clone());
                        m.insert("projection".into(), serde_json::Value::Object(p));
                    }
                }
            }
        }
    }
    Json(body).into_response()
}

/// Query of the node list: filters, order and a page.
#[derive(Debug, Default, serde::Deserialize)]
pub struct NodesQuery {
    /// States to keep, comma-separated (online, offline, stale, retired).
    state: Option<String>,
    /// Keep the nodes of this rack.
    rack: Option<String>,
    /// Keep the nodes whose id contains this (case-insensitive).
    q: Option<String>,
    /// `node` (default) or `problems`: offline, stale, online, retired, then by id.
    sort: Option<String>,
    /// Page size, 1..=1000; every node when absent.
    limit: Option<usize>,
    /// Where the page starts: the `next_cursor` of the page before.
    cursor: Option<String>,
}

/// Largest page of `/nodes`.
const MAX_NODES_PAGE: usize = 1000;

/// A node's states, as `/nodes` filters and counts them.
const NODE_STATES: [&str; 4] = ["online", "offline", "stale", "retired"];

fn problem_rank(state: &str) -> u8 {
    match state {
        "offline" => 0,
        "stale" => 1,
        "online" => 2,
        _ => 3,
    }
}

async fn nodes(
    State(s): State<AppState>,
    Path(site): Path<String>,
    axum::extract::Query(q): axum::extract::Query<NodesQuery>,
) -> Response {
    let snap = s.snapshot();
    let Some(v) = snap.site(&site) else {
        return not_found(&site);
    };
    let bad = |msg: String| (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response();
    let states: Option<Vec<&str>> = q
        .state
        .as_deref()
        .map(|x| x.split(',').map(str::trim).collect());
    if let Some(unknown) = states.iter().flatten().find(|x| !NODE_STATES.contains(x)) {
        return bad(format!(
            "state={unknown:?} is not one of online, offline, stale, retired"
        ));
    }
    let problems = match q.sort.as_deref() {
        None | Some("node") => false,
        Some("problems") => true,
        Some(other) => return bad(format!("sort={other:?} is not node or problems")),
    };
    if q.limit.is_some_and(|l| l == 0 || l > MAX_NODES_PAGE) {
        return bad(format!("limit must be 1..={MAX_NODES_PAGE}"));
    }
    let needle = q.q.as_deref().map(str::to_lowercase);
    let mut counts: BTreeMap<&str, usize> = NODE_STATES.iter().map(|x| (*x, 0)).collect();
    for n in &v.nodes {
        *counts.entry(n.state).or_default() += 1;
    }
    let key = |n: &crate::engine::NodeView| {
        let rank = if problems { problem_rank(n.state) } else { 0 };
        format!("{rank}.{}", n.node)
    };
    let mut kept: Vec<(String, &crate::engine::NodeView)> = v
        .nodes
        .iter()
        .filter(|n| states.as_ref().is_none_or(|st| st.contains(&n.state)))
        .filter(|n| q.rack.as_ref().is_none_or(|r| n.rack.as_ref() == Some(r)))
        .filter(|n| {
            needle
                .as_ref()
                .is_none_or(|x| n.node.to_lowercase().contains(x.as_str()))
        })
        .map(|n| (key(n), n))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let total = kept.len();
    // The cursor is the sort key of the last node given: the next page starts after it,
    // whatever joined or left in between.
    let start = q.cursor.as_ref().map_or(0, |c| {
        kept.partition_point(|(k, _)| k.as_str() <= c.as_str())
    });
    let end = q.limit.map_or(total, |l| (start + l).min(total));
    let page = &kept[start.min(end)..end];
    let next_cursor = (end < total)
        .then(|| page.last().map(|(k, _)| k.clone()))
        .flatten();
    let nodes: Vec<&crate::engine::NodeView> = page.iter().map(|(_, n)| *n).collect();
    Json(json!({
        "site": site, "nodes": nodes, "total": total, "counts": counts,
        "next_cursor": next_cursor,
    }))
    .into_response()
}

/// Answers `304 Not Modified` to a GET whose `If-None-Match` names the answer's ETag, and
/// gives every JSON answer of the API an ETag (a digest of its body): a dashboard polling
/// every few seconds downloads only what changed.
async fn conditional(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() != axum::http::Method::GET {
        return next.run(req).await;
    }
    let wanted = req.headers().get(header::IF_NONE_MATCH).cloned();
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() != StatusCode::OK || !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return engine_error();
    };
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let tag: String = d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let etag = format!("\"{tag}\"");
    let Ok(value) = header::HeaderValue::from_str(&etag) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    // Revalidate every time: the numbers change by the second.
    let tag_headers = |h: &mut axum::http::HeaderMap| {
        h.insert(header::ETAG, value.clone());
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
    };
    let matches = wanted
        .as_ref()
        .and_then(|w| w.to_str().ok())
        .is_some_and(|w| {
            w.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    if matches {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        tag_headers(r.headers_mut());
        return r;
    }
    tag_headers(&mut parts.headers);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Retires a decommissioned node: from now on its meters are no longer expected, so
/// coverage stops counting them as missing. Needs `http.token` (the middleware has
/// checked it): without a token configured, nobody may change what dcwatt counts.
async fn retire(State(s): State<AppState>, Path((site, node)): Path<(String, String)>) -> Response {
    if s.token.is_none() {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "retiring a node changes what dcwatt counts: set http.token first"})),
        )
            .into_response();
    }
    let now = dcwatt_common::now_ms();
    let edit = Edit::Retire {
        site: site.clone(),
        node: node.clone(),
        now_ms: now,
    };
    match send_edit(&s, edit).await {
        Some(Ok(_)) => {
            tracing::info!(site = %site, node = %node, "node retired");
            Json(json!({"site": site, "node": node, "state": "retired", "retired_ms": now}))
                .into_response()
        }
        Some(Err(refusal)) => refused(refusal),
        None => engine_error(),
    }
}

/// An edit the engine did not make: 404 for what it does not know, 409 for a conflict.
fn refused(refusal: crate::engine::Refusal) -> Response {
    let (status, why) = match refusal {
        crate::engine::Refusal::NotFound(why) => (StatusCode::NOT_FOUND, why),
        crate::engine::Refusal::Conflict(why) => (StatusCode::CONFLICT, why),
    };
    (status, Json(json!({ "error": why }))).into_response()
}

/// Hands an edit to the engine's owner and waits for its answer.
async fn send_edit(s: &AppState, edit: Edit) -> Option<crate::engine::Edited> {
    let (reply, answer) = oneshot::channel();
    s.edits.send((edit, reply)).await.ok()?;
    answer.await.ok()
}

async fn racks(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    match s.snapshot().site(&site) {
        Some(v) => Json(json!({ "site": site, "racks": v.racks })).into_response(),
        None => not_found(&site),
    }
}

async fn fleet(State(s): State<AppState>) -> Response {
    match &s.snapshot().fleet {
        Some(view) => Json(view).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not a fleet collector (set fleet.enabled = true)"})),
        )
            .into_response(),
    }
}

async fn alerts(State(s): State<AppState>) -> Response {
    match s.alerts.alerts() {
        Some(v) => Json(v).into_response(),
        None => engine_error(),
    }
}

async fn alert_history(State(s): State<AppState>) -> Response {
    match s.alerts.history() {
        Some(v) => Json(v).into_response(),
        None => engine_error(),
    }
}
