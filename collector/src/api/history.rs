//! `GET /api/v1/sites/{site}/history` and `GET /api/v1/sites/{site}/energy`: trends and
//! energy reports from the embedded history (docs/api.md).

use super::AppState;
use crate::engine::{period_kpi_view, period_view, PeriodTotals, WINDOWS};
use crate::sinks::history::store::{Store, StoreError, SERIES};
use crate::zone::SiteZone;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dcwatt_common::protocol::Point;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Most points one history request returns.
const MAX_POINTS: i64 = 20_000;
const MINUTE_MS: i64 = 60_000;

/// An error answer, small enough to pass around in a `Result`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

fn unavailable(msg: impl Into<String>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": msg.into()})),
    )
        .into_response()
}

/// Parses a duration like `90s`, `15m`, `1h`, `7d` (or plain seconds) into ms.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// The latest time a query may name (the end of year 9999), ms: arithmetic on times
/// within `0..=MAX_TIME_MS` cannot overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Parses a time: ms since the epoch, RFC 3339 (`2026-11-01T00:00:00+08:00`), `now`, or
/// `now-24h` / `-24h` relative to `now_ms`. Times before the epoch or after
/// [`MAX_TIME_MS`] are not times.
pub fn parse_time_ms(s: &str, now_ms: i64) -> Option<i64> {
    parse_any_time_ms(s, now_ms).filter(|t| (0..=MAX_TIME_MS).contains(t))
}

fn parse_any_time_ms(s: &str, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    if s == "now" {
        return Some(now_ms);
    }
    if let Some(rel) = s.strip_prefix("now-").or_else(|| s.strip_prefix('-')) {
        return parse_duration_ms(rel).and_then(|d| now_ms.checked_sub(d));
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Query of the history endpoint.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    series: Option<String>,
    window: Option<String>,
    rack: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

/// A time in a query: anything [`parse_time_ms`] takes, or a local date or date and time
/// in the site's zone (`2026-03-29`, `2026-03-29T06:00`).
fn parse_site_time(s: &str, now: i64, zone: &SiteZone) -> Option<i64> {
    parse_time_ms(s, now)
        .or_else(|| crate::zone::parse_local(s, zone).filter(|t| (0..=MAX_TIME_MS).contains(t)))
}

fn period(
    from: Option<&str>,
    to: Option<&str>,
    default_span_ms: i64,
    now: i64,
    zone: &SiteZone,
) -> Result<(i64, i64), ApiError> {
    let not_a_time = |name: &str, t: &str| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{name}={t:?} is not a time (ms since the epoch, RFC 3339, a local date or \
                 date and time in the site's zone such as 2026-11-01 or 2026-11-01T08:00, now \
                 or -24h)"
            ),
        )
    };
    let to = match to {
        Some(t) => parse_site_time(t, now, zone).ok_or_else(|| not_a_time("to", t))?,
        None => now,
    };
    let from = match from {
        Some(f) => parse_site_time(f, now, zone).ok_or_else(|| not_a_time("from", f))?,
        None => to - default_span_ms,
    };
    if from >= to {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "from must be before to".to_owned(),
        ));
    }
    Ok((from, to))
}

/// The site's time zone (UTC when the configuration names none).
pub(super) fn zone_of(s: &AppState, site: &str) -> SiteZone {
    s.history
        .site_zones
        .get()
        .get(site)
        .copied()
        .unwrap_or_default()
}

fn db(s: &AppState) -> Result<std::path::PathBuf, ApiError> {
    s.history.path.clone().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the embedded history is disabled (history.enabled = false)".to_owned(),
        )
    })
}

fn known_site(s: &AppState, store: &Store, site: &str) -> bool {
    let live = s.snapshot().site(site).is_some();
    live || store.sites().is_ok_and(|v| v.iter().any(|x| x == site))
}

/// Runs `query` for `site` on a read-only connection to the history at `path`, off the
/// async threads: `404` when neither the engine nor the history knows the site, `503`
/// when the history cannot answer.
async fn query_history<T: Send + 'static>(
    s: &AppState,
    path: std::path::PathBuf,
    site: &str,
    what: &'static str,
    query: impl FnOnce(&Store, &str) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let s2 = s.clone();
    let site2 = site.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let store = Store::open_read(&path)?;
        if !known_site(&s2, &store, &site2) {
            return Ok(None);
        }
        query(&store, &site2).map(Some)
    })
    .await;
    match result {
        Ok(Ok(Some(v))) => Ok(v),
        Ok(Ok(None)) => Err(super::not_found(site)),
        Ok(Err(e)) => Err(unavailable(e.to_string())),
        Err(e) => Err(unavailable(format!("{what} query failed: {e}"))),
    }
}

/// The steps of a history query: of `step` from `from`, or, for whole days, the site's
/// local days (23 or 25 hours where the clocks change) from local midnight.
struct Steps {
    from: i64,
    to: i64,
    step: i64,
    /// Local-day boundaries, for steps of whole days.
    days: Option<Vec<i64>>,
}

impl Steps {
    fn new(zone: &SiteZone, from: i64, to: i64, step: i64) -> Self {
        let days = (step % 86_400_000 == 0)
            .then(|| crate::zone::local_day_starts(zone, from, to, (step / 86_400_000) as u64))
            .filter(|d| !d.is_empty());
        let from = days
            .as_ref()
            .and_then(|d| d.first().copied())
            .unwrap_or(from);
        Steps {
            from,
            to,
            step,
            days,
        }
    }

    /// The start of the step holding `ts`.
    fn start(&self, ts: i64) -> i64 {
        match self
            .days
            .as_deref()
            .and_then(|d| crate::zone::step_of(d, ts))
        {
            Some((start, _)) => start,
            None => crate::sinks::history::store::every(self.from, self.step)(ts),
        }
    }

    /// The end of the step starting at `start`, at most the query's end.
    fn end(&self, start: i64) -> i64 {
        let next = match self
            .days
            .as_deref()
            .and_then(|d| crate::zone::step_of(d, start))
        {
            Some((_, next)) => next,
            None => Some(start + self.step),
        };
        next.unwrap_or(self.to).min(self.to)
    }
}

/// `GET /api/v1/sites/{site}/history`.
pub async fn history(
    State(s): State<AppState>,
    Path(site): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let now = dcwatt_common::now_ms();
    let path = match db(&s) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let series = q.series.clone().unwrap_or_else(|| "pue".to_owned());
    let figures = crate::engine::kpi::FIGURES;
    let figure = figures.contains(&series.as_str());
    let key_kind = SERIES
        .iter()
        .find(|(n, _)| *n == series)
        .map(|(_, k)| *k)
        .or(figure.then_some("figure"));
    let Some(key_kind) = key_kind else {
        let names: Vec<&str> = SERIES.iter().map(|(n, _)| *n).chain(figures).collect();
        return bad(format!(
            "series={series:?} is not one of {}",
            names.join(", ")
        ));
    };
    let key = match key_kind {
        "window" => {
            let w = q.window.clone().unwrap_or_else(|| "1h".to_owned());
            if w != "step" && !WINDOWS.iter().any(|(n, _)| *n == w) {
                return bad(format!(
                    "window={w:?} is not one of 1m, 15m, 1h, 24h, 7d, 30d, step"
                ));
            }
            w
        }
        "rack" => match &q.rack {
            Some(r) => r.clone(),
            None => return bad(format!("series={series} needs rack=")),
        },
        _ => String::new(),
    };
    let zone = zone_of(&s, &site);
    let (from, to) = match period(q.from.as_deref(), q.to.as_deref(), 86_400_000, now, &zone) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let step = match &q.step {
        Some(st) => match parse_duration_ms(st) {
            Some(ms) if ms >= MINUTE_MS => ms,
            _ => {
                return bad(format!(
                    "step={st:?} must be a duration of at least 60s (e.g. 5m, 1h, 1d)"
                ))
            }
        },
        // About 500 points, in whole minutes.
        None => (((to - from) / 500).div_euclid(MINUTE_MS) * MINUTE_MS).max(MINUTE_MS),
    };
    if (to - from) / step > MAX_POINTS {
        return bad(format!(
            "from..to / step is over {MAX_POINTS} points: use a larger step"
        ));
    }
    // Steps start on whole minutes; steps of whole days are the site's local days (23 or
    // 25 hours where the clocks change), from local midnight.
    let from = from.div_euclid(MINUTE_MS) * MINUTE_MS;
    let steps = Steps::new(&zone, from, to, step);
    let from = steps.from;
    let rule = s.history.level_rule(&site);
    let cfg = s.kpi_config(&site);
    let result = query_history(&s, path, &site, "history", move |store, site| {
        if figure {
            return figure_steps(store, site, &series, (from, to), &steps, rule, &cfg);
        }
        if series == "pue" && key == "step" {
            let sums = store.energy_steps(site, from, to, &|ts| steps.start(ts))?;
            let mut out = crate::sinks::history::store::Resampled::default();
            for (start, totals) in sums {
                let v = period_view(&totals, rule, start, steps.end(start));
                out.time.push(start);
                out.value.push(v.value);
                out.category.push(v.category);
                out.coverage.push(Some(v.coverage_it));
                out.quality.push(Some(v.quality.to_owned()));
            }
            return Ok(out);
        }
        store.series(site, &series, &key, from, to, &|ts| steps.start(ts))
    })
    .await;
    let out = match result {
        Ok(out) => out,
        Err(r) => return r,
    };
    let mut body = json!({
        "site": site,
        "series": q.series.as_deref().unwrap_or("pue"),
        "from_ms": from,
        "to_ms": to,
        "step_s": step / 1000,
        "time_zone": zone.name(),
    });
    if let Some(m) = body.as_object_mut() {
        match key_kind {
            "window" => {
                m.insert("window".into(), json!(q.window.as_deref().unwrap_or("1h")));
            }
            "rack" => {
                m.insert("rack".into(), json!(q.rack));
            }
            _ => {}
        }
        if let Ok(serde_json::Value::Object(arrays)) = serde_json::to_value(&out) {
            m.extend(arrays);
        }
    }
    Json(body).into_response()
}

/// A figure beyond PUE (`series=wue`, `cue`, …) of each step, from that step's own
/// minutes, split where an emission factor's period starts or ends inside it.
fn figure_steps(
    store: &Store,
    site: &str,
    figure: &str,
    (from, to): (i64, i64),
    steps: &Steps,
    rule: crate::engine::LevelRule,
    cfg: &crate::engine::kpi::SiteKpiConfig,
) -> Result<crate::sinks::history::store::Resampled, StoreError> {
    let factor_starts = cfg.boundaries(from, to);
    // Each minute's part: the later of its step's start and its factor period's start.
    let part = |ts: i64| {
        let factor = crate::zone::step_of(&factor_starts, ts).map_or(from, |(s, _)| s);
        steps.start(ts).max(factor)
    };
    let parts = store.energy_steps(site, from, to, &part)?;
    let mut by_step: BTreeMap<i64, BTreeMap<i64, BTreeMap<Point, PeriodTotals>>> = BTreeMap::new();
    for (start, totals) in parts {
        by_step
            .entry(steps.start(start))
            .or_default()
            .insert(start, totals);
    }
    let mut out = crate::sinks::history::store::Resampled::default();
    for (start, parts) in by_step {
        let v = period_kpi_view(&parts, rule, cfg, start, steps.end(start));
        let Some(f) = v.kpis.get(figure) else {
            continue;
        };
        out.time.push(start);
        out.value.push(f.value);
        out.category.push(v.category);
        out.coverage.push(Some(f.coverage));
        out.quality.push(Some(f.quality.to_owned()));
    }
    Ok(out)
}

/// True for `format=csv`, false for `json` or none.
fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(f) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("format={f:?} is not json or csv"),
        )),
    }
}

/// Query of the energy endpoint.
#[derive(Debug, Deserialize)]
pub struct EnergyQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/sites/{site}/energy`.
pub async fn energy(
    State(s): State<AppState>,
    Path(site): Path<String>,
    Query(q): Query<EnergyQuery>,
) -> Response {
    let now = dcwatt_common::now_ms();
    let path = match db(&s) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let zone = zone_of(&s, &site);
    let (from, to) = match period(q.from.as_deref(), q.to.as_deref(), 86_400_000, now, &zone) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let csv = match wants_csv(q.format.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let rule = s.history.level_rule(&site);
    let cfg = s.kpi_config(&site);
    let (v, minutes) = match query_history(&s, path, &site, "energy", move |store, site| {
        store.energy_kpis(site, from, to, rule, &cfg)
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    if csv {
        return energy_csv(&site, from, to, &v, minutes);
    }
    Json(json!({
        "site": site,
        "from_ms": from,
        "to_ms": to,
        "time_zone": zone.name(),
        "label": v.label,
        "facility_kwh": v.facility_kwh,
        "it_kwh": v.it_kwh,
        "facility_fill_kwh": v.facility_fill_kwh,
        "it_fill_kwh": v.it_fill_kwh,
        "pue": v.value,
        "dcie": v.dcie,
        "category": v.category,
        "coverage_it": v.coverage_it,
        "coverage_facility": v.coverage_facility,
        "quality": v.quality,
        "reason": v.reason,
        "minutes": minutes,
        "kpis": v.kpis,
    }))
    .into_response()
}

/// Query of the intervals endpoint.
#[derive(Debug, Deserialize)]
pub struct IntervalsQuery {
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/sites/{site}/intervals`: every point's energy (or water) in 15-minute
/// intervals with their completeness, and the day and month totals summed from them
/// (docs/reports.md).
pub async fn intervals(
    State(s): State<AppState>,
    Path(site): Path<String>,
    Query(q): Query<IntervalsQuery>,
) -> Response {
    use crate::sinks::history::intervals::{check, COMPLETE};
    let now = dcwatt_common::now_ms();
    let path = match db(&s) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let zone = zone_of(&s, &site);
    let (from, to) = match period(q.from.as_deref(), q.to.as_deref(), 86_400_000, now, &zone) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let step = match q.step.as_deref().map(parse_duration_ms) {
        None => 900_000,
        Some(Some(st)) => st,
        Some(None) => return bad("step must be 15m, 30m or 1h"),
    };
    if let Err(e) = check(from, to, step) {
        return bad(e);
    }
    let csv = match wants_csv(q.format.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let z = zone;
    let report = match query_history(&s, path, &site, "intervals", move |store, site| {
        store.intervals(site, from, to, step, &z)
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    if csv {
        return intervals_csv(&site, &report, &zone);
    }
    Json(json!({
        "site": site,
        "time_zone": zone.name(),
        "from_ms": report.from_ms,
        "to_ms": report.to_ms,
        "step_s": report.step_s,
        "completeness_threshold": COMPLETE,
        "series": report.series,
    }))
    .into_response()
}

/// The interval report as CSV: a row per interval, then per day, per month and the total
/// of each point (`period`), times in the site's local offset.
fn intervals_csv(
    site: &str,
    r: &crate::sinks::history::intervals::Report,
    zone: &SiteZone,
) -> Response {
    use std::fmt::Write as _;
    let time = |ms: i64| {
        let offset = chrono::FixedOffset::east_opt(zone.offset_s_at(ms));
        chrono::DateTime::from_timestamp_millis(ms)
            .zip(offset)
            .map(|(t, o)| {
                t.with_timezone(&o)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_default()
    };
    let mut body = String::from(
        "site,point,energy_type,unit,period,from,to,value,fill,estimated,completeness,intervals,incomplete\n",
    );
    for sr in &r.series {
        let rows = sr
            .intervals
            .iter()
            .map(|a| ("interval", a))
            .chain(sr.days.iter().map(|a| ("day", a)))
            .chain(sr.months.iter().map(|a| ("month", a)))
            .chain(std::iter::once(("total", &sr.total)));
        for (period, a) in rows {
            let _ = writeln!(
                body,
                "{site},{},{},{},{period},{},{},{},{},{},{:.6},{},{}",
                sr.point,
                sr.energy_type,
                sr.unit,
                time(a.from_ms),
                time(a.to_ms),
                a.value,
                a.fill,
                a.estimated,
                a.completeness,
                a.intervals,
                a.incomplete
            );
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Query of the EU annual report.
#[derive(Debug, Deserialize)]
pub struct EuQuery {
    year: Option<i32>,
    format: Option<String>,
}

/// `GET /api/v1/sites/{site}/reports/eu-annual`: the fields of the EU's annual
/// data-centre report that dcwatt measures or holds, for a local calendar year (the
/// previous one by default), and those it leaves to the operator (docs/reports.md).
pub async fn eu_annual(
    State(s): State<AppState>,
    Path(site): Path<String>,
    Query(q): Query<EuQuery>,
) -> Response {
    use chrono::Datelike;
    let now = dcwatt_common::now_ms();
    let path = match db(&s) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let zone = zone_of(&s, &site);
    let this_year = zone.local(now).map_or(1970, |l| l.year());
    let year = q.year.unwrap_or(this_year - 1);
    if !(2000..=this_year).contains(&year) {
        return bad(format!("year must be 2000..={this_year}"));
    }
    let csv = match wants_csv(q.format.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let start = |y: i32| chrono::NaiveDate::from_ymd_opt(y, 1, 1).and_then(|d| zone.midnight(d));
    let (Some(from), Some(to)) = (start(year), start(year + 1)) else {
        return bad(format!("year {year} has no start in the site's zone"));
    };
    let rule = s.history.level_rule(&site);
    let cfg = s.kpi_config(&site);
    let rated_it_w = cfg.rated_it_w;
    let (v, minutes) = match query_history(&s, path, &site, "eu-annual", move |store, site| {
        store.energy_kpis(site, from, to, rule, &cfg)
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let fields = super::reports::eu_annual(&v, rated_it_w);
    let share = minutes as f64 / ((to - from) / 60_000).max(1) as f64;
    if csv {
        return eu_csv(&site, year, share, &fields);
    }
    Json(json!({
        "site": site,
        "year": year,
        "report": "EU data centre annual report: Delegated Regulation (EU) 2024/1364 under Directive (EU) 2023/1791, Art. 12",
        "time_zone": zone.name(),
        "from_ms": from,
        "to_ms": to,
        "minutes": minutes,
        "history_share": (share * 1e6).round() / 1e6,
        "category": v.category,
        "fields": fields,
        "to_be_completed_by_the_operator": super::reports::FOR_THE_OPERATOR,
    }))
    .into_response()
}

fn eu_csv(site: &str, year: i32, share: f64, fields: &[super::reports::Field]) -> Response {
    use std::fmt::Write as _;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut body = String::from("site,year,field,name,value,unit,source,coverage,quality,note\n");
    for f in fields {
        let _ = writeln!(
            body,
            "{site},{year},{},{},{},{},{},{},{},{}",
            f.field,
            quote(f.name),
            f.value.map(|v| v.to_string()).unwrap_or_default(),
            f.unit,
            quote(f.source),
            f.coverage.map(|c| c.to_string()).unwrap_or_default(),
            f.quality,
            quote(f.note.as_deref().unwrap_or(""))
        );
    }
    for what in super::reports::FOR_THE_OPERATOR {
        let _ = writeln!(
            body,
            "{site},{year},,{},,,,,to_be_completed_by_the_operator,",
            quote(what)
        );
    }
    let _ = writeln!(
        body,
        "{site},{year},history_share,{},{share:.6},1,history,,,",
        quote("share of the year's minutes in the history")
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /api/v1/sites/{site}/calendar`: today, this month, year to date and the trailing
/// 12 months in the site's time zone, from the history's closed minutes.
pub async fn calendar(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    let now = dcwatt_common::now_ms();
    let path = match db(&s) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let zone = zone_of(&s, &site);
    let Some(starts) = crate::zone::calendar_starts(now, &zone) else {
        return unavailable("the site's calendar cannot be computed at this time");
    };
    let rule = s.history.level_rule(&site);
    let cfg = s.kpi_config(&site);
    let result = query_history(&s, path, &site, "calendar", move |store, site| {
        let mut out = serde_json::Map::new();
        for (name, from) in starts {
            let (v, minutes) = store.energy_kpis(site, from, now, rule, &cfg)?;
            let expected_minutes = (now - from) / MINUTE_MS;
            out.insert(
                name.to_owned(),
                json!({
                    "from_ms": from, "to_ms": now,
                    "label": v.label.replace("period", name),
                    "pue": v.value, "dcie": v.dcie, "category": v.category,
                    "facility_kwh": v.facility_kwh, "it_kwh": v.it_kwh,
                    "facility_fill_kwh": v.facility_fill_kwh, "it_fill_kwh": v.it_fill_kwh,
                    "coverage_it": v.coverage_it, "coverage_facility": v.coverage_facility,
                    "quality": v.quality, "reason": v.reason,
                    "minutes": minutes,
                    // Minutes of the period the history holds data for: a year-long
                    // figure over a month of history is not an annual PUE.
                    "history_share": if expected_minutes > 0 { minutes as f64 / expected_minutes as f64 } else { 0.0 },
                    "kpis": v.kpis,
                }),
            );
        }
        Ok(out)
    })
    .await;
    let periods = match result {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut body = json!({
        "site": site,
        "time_zone": zone.name(),
        "utc_offset": crate::zone::offset_text(zone.offset_s_at(now)),
    });
    if let Some(m) = body.as_object_mut() {
        m.extend(periods);
    }
    Json(body).into_response()
}

/// `GET /api/v1/sites/{site}/targets`: each of the site's targets against the year to
/// date, the trailing 12 months and the last 30 days from the history, with the annual
/// value the year's trend implies; occupancy against the live snapshot.
pub async fn targets(State(s): State<AppState>, Path(site): Path<String>) -> Response {
    if s.history.targets(&site).is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("site {site:?} has no targets ([[sites]] targets)")})),
        )
            .into_response();
    }
    match target_report(&s, &site, dcwatt_common::now_ms()).await {
        Ok(body) => Json(body).into_response(),
        Err(r) => r,
    }
}

/// The site's projections as the site view carries them: the report of
/// [`targets`], computed at most once a minute per site (it reads the year's minutes).
pub(super) async fn cached_projections(s: &AppState, site: &str) -> Option<serde_json::Value> {
    const FRESH_MS: i64 = 60_000;
    let now = dcwatt_common::now_ms();
    if s.history.path.is_none() || s.history.targets(site).is_empty() {
        return None;
    }
    if let Ok(cache) = s.history.projections.lock() {
        if let Some((at, v)) = cache.get(site) {
            if now - at < FRESH_MS {
                return Some(v.clone());
            }
        }
    }
    let report = target_report(s, site, now).await.ok()?;
    if let Ok(mut cache) = s.history.projections.lock() {
        // Bounded by the configured sites with targets.
        cache.insert(site.to_owned(), (now, report.clone()));
    }
    Some(report)
}

/// Each target of `site` against the history, with the year's projection.
async fn target_report(s: &AppState, site: &str, now: i64) -> Result<serde_json::Value, Response> {
    use crate::engine::targets::{project, window_figure, METHOD};
    let site = site.to_owned();
    let targets = s.history.targets(&site);
    let path = db(s).map_err(IntoResponse::into_response)?;
    let zone = zone_of(s, &site);
    let (Some(starts), Some(year_end)) = (
        crate::zone::calendar_starts(now, &zone),
        crate::zone::year_end(now, &zone),
    ) else {
        return Err(unavailable(
            "the site's calendar cannot be computed at this time",
        ));
    };
    let start = |name: &str| {
        starts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(now, |(_, t)| *t)
    };
    let (ytd_from, t12_from) = (start("year_to_date"), start("trailing_12_months"));
    let rule = s.history.level_rule(&site);
    let cfg = s.kpi_config(&site);
    let periods = query_history(s, path, &site, "targets", move |store, site| {
        let ytd = store.energy_kpis(site, ytd_from, now, rule, &cfg)?;
        let t12 = store.energy_kpis(site, t12_from, now, rule, &cfg)?;
        let m30 = store.energy_kpis(site, now - 30 * 86_400_000, now, rule, &cfg)?;
        Ok((ytd, t12, m30))
    })
    .await;
    let ((ytd, ytd_minutes), (t12, t12_minutes), (m30, _)) = periods?;
    let share = |minutes: u64, from: i64| {
        let expected = (now - from) / MINUTE_MS;
        if expected > 0 {
            minutes as f64 / expected as f64
        } else {
            0.0
        }
    };
    let snapshot = s.snapshots.borrow().clone();
    let occupancy = snapshot.site(&site).and_then(|v| v.view.capacity.occupancy);
    let period = |v: &crate::engine::WindowView, kpi: &str| json!({"value": window_figure(v, kpi), "label": v.label, "category": v.category, "quality": v.quality});
    let lines: Vec<serde_json::Value> = targets
        .iter()
        .map(|t| {
            let mut line = serde_json::to_value(t).unwrap_or_default();
            if let Some(m) = line.as_object_mut() {
                if t.kpi == "occupancy" {
                    let v = t.view("now", occupancy);
                    m.insert("now".into(), json!(v.value));
                    m.insert("status".into(), json!(v.status));
                } else {
                    let p = project(t, &ytd, &m30, year_end - now);
                    let mut y = period(&ytd, t.kpi);
                    y["history_share"] = json!(share(ytd_minutes, ytd_from));
                    let mut tw = period(&t12, t.kpi);
                    tw["history_share"] = json!(share(t12_minutes, t12_from));
                    m.insert("year_to_date".into(), y);
                    m.insert("trailing_12_months".into(), tw);
                    m.insert("last_30_days".into(), period(&m30, t.kpi));
                    m.insert("projected_annual".into(), json!(p.projected_annual));
                    m.insert("status".into(), json!(p.status));
                    m.insert("reason".into(), json!(p.reason));
                }
            }
            line
        })
        .collect();
    Ok(json!({
        "site": site,
        "time_zone": zone.name(),
        "ts_ms": now,
        "year_end_ms": year_end,
        "method": METHOD,
        "targets": lines,
    }))
}

/// The energy report as CSV: a header line and one row, times in RFC 3339 UTC.
fn energy_csv(
    site: &str,
    from: i64,
    to: i64,
    v: &crate::engine::WindowView,
    minutes: u64,
) -> Response {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let opt = |x: Option<f64>| x.map(|x| format!("{x:.6}")).unwrap_or_default();
    // Only the reason is free text: quote it.
    let reason = v.reason.as_deref().unwrap_or("").replace('"', "\"\"");
    let body = format!(
        "site,from,to,facility_kwh,it_kwh,pue,dcie,category,coverage_it,coverage_facility,quality,minutes,reason,\
         wue,cue,cue_market,ref,erf,ere,water_l,renewable_onsite_kwh,renewable_contract_kwh,reused_kwh,co2_kg,co2_market_kg\n\
         {site},{},{},{:.6},{:.6},{},{},{},{},{},{},{minutes},\"{reason}\",{}\n",
        time(from),
        time(to),
        v.facility_kwh,
        v.it_kwh,
        opt(v.value),
        opt(v.dcie),
        v.category.map(|c| c.to_string()).unwrap_or_default(),
        v.coverage_it,
        v.coverage_facility,
        v.quality,
        v.kpis
            .figures()
            .map(|(_, f)| f.value)
            .into_iter()
            .chain([
            v.kpis.water_l,
            v.kpis.renewable_onsite_kwh,
            Some(v.kpis.renewable_contract_kwh),
            v.kpis.reused_kwh,
            v.kpis.co2_kg,
            v.kpis.co2_market_kg,
        ])
        .map(opt)
        .collect::<Vec<_>>()
        .join(","),
    );
    let disposition = format!("attachment; filename=\"dcwatt-{site}-energy.csv\"");
    let mut r = body.into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(d) = axum::http::HeaderValue::from_str(&disposition) {
        r.headers_mut()
            .insert(axum::http::header::CONTENT_DISPOSITION, d);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_periods_start_at_local_midnights() {
        // 2026-03-15T01:30:00+08:00 = 2026-03-14T17:30:00Z.
        let now = 1_773_509_400_000;
        let zone = |o: i32| SiteZone::fixed(o).expect("offset");
        let s = crate::zone::calendar_starts(now, &zone(8 * 3600)).expect("starts");
        assert_eq!(s[0], ("today", 1_773_504_000_000), "2026-03-15T00:00+08:00");
        assert_eq!(s[1], ("month", 1_772_294_400_000), "2026-03-01T00:00+08:00");
        assert_eq!(
            s[2],
            ("year_to_date", 1_767_196_800_000),
            "2026-01-01T00:00+08:00"
        );
        // In UTC it is still the 14th.
        assert_eq!(
            crate::zone::calendar_starts(now, &zone(0)).expect("utc")[0].1,
            1_773_446_400_000
        );
    }

    #[test]
    fn times_and_durations_parse_in_every_documented_form() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time_ms("now", now), Some(now));
        assert_eq!(parse_time_ms("-24h", now), Some(now - 86_400_000));
        assert_eq!(parse_time_ms("now-15m", now), Some(now - 900_000));
        assert_eq!(parse_time_ms("1700000000000", now), Some(1_700_000_000_000));
        assert_eq!(
            parse_time_ms("2026-11-01T00:00:00+08:00", now),
            Some(1_793_462_400_000)
        );
        assert_eq!(parse_time_ms("yesterday", now), None);
        // Out of range, not wrapped round into a small window.
        assert_eq!(parse_time_ms("now-9223372036854775807ms", now), None);
        assert_eq!(parse_time_ms("-9223372036854775807", now), None);
        assert_eq!(parse_time_ms("9223372036854775807", now), None);
        assert_eq!(parse_duration_ms("90"), Some(90_000));
        assert_eq!(parse_duration_ms("7d"), Some(7 * 86_400_000));
        assert_eq!(parse_duration_ms("5x"), None);
    }
}
