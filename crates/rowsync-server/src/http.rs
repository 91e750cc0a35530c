//! The `/v1` HTTP API. Every request but `/health` first shows a token
//! ([`crate::auth`]) and passes the rate limit; handlers then check every
//! input against the schema and the [`Limits`] before the store sees it; the
//! store applies it in one transaction.

use std::collections::HashMap;
use std::io::Read;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, map_response, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use rowsync_core::change::decode_change;
use rowsync_core::horizon::cursor_expired;
use rowsync_core::protocol::{agree, Mismatch};
use rowsync_core::RowState;
use rowsync_proto::{ErrorCode, Protocols, PushRequest, PushResponse, Schema, SiteId, Value, PROTOCOL_HEADER};
use serde::Deserialize;

use crate::auth::{bearer, judge, parse, Refusal};
use crate::commits::{Commits, Waited};
use crate::error::ApiError;
use crate::store::{from_another_copy, CheckedBatch, CheckedChange, Collision, Pushed, Store, StoreError};

/// Default and largest pull page.
pub const DEFAULT_PULL_LIMIT: u32 = 1_000;
/// Bytes of row states in a pull page beyond its first row: one huge row
/// comes alone, and memory stays bounded on both sides however large rows are.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Versions further ahead of the server's clock than this are refused: a
/// device whose clock runs ahead would otherwise win every later conflict.
pub const DEFAULT_MAX_CLOCK_AHEAD: Duration = Duration::from_secs(600);
/// How much of a body over the limit is read and thrown away, and for how
/// long, before the 413 goes out (see [`read_body`]).
const DRAIN_LIMIT: usize = 256 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Whether requests must show a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// Every request but `/health` carries a valid token (the default).
    #[default]
    Tokens,
    /// Nobody is asked who they are (`--insecure-no-auth`): for a server
    /// that only its own machine reaches. No table may be private then.
    Off,
}

/// Bounds on what one request may ask of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body after decompression.
    pub body_bytes: usize,
    /// The largest request body as sent (gzip-compressed or not).
    pub compressed_body_bytes: usize,
    /// The most changes in one push.
    pub push_changes: usize,
    /// The largest pull page a client may ask for.
    pub page_changes: u32,
    /// The longest long-poll wait a client may ask for.
    pub wait: Duration,
    /// Requests per second per token, sustained (`None`: no limit). Each
    /// server process counts its own.
    pub requests_per_second: Option<NonZeroU32>,
    /// Requests a token may make at once beyond that rate.
    pub burst: NonZeroU32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_bytes: 32 * 1024 * 1024,
            compressed_body_bytes: 32 * 1024 * 1024,
            push_changes: 50_000,
            page_changes: 10_000,
            wait: Duration::from_secs(60),
            requests_per_second: NonZeroU32::new(200),
            burst: NonZeroU32::new(400).expect("not zero"),
        }
    }
}

/// Who sent a request, as its token says (`None` without tokens).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub user: Option<String>,
    /// The public id of the token (`None` without tokens).
    pub token: Option<String>,
}

/// Counters exposed at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pushes: AtomicU64,
    pushed_changes: AtomicU64,
    applied_changes: AtomicU64,
    pulls: AtomicU64,
    pulled_changes: AtomicU64,
    refused: AtomicU64,
    /// Inserts that met another row under their key (see [`Collision`]).
    pub(crate) key_collisions: AtomicU64,
    /// Tutorial protocol: changes stored, ignored (no data) and refused,
    /// and changes served by `/changes`.
    pub(crate) sync_stored: AtomicU64,
    pub(crate) sync_ignored: AtomicU64,
    pub(crate) sync_refused: AtomicU64,
    pub(crate) changes_served: AtomicU64,
}

/// The server's wall clock, in milliseconds since the Unix epoch: the
/// system's, or one a simulation sets (its time is an input there too).
#[derive(Clone, Default)]
pub struct WallClock(Option<Arc<dyn Fn() -> u64 + Send + Sync>>);

impl WallClock {
    /// A clock that reads `now`.
    pub fn from_fn(now: impl Fn() -> u64 + Send + Sync + 'static) -> WallClock {
        WallClock(Some(Arc::new(now)))
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(now) => now(),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        }
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "WallClock(set)" } else { "WallClock(system)" })
    }
}

/// What every handler shares.
pub struct AppState<S> {
    pub store: Arc<S>,
    pub schema: Arc<Schema>,
    pub metrics: Arc<Metrics>,
    /// How far ahead of this server's clock a version may be.
    pub max_clock_ahead: Duration,
    /// This server's clock.
    pub clock: WallClock,
    pub auth: Auth,
    pub limits: Limits,
    /// Commits known to this process, which long-polling pulls wait on.
    pub commits: Arc<Commits>,
    /// Requests per token (made by [`app`] from `limits`).
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: self.store.clone(),
            schema: self.schema.clone(),
            metrics: self.metrics.clone(),
            max_clock_ahead: self.max_clock_ahead,
            clock: self.clock.clone(),
            auth: self.auth,
            limits: self.limits.clone(),
            commits: self.commits.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

impl<S: Store> AppState<S> {
    /// A server state with the defaults: tokens required, default limits.
    pub fn new(store: S, schema: Schema) -> AppState<S> {
        AppState {
            store: Arc::new(store),
            schema: Arc::new(schema),
            metrics: Arc::default(),
            max_clock_ahead: DEFAULT_MAX_CLOCK_AHEAD,
            clock: WallClock::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            commits: Arc::new(Commits::new(0)),
            limiter: None,
        }
    }

    /// Applies a push batch (see [`Store::push`]), to its end even when
    /// the request that brought it is dropped (its client went away): a
    /// statement cut short can leave its pooled connection out of step
    /// (sqlx does not recover one cut off in a `COPY`), while a push run to
    /// its end commits or rolls back whole, and a retry is applied once.
    pub(crate) async fn push(&self, batch: CheckedBatch) -> Result<Pushed, StoreError> {
        let (store, schema) = (self.store.clone(), self.schema.clone());
        to_the_end(async move { store.push(&schema, &batch).await }).await
    }

    /// Drains the writes made directly in the database (see
    /// [`Store::drain_direct`]), to its end as [`AppState::push`] is.
    pub(crate) async fn drain_direct(&self) -> Result<Option<u64>, StoreError> {
        let (store, schema, now_ms) = (self.store.clone(), self.schema.clone(), self.clock.now_ms());
        to_the_end(async move { store.drain_direct(&schema, now_ms).await }).await
    }
}

/// Runs `work` on a task of its own, so that dropping the caller does not
/// cut it short.
async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(work).await.map_err(|e| StoreError::Unavailable(format!("a store write stopped: {e}")))?
}

/// Logs and counts inserts that met another row under their key: the
/// outcome follows the table's rule, and the row that lost is in the log.
pub(crate) fn report_collisions<S>(state: &AppState<S>, collisions: &[Collision]) {
    for c in collisions {
        state.metrics.key_collisions.fetch_add(1, Ordering::Relaxed);
        let json = |row: Option<&Vec<Value>>| serde_json::to_string(&row).unwrap_or_default();
        tracing::warn!(
            table = %c.table,
            key = %c.key_json,
            held = %json(c.held.as_ref()),
            sent = %json(Some(&c.sent)),
            kept = %json(c.kept.as_ref()),
            "key collision: an insert met another row under its key (two writers numbered rows alike?)"
        );
    }
}

/// Whether a request refused with `code` names a table or column this
/// process does not know because a process started since added it: then
/// the request is fine, and this process is the one behind (see
/// [`StoreError::SchemaBehind`]). Asks the database only for those codes.
pub(crate) async fn behind<S: Store>(state: &AppState<S>, code: ErrorCode) -> Result<bool, StoreError> {
    Ok(matches!(code, ErrorCode::UnknownTable | ErrorCode::UnknownColumn)
        && state.store.schema_version().await? > state.schema.version)
}

/// Refuses a change holding a version too far ahead of the server's clock;
/// `index` is the change's place in a push batch (`None`: a lone change).
pub(crate) fn check_clock(
    state: &RowState,
    now_ms: u64,
    max_ahead: Duration,
    index: Option<usize>,
) -> Result<(), ApiError> {
    let limit = now_ms.saturating_add(max_ahead.as_millis() as u64);
    if let Some(ahead) = state.versions().map(|v| v.hlc.millis()).filter(|&ms| ms > limit).max() {
        let mut error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ClockSkew,
            format!(
                "{} is {} s ahead of the server's clock, more than the {} s it accepts; \
                 the writing device's clock runs ahead: correct it (the changes stay queued and are accepted \
                 once the server's time catches up)",
                match index {
                    Some(index) => format!("change {index}: a version"),
                    None => "the change's timestamp".to_string(),
                },
                (ahead - now_ms) / 1000,
                max_ahead.as_secs()
            ),
        );
        error.max_clock_ms = Some(limit);
        return Err(error);
    }
    Ok(())
}

/// The server's router.
pub fn app<S: Store>(mut state: AppState<S>) -> Router {
    state.limiter = state
        .limits
        .requests_per_second
        .map(|rate| Arc::new(RateLimiter::keyed(Quota::per_second(rate).allow_burst(state.limits.burst))));
    let api = Router::new()
        .route("/v1/schema", get(get_schema::<S>))
        .route("/v1/push", post(push::<S>))
        .route("/v1/pull", get(pull::<S>))
        .route_layer(from_fn_with_state(state.clone(), authenticate::<S>))
        .route_layer(from_fn(speak_protocols));
    let metrics = Router::new()
        .route("/metrics", get(metrics::<S>))
        .route_layer(from_fn_with_state(state.clone(), authenticate::<S>));
    let tutorial = crate::tutorial::routes::<S>()
        .route_layer(from_fn_with_state(state.clone(), authenticate_header_or_query::<S>));
    Router::new()
        .merge(api)
        .merge(metrics)
        .merge(tutorial)
        .route("/health", get(health::<S>))
        .fallback(not_found)
        .layer(map_response(json_errors))
        .with_state(state)
}

/// Refuses a client that speaks no protocol version this server speaks
/// (before anything else: its requests may mean something else), naming
/// the side to upgrade; a client that states none speaks version 1. Every
/// answer states the versions this server speaks.
async fn speak_protocols(request: Request, next: Next) -> Response {
    let stated = request
        .headers()
        .get(PROTOCOL_HEADER)
        .map(|value| value.to_str().map_err(|_| "not text".to_string()).and_then(str::parse::<Protocols>));
    let spoken = Protocols::SPOKEN;
    let refusal = match stated {
        None => None,
        Some(Err(e)) => Some(ApiError::bad_parameter(format!("the {PROTOCOL_HEADER} header: {e}"))),
        Some(Ok(client)) => agree(spoken, client).err().map(|mismatch| {
            let (than, upgrade) = match mismatch {
                Mismatch::TheyAreOlder => ("older", "upgrade rowsync on the client"),
                Mismatch::TheyAreNewer => ("newer", "upgrade the server"),
            };
            let message =
                format!("this client speaks rowsync protocol {client}, {than} than this server's {spoken}: {upgrade}");
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ProtocolMismatch, message)
        }),
    };
    let mut response = match refusal {
        Some(refusal) => refusal.into_response(),
        None => next.run(request).await,
    };
    let value = HeaderValue::from_str(&spoken.to_string()).expect("digits and a dash");
    response.headers_mut().insert(PROTOCOL_HEADER, value);
    response
}

/// Lets a request through only with a valid token (unless tokens are off)
/// and within its token's rate; tells the handler who sent it.
async fn authenticate<S: Store>(State(state): State<AppState<S>>, request: Request, next: Next) -> Response {
    admit(state, request, next, None).await
}

/// As [`authenticate`], taking the token from a `token` query parameter
/// when the request has no `Authorization` header (for clients of the
/// tutorial protocol that cannot set headers).
async fn authenticate_header_or_query<S: Store>(
    State(state): State<AppState<S>>,
    request: Request,
    next: Next,
) -> Response {
    #[derive(Deserialize)]
    struct TokenParam {
        token: Option<String>,
    }
    let query = Query::<TokenParam>::try_from_uri(request.uri()).ok().and_then(|Query(p)| p.token);
    admit(state, request, next, query).await
}

async fn admit<S: Store>(
    state: AppState<S>,
    mut request: Request,
    next: Next,
    query_token: Option<String>,
) -> Response {
    let caller = match state.auth {
        Auth::Off => Caller::default(),
        Auth::Tokens => match identify(&state, request.headers(), query_token.as_deref()).await {
            Ok((caller, token_id)) => {
                if let Some(wait) = over_rate(&state, token_id) {
                    return too_many(wait);
                }
                caller
            }
            Err(error) => return error.into_response(),
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller a request's token names, and the token's id.
async fn identify<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(Caller, String), ApiError> {
    let refused = |refusal: Refusal| {
        let mut error = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, refusal.to_string());
        error.authenticate = true;
        error
    };
    let token = match (headers.get(header::AUTHORIZATION), query_token) {
        (None, Some(token)) => token,
        (header, _) => bearer(header.map(HeaderValue::as_bytes)).map_err(refused)?,
    };
    let (id, secret) = parse(token).map_err(refused)?;
    let record = state.store.find_token(id).await?;
    let user = judge(record.as_ref(), secret, state.clock.now_ms()).map_err(refused)?;
    Ok((Caller { user: Some(user.to_string()), token: Some(id.to_string()) }, id.to_string()))
}

/// How long a token over its rate must wait, if it is over.
fn over_rate<S>(state: &AppState<S>, token_id: String) -> Option<Duration> {
    let limiter = state.limiter.as_ref()?;
    if limiter.len() > 100_000 {
        limiter.retain_recent();
    }
    let refused = limiter.check_key(&token_id).err()?;
    Some(refused.wait_time_from(DefaultClock::default().now()))
}

fn too_many(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!("too many requests with this token; retry in {} ms", wait.as_millis()),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route; the API lives under /v1")
}

/// Every error answer is JSON with a stable code, including those made by
/// axum and tower-http themselves (405 for a wrong method, 415 for an unknown
/// `Content-Encoding`), which come with an empty body. Their headers (`Allow`,
/// `Accept-Encoding`) are kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            (ErrorCode::MethodNotAllowed, "this route does not take that method (see the Allow header)")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (ErrorCode::UnsupportedEncoding, "unsupported Content-Encoding: send the body as it is, or gzip-compressed")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::BodyTooLarge, "the request body is larger than this server accepts")
        }
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route; the API lives under /v1"),
        status if status.is_client_error() => (ErrorCode::InvalidParameter, "the request was refused"),
        _ => (ErrorCode::Internal, "internal error; see the server log"),
    };
    let (parts, _) = response.into_parts();
    let mut answer = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Reads a request body within the limits: as sent, at most
/// `compressed_body_bytes`; gzip-decoded (when its `Content-Encoding` says
/// gzip), at most `body_bytes`. Decoding stops at the limit, so a small
/// body that would inflate to gigabytes (a gzip bomb) costs no more than
/// one that inflates to the limit.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("identity") | Some("") => false,
        Some("gzip" | "x-gzip") => true,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedEncoding,
                "unsupported Content-Encoding: send the body as it is, or gzip-compressed",
            ))
        }
    };
    if !gzip {
        return read_raw(body, limits.body_bytes.min(limits.compressed_body_bytes)).await;
    }
    let compressed = read_raw(body, limits.compressed_body_bytes).await?;
    let mut bytes = Vec::new();
    let mut decoder = flate2::read::MultiGzDecoder::new(&compressed[..]).take(limits.body_bytes as u64 + 1);
    decoder.read_to_end(&mut bytes).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedBody, format!("the body is not valid gzip: {e}"))
    })?;
    if bytes.len() > limits.body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!(
                "the request body inflates to more than the {} bytes this server accepts after decompression",
                limits.body_bytes
            ),
        ));
    }
    Ok(bytes)
}

/// Reads a request body of at most `limit` bytes as sent.
///
/// A body over the limit is still read to its end and thrown away (up to
/// [`DRAIN_LIMIT`] more bytes, for at most [`DRAIN_TIME`]) before the 413
/// goes out: most HTTP clients send the whole body before they read the
/// answer, and would see a broken connection instead of the 413 if the
/// server closed it early.
async fn read_raw(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    let mut total = 0usize;
    let started = Instant::now();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedBody, format!("the body could not be read: {e}"))
        })?;
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total <= limit {
            bytes.extend_from_slice(&data);
        } else {
            bytes = Vec::new();
            if total > limit.saturating_add(DRAIN_LIMIT) || started.elapsed() > DRAIN_TIME {
                break;
            }
        }
    }
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than the {limit} bytes this server accepts"),
        ));
    }
    Ok(bytes)
}

async fn get_schema<S: Store>(State(state): State<AppState<S>>) -> Json<Schema> {
    Json((*state.schema).clone())
}

async fn push<S: Store>(
    State(state): State<AppState<S>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PushResponse>, ApiError> {
    let refused = |e: ApiError| {
        state.metrics.refused.fetch_add(1, Ordering::Relaxed);
        e
    };
    let bytes = read_body(&headers, body, &state.limits).await.map_err(refused)?;
    let mut request: PushRequest = serde_json::from_slice(&bytes).map_err(|e| {
        refused(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedBody, format!("not a push request: {e}")))
    })?;
    drop(bytes);
    let most = state.limits.push_changes;
    if request.changes.len() > most {
        return Err(refused(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("a push carries at most {most} changes, this one has {}", request.changes.len()),
        )));
    }
    let mut checked = Vec::with_capacity(request.changes.len());
    // A client folds all its writes to a row into one change per push; a
    // row named twice is a crafted or broken request.
    let mut rows: HashMap<(usize, String), usize> = HashMap::with_capacity(request.changes.len());
    let now_ms = state.clock.now_ms();
    for (index, pushed) in std::mem::take(&mut request.changes).into_iter().enumerate() {
        if pushed.seq > request.last_seq {
            return Err(refused(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidParameter,
                format!("change {index}: seq {} is above the batch's last_seq {}", pushed.seq, request.last_seq),
            )));
        }
        let change = match decode_change(&state.schema, pushed.row) {
            Ok(change) => change,
            Err(e) if behind(&state, e.code()).await? => return Err(StoreError::SchemaBehind.into()),
            Err(e) => {
                let mut err = ApiError::from(e);
                err.message = format!("change {index}: {}", err.message);
                err.change = Some(index);
                return Err(refused(err));
            }
        };
        if let Some(first) = rows.insert((change.table, change.key_json.clone()), index) {
            let mut err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidKey,
                format!(
                    "change {index}: table {}, key {} is change {first} already; a push names each row once",
                    state.schema.tables[change.table].name, change.key_json
                ),
            );
            err.change = Some(index);
            return Err(refused(err));
        }
        check_clock(&change.state, now_ms, state.max_clock_ahead, Some(index)).map_err(refused)?;
        checked.push(CheckedChange { seq: pushed.seq, change, whole_row: false });
    }
    let count = checked.len() as u64;
    let batch = CheckedBatch {
        site: request.site,
        user: caller.user,
        last_seq: request.last_seq,
        batch: request.batch,
        known: request.known,
        changes: checked,
        now_ms,
    };
    let Pushed { response, position, collisions } = state.push(batch).await.map_err(|e| match e {
        StoreError::SiteReused
        | StoreError::NotOwner { .. }
        | StoreError::Forgotten { .. }
        | StoreError::ForeignSite => refused(e.into()),
        other => other.into(),
    })?;
    report_collisions(&state, &collisions);
    state.commits.committed(position);
    state.metrics.pushes.fetch_add(1, Ordering::Relaxed);
    state.metrics.pushed_changes.fetch_add(count, Ordering::Relaxed);
    state.metrics.applied_changes.fetch_add(response.applied, Ordering::Relaxed);
    Ok(Json(response))
}

#[derive(Debug, Deserialize)]
struct PullParams {
    #[serde(default)]
    cursor: u64,
    limit: Option<u32>,
    /// Seconds to wait for a change when there is none yet (long-poll).
    #[serde(default)]
    wait: u64,
    /// The pulling site: states exactly as it pushed them are left out.
    site: Option<SiteId>,
    /// The ids of the pulling replica's last requests, comma-separated:
    /// checked like a push's `known`.
    known: Option<String>,
    /// A download from the start, and the horizon's position it began at
    /// (see [`rowsync_proto::PullRequest::full`]).
    full: Option<u64>,
}

async fn pull<S: Store>(
    State(state): State<AppState<S>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<PullParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_parameter(e.body_text()))?;
    // Positions are 63-bit: a larger cursor is no position of this server.
    if params.cursor > i64::MAX as u64 {
        return Err(ApiError::bad_parameter(format!("cursor must be between 0 and {}", i64::MAX)));
    }
    // A limit is a most: asked for more than a page, the server answers a
    // page (and `more`), so clients may size their pages without knowing
    // this server's largest.
    let limit = params.limit.unwrap_or(DEFAULT_PULL_LIMIT).min(state.limits.page_changes);
    if limit == 0 {
        return Err(ApiError::bad_parameter("limit must be at least 1"));
    }
    let most_wait = state.limits.wait.as_secs();
    if params.wait > most_wait {
        return Err(ApiError::bad_parameter(format!("wait must be between 0 and {most_wait} seconds")));
    }
    if let (Some(site), Some(known)) = (&params.site, &params.known) {
        let known: Vec<u64> = known
            .split(',')
            .filter(|id| !id.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| ApiError::bad_parameter("known must be request ids separated by commas"))?;
        let mark = state.store.site(site).await?.unwrap_or_default();
        // Another user's device: what the server keeps of it is not this
        // caller's to probe. (Without `known`, another's site id only
        // leaves out, among the caller's own rows, those it pushed.)
        if let (Some(owner), Some(user)) = (&mark.user, &caller.user) {
            if owner != user {
                return Err(StoreError::ForeignSite.into());
            }
        }
        if from_another_copy(mark.batch, None, Some(&known)) {
            return Err(StoreError::SiteReused.into());
        }
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(params.wait);
    let (site, user) = (params.site.as_ref(), caller.user.as_deref());
    // A download from the start is held to the horizon it began at: its
    // first page's, read before that page, or the one its client sends back.
    let began = match params.full {
        Some(_) if params.cursor == 0 => Some(state.store.horizon().await?.position),
        given => given,
    };
    // Every position up to this one is visible to the page read below.
    let committed = if began.is_some() { state.store.last_position().await? } else { 0 };
    if let Some(position) = state.drain_direct().await? {
        state.commits.committed(position);
    }
    // Every position up to `seen` is committed and was read by the last pull.
    let mut seen = state.commits.newest();
    let mut page = state.store.pull(params.cursor, limit, PAGE_BYTES, site, user).await?;
    // Nothing for this caller yet: wait for a commit past what was read
    // (costing the database nothing meanwhile), then pull again. A commit of
    // rows the caller may not see leaves the page empty: wait on, so that
    // neither the answer nor its timing tells of other users' writes.
    while params.wait > 0
        && page.cursor == params.cursor
        && state.commits.wait_past(seen.max(params.cursor), until).await == Waited::Committed
    {
        seen = state.commits.newest();
        page = state.store.pull(params.cursor, limit, PAGE_BYTES, site, user).await?;
    }
    // Read after the page: tombstones collected before or while it was read
    // move the horizon past the cursor, so a page that missed one is refused.
    if params.cursor > 0 || began.is_some() {
        let horizon = state.store.horizon().await?;
        if cursor_expired(&horizon, params.cursor, began) {
            return Err(ApiError::new(
                StatusCode::GONE,
                ErrorCode::CursorExpired,
                "this replica may have missed deletes the server has since forgotten (they are kept for the \
                 server's tombstone retention): download everything again from cursor 0 with full",
            ));
        }
        // A download that reached the end has read every position up to
        // `committed`: it passes the forgotten ones there, or the next
        // pull would stop below the horizon.
        if began.is_some() && !page.more {
            page.cursor = page.cursor.max(horizon.position.min(committed));
        }
    }
    state.metrics.pulls.fetch_add(1, Ordering::Relaxed);
    state.metrics.pulled_changes.fetch_add(page.states.len() as u64, Ordering::Relaxed);
    // The stored states are already the wire form of a change: splice them in
    // rather than decoding and encoding every row again.
    let mut body = String::with_capacity(page.states.iter().map(|s| s.len() + 1).sum::<usize>() + 64);
    body.push_str("{\"changes\":[");
    for (i, state) in page.states.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(state);
    }
    body.push_str(&format!(
        "],\"cursor\":{},\"more\":{},\"schema_version\":{}",
        page.cursor, page.more, state.schema.version
    ));
    if let Some(began) = began {
        body.push_str(&format!(",\"began\":{began}"));
    }
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn health<S: Store>(State(state): State<AppState<S>>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn metrics<S: Store>(State(state): State<AppState<S>>) -> Response {
    let m = &state.metrics;
    let mut out = String::new();
    for (name, help, value) in [
        ("rowsync_pushes_total", "Push batches applied.", &m.pushes),
        ("rowsync_pushed_changes_total", "Changes received in applied pushes.", &m.pushed_changes),
        ("rowsync_applied_changes_total", "Changes applied (not repeats).", &m.applied_changes),
        ("rowsync_pulls_total", "Pull pages served.", &m.pulls),
        ("rowsync_pulled_changes_total", "Changes served by pulls.", &m.pulled_changes),
        ("rowsync_refused_pushes_total", "Pushes refused as bad input.", &m.refused),
        ("rowsync_key_collisions_total", "Inserts that met another row under their key (logged).", &m.key_collisions),
        ("rowsync_sync_stored_total", "Tutorial /sync changes stored.", &m.sync_stored),
        ("rowsync_sync_ignored_total", "Tutorial /sync changes without data (no-ops).", &m.sync_ignored),
        ("rowsync_sync_refused_total", "Tutorial /sync changes refused (logged).", &m.sync_refused),
        ("rowsync_changes_served_total", "Changes served by tutorial /changes.", &m.changes_served),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
