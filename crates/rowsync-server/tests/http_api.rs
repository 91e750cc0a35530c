//! The `/v1` API through the router, without a socket, over a real SQLite
//! store: bad input gets a clear 4xx with a stable code and changes nothing;
//! a repeated batch is applied once.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rowsync_core::parse_schema;
use rowsync_proto::{
    Cell, Hlc, PullResponse, PushRequest, PushResponse, PushedChange, RowChange, SiteId, Value, Version,
};
use rowsync_server::store::{SqliteStore, Store};
use rowsync_server::{app, AppState, Auth, Limits, Router};
use serde_json::json;
use tower::ServiceExt;

const SCHEMA: &str = "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER);";

/// A router without tokens (they are tested in `security.rs`).
async fn router(dir: &tempfile::TempDir, body_limit: usize) -> Router {
    router_with(dir, |limits| limits.body_bytes = body_limit).await
}

async fn router_with(dir: &tempfile::TempDir, limits: impl FnOnce(&mut Limits)) -> Router {
    let store = SqliteStore::open(&dir.path().join("server.db")).await.unwrap();
    let schema = store.install(Some(&parse_schema(SCHEMA).unwrap())).await.unwrap();
    let mut state = AppState::new(store, schema);
    state.auth = Auth::Off;
    limits(&mut state.limits);
    app(state)
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    (status, body)
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/push").header("content-type", "application/json").body(body.into()).unwrap()
}

fn site() -> SiteId {
    SiteId::from_bytes([7; 16])
}

fn contact(id: &str, name: Value, age: Value, seq: u64) -> PushedChange {
    let version = Version { hlc: Hlc::from_millis(1_000 + seq), site: site() };
    PushedChange {
        seq,
        row: RowChange {
            table: "contacts".into(),
            key: vec![Value::Text(id.into())],
            alive: Some(version.clone()),
            version: Some(version),
            deleted: None,
            cells: vec![
                Cell { column: "name".into(), value: name, version: None, base: None, memory: None },
                Cell { column: "age".into(), value: age, version: None, base: None, memory: None },
            ],
            conflicts: Vec::new(),
        },
    }
}

fn batch(changes: Vec<PushedChange>) -> String {
    let last_seq = changes.iter().map(|c| c.seq).max().unwrap_or(0);
    serde_json::to_string(&PushRequest { site: site(), last_seq, batch: None, known: None, changes }).unwrap()
}

async fn pulled(router: &Router) -> PullResponse {
    let (status, body) = call(router, Request::get("/v1/pull?cursor=0&limit=100").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn a_good_batch_is_applied_and_pulled_back() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 1 << 20).await;
    let (status, body) = call(
        &router,
        post(batch(vec![
            contact("a", Value::Text("Ann".into()), Value::Integer(30), 1),
            contact("b", Value::Text("Bo".into()), Value::Null, 2),
        ])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response: PushResponse = serde_json::from_value(body).unwrap();
    assert_eq!(response, PushResponse { acked_seq: 2, applied: 2 });
    let page = pulled(&router).await;
    assert_eq!(page.changes.len(), 2);
    assert_eq!(page.cursor, 2);
    assert!(!page.more);
}

#[tokio::test]
async fn the_same_batch_sent_twice_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 1 << 20).await;
    let body = batch(vec![contact("a", Value::Text("Ann".into()), Value::Integer(30), 1)]);
    let (_, first) = call(&router, post(body.clone())).await;
    let (status, second) = call(&router, post(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["applied"], 1);
    assert_eq!(second["applied"], 0, "a retried batch must not be applied again");
    assert_eq!(second["acked_seq"], 1);
    assert_eq!(pulled(&router).await.changes.len(), 1, "no duplicate in the change log");
}

/// A copy of a replica (a file restored from a backup, or copied to a
/// second device) reuses sequence numbers the server holds: refused with
/// `site_reused`, nothing applied. The very same request delivered twice (a
/// retry, a network duplicate) is a repeat, not a copy.
#[tokio::test]
async fn a_copy_of_a_replica_is_refused_and_a_duplicate_request_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 1 << 20).await;
    let request = |id: &str, last_seq: u64, known: Vec<u64>, batch: u64| {
        let changes = vec![contact(id, Value::Text("x".into()), Value::Null, last_seq)];
        let known = Some(known);
        serde_json::to_string(&PushRequest { site: site(), last_seq, batch: Some(batch), known, changes }).unwrap()
    };
    // Both copies start from a file whose last acknowledged request was 69.
    let (status, _) = call(&router, post(request("base", 1, vec![], 69))).await;
    assert_eq!(status, StatusCode::OK);
    let original = request("a", 2, vec![69], 70);
    let (status, _) = call(&router, post(original.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = call(&router, post(original)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["applied"], 0);

    // The copy knows request 69 too, and writes its own seq 2.
    let (status, body) = call(&router, post(request("b", 2, vec![69], 71))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "site_reused");
    assert_eq!(pulled(&router).await.changes.len(), 2, "nothing of the copy was applied");
    // The original, which sent 70 and has not heard back, goes on.
    let (status, _) = call(&router, post(request("c", 3, vec![69, 70], 72))).await;
    assert_eq!(status, StatusCode::OK);

    // A pull from the copy is refused the same way; the original's is not.
    let pull = |known: &str| {
        Request::get(format!("/v1/pull?cursor=0&site={}&known={known}", site())).body(Body::empty()).unwrap()
    };
    let (status, body) = call(&router, pull("69,71")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("site_reused")));
    let (status, _) = call(&router, pull("72")).await;
    assert_eq!(status, StatusCode::OK);
}

/// A pull asked to wait answers as soon as a change after its cursor
/// commits, and a wait beyond the bound is refused.
/// A client may ask for more than the server's largest page (clients size
/// their pages from their own pace): it gets a page of the largest size,
/// and the rest on the next pull.
#[tokio::test]
async fn a_pull_asking_for_more_than_a_page_gets_a_whole_page() {
    let dir = tempfile::tempdir().unwrap();
    let router = router_with(&dir, |limits| limits.page_changes = 2).await;
    let changes = (1..=3).map(|seq| contact(&format!("c{seq}"), Value::Text("x".into()), Value::Null, seq)).collect();
    let (status, _) = call(&router, post(batch(changes))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&router, Request::get("/v1/pull?cursor=0&limit=5000").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: PullResponse = serde_json::from_value(body).unwrap();
    assert_eq!((page.changes.len(), page.more), (2, true));
    let rest = format!("/v1/pull?cursor={}&limit=5000", page.cursor);
    let (_, body) = call(&router, Request::get(rest).body(Body::empty()).unwrap()).await;
    let page: PullResponse = serde_json::from_value(body).unwrap();
    assert_eq!((page.changes.len(), page.more), (1, false));
}

#[tokio::test]
async fn a_waiting_pull_answers_when_a_change_commits() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 1 << 20).await;
    assert_refused(
        &router,
        Request::get("/v1/pull?cursor=0&wait=61").body(Body::empty()).unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "wait must be between 0 and 60 seconds",
    )
    .await;
    let started = std::time::Instant::now();
    let waiter = router.clone();
    let waiting = tokio::spawn(async move {
        call(&waiter, Request::get("/v1/pull?cursor=0&wait=30").body(Body::empty()).unwrap()).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "nothing to answer yet");
    let (status, _) = call(&router, post(batch(vec![contact("a", Value::Text("Ann".into()), Value::Null, 1)]))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, page) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["changes"].as_array().unwrap().len(), 1, "{page}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "answered when the push committed");
}

async fn assert_refused(router: &Router, request: Request<Body>, status: StatusCode, code: &str, needle: &str) {
    let (got, body) = call(router, request).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// A client states the protocol versions it speaks; one that shares none
/// with the server is refused before anything is read, told which side to
/// upgrade, and its push is not applied. Every `/v1` answer states the
/// server's versions; a client that states none speaks version 1.
#[tokio::test]
async fn a_client_speaking_another_protocol_is_refused_and_told_what_to_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 1 << 20).await;
    let speaking = |request: Request<Body>, protocols: &str| {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert("rowsync-protocol", protocols.parse().unwrap());
        Request::from_parts(parts, body)
    };
    let schema = || Request::get("/v1/schema").body(Body::empty()).unwrap();
    let served = [schema(), speaking(schema(), "1"), speaking(schema(), "0-3"), speaking(schema(), "1-9")];
    for request in served {
        let stated = request.headers().get("rowsync-protocol").cloned();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{stated:?}");
        assert_eq!(response.headers()["rowsync-protocol"], "1", "{stated:?}");
    }
    let refusals = [("2-3", "newer than this server's 1: upgrade the server"), ("0", "upgrade rowsync on the client")];
    for (protocols, needle) in refusals {
        let response = router.clone().oneshot(speaking(schema(), protocols)).await.unwrap();
        assert_eq!(response.headers()["rowsync-protocol"], "1", "a refusal states the server's versions too");
        assert_refused(&router, speaking(schema(), protocols), StatusCode::BAD_REQUEST, "protocol_mismatch", needle)
            .await;
        let push = post(batch(vec![contact("a", Value::Text("Ann".into()), Value::Null, 1)]));
        assert_refused(&router, speaking(push, protocols), StatusCode::BAD_REQUEST, "protocol_mismatch", needle).await;
    }
    assert_eq!(pulled(&router).await.changes.len(), 0, "a refused push was applied");
    let nonsense = speaking(schema(), "two");
    assert_refused(&router, nonsense, StatusCode::BAD_REQUEST, "invalid_parameter", "rowsync-protocol header").await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_stable_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 4096).await;
    let good = contact("ok", Value::Text("Fine".into()), Value::Null, 1);

    let mut unknown_table = contact("x", Value::Text("X".into()), Value::Null, 2);
    unknown_table.row.table = "contacts; DROP TABLE contacts".into();
    assert_refused(
        &router,
        post(batch(vec![good.clone(), unknown_table])),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_table",
        "change 1: unknown table",
    )
    .await;

    let mut unknown_column = contact("x", Value::Text("X".into()), Value::Null, 2);
    unknown_column.row.cells[1].column = "salary".into();
    assert_refused(
        &router,
        post(batch(vec![good.clone(), unknown_column])),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_column",
        "salary",
    )
    .await;

    let wrong_type = contact("x", Value::Text("X".into()), Value::Text("thirty".into()), 2);
    assert_refused(
        &router,
        post(batch(vec![good.clone(), wrong_type])),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
        "column age: expected INTEGER but got text thirty",
    )
    .await;

    assert_refused(&router, post("{\"site\": "), StatusCode::BAD_REQUEST, "malformed_body", "").await;
    assert_refused(
        &router,
        post("{\"site\": \"nothex\", \"last_seq\": 1, \"changes\": []}"),
        StatusCode::BAD_REQUEST,
        "malformed_body",
        "site id",
    )
    .await;

    let names: Vec<PushedChange> =
        (1..200).map(|i| contact(&format!("k{i}"), Value::Text("a long enough name".into()), Value::Null, i)).collect();
    assert_refused(&router, post(batch(names)), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "larger").await;

    assert_refused(
        &router,
        Request::get("/v1/pull?cursor=-1").body(Body::empty()).unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "cursor",
    )
    .await;
    assert_refused(
        &router,
        Request::get("/v1/pull?limit=0").body(Body::empty()).unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "limit",
    )
    .await;
    assert_refused(
        &router,
        Request::get("/v2/nothing").body(Body::empty()).unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
        "/v1",
    )
    .await;

    // A cursor beyond any position (it once wrapped to -1: everything from the start).
    assert_refused(
        &router,
        Request::get("/v1/pull?cursor=18446744073709551615").body(Body::empty()).unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "cursor must be between 0 and 9223372036854775807",
    )
    .await;
    let wrong_method = Request::put("/v1/push").body(Body::empty()).unwrap();
    let response = router.clone().oneshot(wrong_method).await.unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    assert_refused(
        &router,
        Request::delete("/v1/pull").body(Body::empty()).unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method",
    )
    .await;
    assert_refused(
        &router,
        Request::post("/v1/push").header("content-encoding", "br").body(Body::from("xx")).unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_encoding",
        "gzip",
    )
    .await;
    assert_refused(
        &router,
        Request::post("/v1/push").header("content-encoding", "gzip").body(Body::from("not gzip at all")).unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_body",
        "gzip",
    )
    .await;

    // Nothing of any refused batch was applied, and the server still serves.
    assert!(pulled(&router).await.changes.is_empty());
    let (status, _) = call(&router, post(batch(vec![good]))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pulled(&router).await.changes.len(), 1);
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_health_and_metrics_answer() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 1 << 20).await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(batch(vec![contact("z", Value::Text("Zed".into()), Value::Null, 1)]).as_bytes()).unwrap();
    let request = Request::post("/v1/push")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from(encoder.finish().unwrap()))
        .unwrap();
    let (status, body) = call(&router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&router, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (_, metrics) = call(&router, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(metrics.as_str().unwrap().contains("rowsync_applied_changes_total 1"));
}

/// Hostile bodies: each gets a clear 4xx with a stable code, nothing is
/// applied, and the server answers the next good request.
#[tokio::test]
async fn hostile_payloads_get_a_clear_4xx_and_the_server_stays_healthy() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir, 1 << 20).await;

    // A gzip bomb: 64 KiB that inflate to 64 MiB, decoded only to the limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb itself is under the limit");
    let request = Request::post("/v1/push").header("content-encoding", "gzip").body(Body::from(bomb)).unwrap();
    assert_refused(&router, request, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "inflates").await;

    // Nesting deeper than a recursive reader could follow, where a value is
    // due: refused at its first `[`.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = batch(vec![contact("n", Value::Text("N".into()), Value::Null, 1)]).replace("\"N\"", &deep);
    assert_refused(&router, post(body), StatusCode::BAD_REQUEST, "malformed_body", "invalid type: sequence").await;

    // Bytes that are not UTF-8.
    let mut body = batch(vec![contact("u", Value::Text("U".into()), Value::Null, 1)]).into_bytes();
    let at = body.iter().position(|&b| b == b'U').unwrap();
    body[at] = 0xff;
    assert_refused(&router, post(body), StatusCode::BAD_REQUEST, "malformed_body", "").await;

    // A number no column holds, and a key of the wrong type.
    let body = batch(vec![contact("big", Value::Text("B".into()), Value::Integer(1), 1)])
        .replace("\"value\":1", "\"value\":123456789012345678901234567890");
    let (status, answer) = call(&router, post(body)).await;
    assert!(status.is_client_error(), "{status} {answer}");
    let mut wrong_key = contact("k", Value::Text("K".into()), Value::Null, 1);
    wrong_key.row.key = vec![Value::Integer(7)];
    let (status, answer) = call(&router, post(batch(vec![wrong_key]))).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value")),
        "{answer}"
    );
    assert!(answer["message"].as_str().unwrap().contains("column id: expected TEXT"), "{answer}");

    // The same row twice in one push: refused whole, naming the second.
    let twice = batch(vec![
        contact("dup", Value::Text("First".into()), Value::Null, 1),
        contact("other", Value::Text("Other".into()), Value::Null, 2),
        contact("dup", Value::Text("Second".into()), Value::Null, 3),
    ]);
    let (status, answer) = call(&router, post(twice)).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_key")), "{answer}");
    assert_eq!(answer["change"], 2, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("change 2: table contacts, key [\"dup\"] is change 0"));

    // SQL in a column name.
    let mut injected = contact("i", Value::Text("I".into()), Value::Null, 1);
    injected.row.cells[0].column = "name\" = 'x'; DROP TABLE contacts; --".into();
    assert_refused(&router, post(batch(vec![injected])), StatusCode::UNPROCESSABLE_ENTITY, "unknown_column", "").await;

    assert!(pulled(&router).await.changes.is_empty(), "nothing applied");
    let (status, _) = call(&router, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&router, post(batch(vec![contact("ok", Value::Text("Ok".into()), Value::Null, 1)]))).await;
    assert_eq!(status, StatusCode::OK);
}
