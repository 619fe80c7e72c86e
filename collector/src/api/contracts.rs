//! Renewable energy contracts over the API (docs/api.md): the configured ones and those
//! entered here, listed; entering and withdrawing need the bearer token.

use super::{refused, send_edit, AppState};
use crate::engine::kpi::RenewableContract;
use crate::engine::Edit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

/// The largest body a contract may come in.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// A contract as entered: the fields of `[[sites]] renewable_contracts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContract {
    from: String,
    to: String,
    kwh: f64,
    evidence: String,
    #[serde(default = "contract")]
    kind: String,
}

fn contract() -> String {
    "contract".to_owned()
}

fn bad(msg: impl Into<String>) -> Response {
    let msg = msg.into();
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response()
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(
            json!({"error": "a contract changes the figures dcwatt reports: set http.token first"}),
        ),
    )
        .into_response()
}

/// `GET /api/v1/sites/{site}/contracts`: the configured contracts, then those entered.
pub async fn list(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    let configured = s.history.kpi_config(&site).contracts;
    let snap = s.snapshot();
    let entered = snap.contracts.get(&site).cloned().unwrap_or_default();
    if configured.is_empty() && entered.is_empty() && snap.site(&site).is_none() {
        return super::not_found(&site);
    }
    let view = |c: &RenewableContract| {
        json!({"from_ms": c.from_ms, "to_ms": c.to_ms, "kwh": c.kwh,
               "evidence": c.evidence, "kind": c.kind})
    };
    let mut out: Vec<serde_json::Value> = configured
        .iter()
        .map(|c| {
            let mut v = view(c);
            v["origin"] = json!("config");
            v
        })
        .collect();
    out.extend(entered.iter().map(|e| {
        let mut v = view(&e.contract);
        v["origin"] = json!("api");
        v["id"] = json!(e.id);
        v["entered_ms"] = json!(e.contract.entered_ms);
        v
    }));
    Json(json!({ "site": site, "contracts": out })).into_response()
}

/// `POST /api/v1/sites/{site}/contracts`: enters a contract (local dates in the site's
/// zone, as in the configuration); 201 with its id.
pub async fn enter(
    State(s): State<AppState>,
    Path(site): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if s.token.is_none() {
        return forbidden();
    }
    if body.len() > MAX_BODY_BYTES {
        return bad(format!(
            "a contract is at most {MAX_BODY_BYTES} bytes of JSON"
        ));
    }
    let new: NewContract = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return bad(format!(
                "{e}: send {{\"from\": \"2026-03-01\", \"to\": \"2026-04-01\", \"kwh\": 120000, \"evidence\": \"GEC-…\", \"kind\": \"green_certificate\"}}"
            ))
        }
    };
    let zone = super::history::zone_of(&s, &site);
    let (from_ms, to_ms) = match crate::zone::parse_local_period(&new.from, &new.to, &zone) {
        Ok(p) => p,
        Err(why) => return bad(format!("{why}, in the site's zone")),
    };
    let contract = RenewableContract {
        from_ms,
        to_ms,
        kwh: new.kwh,
        evidence: new.evidence,
        kind: new.kind,
        entered_ms: None,
    };
    if let Some((field, why)) = contract.problems().into_iter().next() {
        return bad(format!("{field}: {why}"));
    }
    let now_ms = dcwatt_common::now_ms();
    let edit = Edit::Contract {
        site: site.clone(),
        contract: contract.clone(),
        now_ms,
    };
    match send_edit(&s, edit).await {
        Some(Ok(id)) => {
            tracing::info!(site = %site, evidence = %contract.evidence, kwh = contract.kwh, "renewable contract entered");
            let body = json!({"site": site, "id": id, "origin": "api",
                "from_ms": from_ms, "to_ms": to_ms, "kwh": contract.kwh,
                "evidence": contract.evidence, "kind": contract.kind, "entered_ms": now_ms});
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Some(Err(refusal)) => refused(refusal),
        None => super::engine_error(),
    }
}

/// `DELETE /api/v1/sites/{site}/contracts/{id}`: withdraws a contract entered over the API
/// (one in the configuration is changed there).
pub async fn withdraw(
    State(s): State<AppState>,
    Path((site, id)): Path<(String, String)>,
) -> Response {
    if s.token.is_none() {
        return forbidden();
    }
    let Ok(id) = id.parse::<u64>() else {
        return bad(format!(
            "{id:?} is not a contract id: GET the site's contracts for the ids of those entered over the API"
        ));
    };
    match send_edit(
        &s,
        Edit::Withdraw {
            site: site.clone(),
            id,
        },
    )
    .await
    {
        Some(Ok(_)) => {
            tracing::info!(site = %site, id, "renewable contract withdrawn");
            Json(json!({"site": site, "id": id, "state": "withdrawn"})).into_response()
        }
        Some(Err(refusal)) => refused(refusal),
        None => super::engine_error(),
    }
}
