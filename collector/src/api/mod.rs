//! api: HTTP JSON and Prometheus `/metrics`. Reads the engine's views; the one change it
//! makes is retiring a decommissioned node, and only with the bearer token.

mod history;
mod metrics;
mod web;

use crate::alerts::notify::{rack_views_with_load, AlertStats, RackBudget};
use crate::alerts::store::Book;
use crate::alerts::Phase;
use crate::engine::Engine;
use crate::intake::{IntakeStats, RawMessage};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Mutex<Engine>>,
    /// Intake counters.
    pub stats: Arc<IntakeStats>,
    /// The intake queue, for its depth.
    pub queue: mpsc::Sender<RawMessage>,
    /// Alert states and history.
    pub book: Arc<Mutex<Book>>,
    /// Alert notification counters.
    pub alert_stats: Arc<AlertStats>,
    /// Alert rules by name.
    pub rules: Arc<crate::live::Live<Vec<crate::alerts::Rule>>>,
    /// Rack budgets.
    pub racks: Arc<crate::live::Live<Vec<RackBudget>>>,
    /// Sinks and the history database.
    pub sinks: Arc<crate::sink::Sinks>,
    /// Bearer token the API and `/metrics` require, when set.
    pub token: Option<Arc<dcwatt_common::secret::Secret>>,
    /// The fleet view, on a fleet collector.
    pub fleet: Option<(Arc<Mutex<crate::fleet::Fleet>>, crate::fleet::FleetConfig)>,
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
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/history", get(alert_history))
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
    let connected = s.stats.broker_connected.load(Ordering::Relaxed);
    let body = json!({"status": "ok", "broker_connected": connected, "fleet": s.fleet.is_some()});
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn sites(State(s): State<AppState>) -> Response {
    let now = dcwatt_common::now_ms();
    let Ok(engine) = s.engine.lock() else {
        return engine_error();
    };
    let views: Vec<_> = engine
        .site_ids()
        .iter()
        .filter_map(|id| engine.site_view(id, now))
        .collect();
    Json(json!({ "sites": views })).into_response()
}

async fn site(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    let now = dcwatt_common::now_ms();
    let Ok(engine) = s.engine.lock() else {
        return engine_error();
    };
    match engine.site_view(&site, now) {
        Some(v) => Json(v).into_response(),
        None => not_found(&site),
    }
}

async fn nodes(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    let now = dcwatt_common::now_ms();
    let Ok(engine) = s.engine.lock() else {
        return engine_error();
    };
    match engine.nodes(&site, now) {
        Some(n) => Json(json!({ "site": site, "nodes": n })).into_response(),
        None => not_found(&site),
    }
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
    let Ok(mut engine) = s.engine.lock() else {
        return engine_error();
    };
    if engine.retire_node(&site, &node, now) {
        tracing::info!(site = %site, node = %node, "node retired");
        Json(json!({"site": site, "node": node, "state": "retired", "retired_ms": now}))
            .into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no node {node:?} at site {site:?}")})),
        )
            .into_response()
    }
}

async fn racks(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    let now = dcwatt_common::now_ms();
    let Ok(engine) = s.engine.lock() else {
        return engine_error();
    };
    if engine.site_view(&site, now).is_none() {
        return not_found(&site);
    }
    let power = engine.rack_power(&site, now);
    let loads = engine.rack_loads(&site, now);
    let views = rack_views_with_load(&site, &power, &loads, &s.racks.get());
    Json(json!({ "site": site, "racks": views })).into_response()
}

async fn fleet(State(s): State<AppState>) -> Response {
    let Some((fleet, cfg)) = &s.fleet else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not a fleet collector (set fleet.enabled = true)"})),
        )
            .into_response();
    };
    let Ok(f) = fleet.lock() else {
        return engine_error();
    };
    Json(f.view(cfg, dcwatt_common::now_ms())).into_response()
}

async fn alerts(State(s): State<AppState>) -> Response {
    let Ok(book) = s.book.lock() else {
        return engine_error();
    };
    let mut active = Vec::new();
    let mut suppressed = Vec::new();
    let rules = s.rules.get();
    for (key, st) in &book.states {
        let rule = rules.iter().find(|r| r.name == key.rule);
        let severity = rule.map(|r| r.severity.clone()).unwrap_or_default();
        if st.phase != Phase::Inactive {
            active.push(json!({
                "alert": key.id(), "rule": key.rule, "site": key.site, "target": key.target,
                "state": st.phase, "severity": severity, "since_ms": st.since_ms,
                "value": st.value, "threshold": rule.map(|r| r.limits(&key.site).0),
                "summary": rule.map(|r| crate::alerts::render(r, key, st.value)),
                "suppressed": st.suppressed,
            }));
        } else if let Some(reason) = &st.suppressed {
            suppressed.push(json!({
                "alert": key.id(), "rule": key.rule, "site": key.site, "target": key.target,
                "reason": reason, "value": st.value,
            }));
        }
    }
    Json(json!({ "alerts": active, "suppressed": suppressed })).into_response()
}

async fn alert_history(State(s): State<AppState>) -> Response {
    let Ok(book) = s.book.lock() else {
        return engine_error();
    };
    let history: Vec<_> = book.history.iter().rev().collect();
    Json(json!({ "history": history })).into_response()
}
