//! The tutorial protocol: `POST /sync` (one change) and `GET
//! /changes?since=S` (every change after `S`), the two endpoints of a widely
//! read offline-first tutorial whose clients log changes in a `change_log`
//! table. Such clients work against `rowsync serve` unchanged and share one
//! set of rows with rowsync replicas.
//!
//! Nothing here is a second sync engine: a `/sync` change becomes a
//! one-change push through the same store path as `/v1/push` (schema
//! checks, clock bound, private rows, the table's merge), and `/changes` is
//! a `/v1/pull` page dressed up.
//!
//! - **Versions.** The client's `timestamp` is the change's wall time: its
//!   milliseconds, with the microseconds within them as the clock's counter,
//!   so one client's changes keep their order. The writing site is derived
//!   from the token's id (each token is a device).
//! - **Applied once.** A change replayed after a lost answer carries the
//!   same timestamp and data, so the same version: the merge finds nothing
//!   new and writes nothing. (Sequence numbers are not used: a client whose
//!   clock stepped back would see a later change skipped as a repeat.)
//! - **Which columns changed.** A change carries the whole row and does not
//!   say what it changed: columns equal to the server's row keep their
//!   versions, the others take the client's (see `CheckedChange::whole_row`).
//! - **Cursors.** `timestamp` values in `/changes` answers are the server's
//!   positions (commit order, unique) written as an instant: position `p` is
//!   `1970-01-01T00:00:00.000+00:00` plus `p` milliseconds, fixed width, so
//!   they are unique, strictly increasing (as strings too) and parse as
//!   ISO-8601. `since` is read back the same way. Answers hold at most a
//!   page; a client that sends back the last timestamp gets the rest.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rowsync_core::change::decode_change;
use rowsync_proto::{Cell, ColumnType, ErrorCode, Hlc, RowChange, SiteId, Table, Value, Version};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::error::ApiError;
use crate::http::{
    behind, check_clock, read_body, report_collisions, AppState, Caller, DEFAULT_PULL_LIMIT, PAGE_BYTES,
};
use crate::store::{CheckedBatch, CheckedChange, Pushed, Store, StoreError};

/// The two routes (authenticated by the caller of this function).
pub(crate) fn routes<S: Store>() -> Router<AppState<S>> {
    Router::new().route("/sync", post(sync::<S>)).route("/changes", get(changes::<S>))
}

/// What a tutorial client sends to `/sync`. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct SyncChange {
    table: String,
    record_id: serde_json::Value,
    operation: Operation,
    timestamp: String,
    #[serde(default)]
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum Operation {
    Insert,
    Update,
    Delete,
}

async fn sync<S: Store>(
    State(state): State<AppState<S>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    match store_change(&state, &caller, &headers, body).await {
        Ok(answer) => Ok(Json(answer)),
        Err(error) if behind(&state, error.code).await? => Err(StoreError::SchemaBehind.into()),
        Err(error) => {
            if error.status.is_client_error() {
                state.metrics.sync_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    user = caller.user.as_deref().unwrap_or("-"),
                    code = ?error.code,
                    "refused a /sync change: {}",
                    error.message
                );
            }
            Err(error)
        }
    }
}

async fn store_change<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, ApiError> {
    let bytes = read_body(headers, body, &state.limits).await?;
    let sent: SyncChange = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedBody, format!("not a /sync change: {e}"))
    })?;
    let table = state.schema.table(&sent.table).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnknownTable,
            format!("unknown table {:?}", sent.table),
        )
    })?;
    let key = record_key(table, &sent.record_id)?;
    let wall = parse_instant(&sent.timestamp)
        .map_err(|e| invalid(format!("timestamp {:?} is not an ISO-8601 instant: {e}", sent.timestamp)))?;
    let site = site_of(caller);
    let version = Version { hlc: hlc_at(wall)?, site: site.clone() };
    let row = match (sent.operation, &sent.data) {
        // The client deleted the row before sending this change; its DELETE follows.
        (Operation::Insert | Operation::Update, None) => {
            state.metrics.sync_ignored.fetch_add(1, Ordering::Relaxed);
            return Ok(
                serde_json::json!({"status": "ignored", "reason": "no data: the row was deleted on the client"}),
            );
        }
        (Operation::Delete, _) => RowChange {
            table: table.name.clone(),
            key: key.clone(),
            alive: None,
            version: None,
            deleted: Some(version),
            cells: Vec::new(),
            conflicts: Vec::new(),
        },
        (operation, Some(data)) => RowChange {
            table: table.name.clone(),
            key: key.clone(),
            alive: (operation == Operation::Insert).then(|| version.clone()),
            cells: row_cells(table, &key, data, caller.user.as_deref())?,
            version: Some(version),
            deleted: None,
            conflicts: Vec::new(),
        },
    };
    let change = decode_change(&state.schema, row).map_err(ApiError::from)?;
    check_clock(&change.state, state.clock.now_ms(), state.max_clock_ahead, None)?;
    let batch = CheckedBatch {
        site,
        user: caller.user.clone(),
        // Sequence 1 over a mark that stays 0: never skipped as a repeat;
        // a replay is a no-op of the merge instead.
        last_seq: 0,
        batch: None,
        known: None,
        changes: vec![CheckedChange { seq: 1, change, whole_row: true }],
        now_ms: state.clock.now_ms(),
    };
    let Pushed { position, collisions, .. } = state.push(batch).await?;
    state.commits.committed(position);
    report_collisions(state, &collisions);
    state.metrics.sync_stored.fetch_add(1, Ordering::Relaxed);
    Ok(serde_json::json!({"status": "ok"}))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidValue, message)
}

/// The key a `record_id` names: one value for a one-column key (an integer
/// key also takes its decimal text, as change logs often store ids as
/// text), an array in key order otherwise.
fn record_key(table: &Table, id: &serde_json::Value) -> Result<Vec<Value>, ApiError> {
    let parts: Vec<&serde_json::Value> = match id {
        serde_json::Value::Array(parts) if table.primary_key.len() > 1 => parts.iter().collect(),
        one => vec![one],
    };
    if parts.len() != table.primary_key.len() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidKey,
            format!("table {}: record_id must give {} key value(s)", table.name, table.primary_key.len()),
        ));
    }
    table.primary_key.iter().zip(parts).map(|(&column, part)| json_value(table, column, part)).collect()
}

/// The row's cells from `data`: every column but the key, which travels as
/// the key (a key column in `data` must agree with it). A private table's
/// owner column may be left out: the server fills it.
fn row_cells(
    table: &Table,
    key: &[Value],
    data: &serde_json::Map<String, serde_json::Value>,
    user: Option<&str>,
) -> Result<Vec<Cell>, ApiError> {
    let mut cells = Vec::new();
    for (name, json) in data {
        let column = table.column_index(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::UnknownColumn,
                format!("table {}: unknown column {name:?}", table.name),
            )
        })?;
        let value = json_value(table, column, json)?;
        if let Some(at) = table.primary_key.iter().position(|&k| k == column) {
            if value != key[at] {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::InvalidKey,
                    format!("table {}: data.{name} differs from record_id", table.name),
                ));
            }
            continue;
        }
        cells.push(Cell { column: name.clone(), value, version: None, base: None, memory: None });
    }
    if let Some(owner) = table.owner.filter(|&o| !data.contains_key(&table.columns[o].name)) {
        let value = user.map_or(Value::Null, |u| Value::Text(u.to_string()));
        cells.push(Cell { column: table.columns[owner].name.clone(), value, version: None, base: None, memory: None });
    }
    Ok(cells)
}

/// A JSON value of `column`: as the `/v1` wire form reads it, plus `true`
/// and `false` for 1 and 0, and decimal text for an integer key.
fn json_value(table: &Table, column: usize, json: &serde_json::Value) -> Result<Value, ApiError> {
    let kind = table.columns[column].ty;
    let value = match json {
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::String(text)
            if kind == ColumnType::Integer && table.primary_key.contains(&column) && is_decimal(text) =>
        {
            Value::Integer(text.parse().map_err(|_| invalid(format!("record_id {text} is out of range")))?)
        }
        serde_json::Value::Number(n) if kind == ColumnType::Text && table.primary_key.contains(&column) => {
            Value::Text(n.to_string())
        }
        other => serde_json::from_value(other.clone())
            .map_err(|e| invalid(format!("table {}, column {}: {e}", table.name, table.columns[column].name)))?,
    };
    rowsync_core::change::check_value(table, column, value).map_err(ApiError::from)
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The site a token writes as: derived from its id, so each token (a
/// device of the tutorial design) is a writer of its own.
fn site_of(caller: &Caller) -> SiteId {
    let token = caller.token.as_deref().unwrap_or("no token");
    let digest = Sha256::digest(format!("rowsync tutorial client\0{token}").as_bytes());
    SiteId::from_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// Reads an ISO-8601 instant: RFC 3339 (`T` or a space between date and
/// time, `Z` or an offset), or a date and time without offset, taken as UTC
/// (what Python's `datetime.utcnow().isoformat()` writes). Returns
/// nanoseconds since the Unix epoch.
pub fn parse_instant(text: &str) -> Result<i128, String> {
    let text = text.trim();
    let normal: String = match text.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &text[..10], &text[11..]),
        _ => text.to_string(),
    };
    if let Ok(at) = OffsetDateTime::parse(&normal, &Rfc3339) {
        return Ok(at.unix_timestamp_nanos());
    }
    PrimitiveDateTime::parse(&normal, &Iso8601::DEFAULT)
        .map(|at| at.assume_utc().unix_timestamp_nanos())
        .map_err(|e| e.to_string())
}

/// The clock reading of a wall time: its milliseconds, and the microseconds
/// within them as the counter.
fn hlc_at(nanos: i128) -> Result<Hlc, ApiError> {
    if nanos < 0 || nanos / 1_000_000 >= 1 << (64 - Hlc::COUNTER_BITS) {
        return Err(invalid("timestamp is before 1970 or too far in the future".into()));
    }
    let micros_within = ((nanos / 1_000) % 1_000) as u64;
    Ok(Hlc(Hlc::from_millis((nanos / 1_000_000) as u64).0 | micros_within))
}

/// Position `p` as an instant: `p` milliseconds after the Unix epoch,
/// written with a fixed width.
pub fn position_stamp(position: u64) -> String {
    let at = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(position as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// The position a `since` names: the whole milliseconds since the epoch
/// (an instant before it is position 0).
fn since_position(text: &str) -> Result<u64, String> {
    Ok((parse_instant(text)? / 1_000_000).clamp(0, i64::MAX as i128) as u64)
}

/// `/changes` parameters (`token`, read by the authentication layer, and
/// unknown ones are ignored).
#[derive(Debug, Deserialize)]
struct ChangesParams {
    since: Option<String>,
    limit: Option<u32>,
}

async fn changes<S: Store>(
    State(state): State<AppState<S>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_parameter(e.body_text()))?;
    let since = match &params.since {
        None => 0,
        Some(text) => since_position(text)
            .map_err(|e| ApiError::bad_parameter(format!("since {text:?} is not an ISO-8601 instant: {e}")))?,
    };
    if let Some(position) = state.drain_direct().await? {
        state.commits.committed(position);
    }
    if since > state.commits.newest() && since > state.store.last_position().await? {
        return Err(ApiError::bad_parameter(
            "since is later than any change this server holds: send back a timestamp from one of its answers, \
             or 1970-01-01T00:00:00+00:00 for everything",
        ));
    }
    let limit = params.limit.unwrap_or(DEFAULT_PULL_LIMIT.min(state.limits.page_changes));
    if limit == 0 || limit > state.limits.page_changes {
        return Err(ApiError::bad_parameter(format!("limit must be between 1 and {}", state.limits.page_changes)));
    }
    // No site: this protocol names no device, so a client gets its own
    // changes back too (it upserts them again, harmlessly).
    let mut page = state.store.pull(since, limit, PAGE_BYTES, None, caller.user.as_deref()).await?;
    // A page that looked through its span and found nothing this caller may
    // see has moved the cursor on; this protocol's client knows only the
    // last timestamp it received, and would ask for the same span again.
    while page.states.is_empty() && page.more {
        page = state.store.pull(page.cursor, limit, PAGE_BYTES, None, caller.user.as_deref()).await?;
    }
    let mut answer = Vec::with_capacity(page.states.len());
    for (position, stored) in page.positions.iter().zip(&page.states) {
        answer.push(element(&state, *position, stored)?);
    }
    state.metrics.changes_served.fetch_add(answer.len() as u64, Ordering::Relaxed);
    let body =
        serde_json::to_vec(&answer).map_err(|e| ApiError::from(crate::store::StoreError::Database(e.to_string())))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// One element of a `/changes` answer from a stored row state.
fn element<S>(state: &AppState<S>, position: u64, stored: &str) -> Result<serde_json::Value, ApiError> {
    let damaged = |e: String| ApiError::from(crate::store::StoreError::Database(format!("a stored state: {e}")));
    let change: RowChange = serde_json::from_str(stored).map_err(|e| damaged(e.to_string()))?;
    let (table_name, key) = (change.table.clone(), change.key.clone());
    let (index, row) = crate::store::decode_stored_change(&state.schema, &table_name, change)?;
    let table = &state.schema.tables[index];
    let record_id = match key.as_slice() {
        [one] => serde_json::to_value(one),
        all => serde_json::to_value(all),
    }
    .map_err(|e| damaged(e.to_string()))?;
    let mut element = serde_json::json!({
        "table": table.name,
        "record_id": record_id,
        "timestamp": position_stamp(position),
    });
    if !row.is_visible() {
        element["operation"] = "DELETE".into();
        return Ok(element);
    }
    // As inserted, with no write since: an INSERT. A client applies
    // INSERT and UPDATE alike (the row whole), since a row changed again
    // shows only at its latest position.
    let inserted = row.alive.is_some() && row.newest_write() == row.alive.as_ref();
    element["operation"] = if inserted { "INSERT" } else { "UPDATE" }.into();
    let data: serde_json::Map<String, serde_json::Value> = table
        .columns
        .iter()
        .zip(row.row_values(table, &key))
        .map(|(column, value)| Ok((column.name.clone(), serde_json::to_value(value)?)))
        .collect::<Result<_, serde_json::Error>>()
        .map_err(|e| damaged(e.to_string()))?;
    element["data"] = data.into();
    Ok(element)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_fixed_width_instants_that_read_back() {
        assert_eq!(position_stamp(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(position_stamp(1), "1970-01-01T00:00:00.001+00:00");
        assert_eq!(position_stamp(86_400_123), "1970-01-02T00:00:00.123+00:00");
        for p in [0, 1, 999, 1_000, 59_999, 86_400_000, 1_000_000_007, 10_000_000_000_000] {
            assert_eq!(since_position(&position_stamp(p)).unwrap(), p, "{p}");
        }
        // String order is position order.
        let mut stamps: Vec<(String, u64)> =
            [5u64, 10, 999, 1_000, 123_456_789, 9, 100_000].iter().map(|&p| (position_stamp(p), p)).collect();
        stamps.sort();
        assert!(stamps.windows(2).all(|w| w[0].1 < w[1].1), "{stamps:?}");
    }

    #[test]
    fn the_tutorials_first_since_and_common_spellings_are_read() {
        assert_eq!(since_position("1970-01-01T00:00:00+00:00").unwrap(), 0);
        assert_eq!(since_position("1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert_eq!(since_position("1970-01-01T02:00:01+02:00").unwrap(), 1_000);
        assert_eq!(since_position("1970-01-01 00:00:00.250").unwrap(), 250);
        assert_eq!(since_position("1969-12-31T23:00:00Z").unwrap(), 0);
        assert!(since_position("yesterday").is_err());
        assert!(since_position("").is_err());
    }

    #[test]
    fn a_clients_microseconds_order_its_changes_within_a_millisecond() {
        let at = |text: &str| hlc_at(parse_instant(text).unwrap()).unwrap();
        let (a, b) = (at("2026-12-01T10:00:00.123001+00:00"), at("2026-12-01T10:00:00.123002+00:00"));
        assert!(a < b);
        assert_eq!(a.millis(), b.millis());
        assert!(at("2026-12-01T10:00:00.124+00:00") > b);
        assert!(hlc_at(-1).is_err());
    }

    #[test]
    fn record_ids_follow_the_key_column() {
        let schema = rowsync_core::parse_schema(
            "CREATE TABLE n (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        let (n, t) = (&schema.tables[0], &schema.tables[1]);
        assert_eq!(record_key(n, &serde_json::json!(7)).unwrap(), vec![Value::Integer(7)]);
        assert_eq!(record_key(n, &serde_json::json!("7")).unwrap(), vec![Value::Integer(7)]);
        assert!(record_key(n, &serde_json::json!("seven")).is_err());
        assert!(record_key(n, &serde_json::json!(1.5)).is_err());
        assert_eq!(record_key(t, &serde_json::json!(7)).unwrap(), vec![Value::Text("7".into())]);
        assert_eq!(record_key(t, &serde_json::json!("k")).unwrap(), vec![Value::Text("k".into())]);
        assert!(record_key(t, &serde_json::json!(null)).is_err());
    }
}
