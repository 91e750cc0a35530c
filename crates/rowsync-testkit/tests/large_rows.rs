//! Rows and requests larger than the limits: a body over the server's limit
//! gets its 413 (not a broken connection), and huge rows neither stall the
//! queue behind them nor blow up memory.

use rowsync_testkit::{TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

#[test]
fn a_body_over_the_limit_gets_a_413_even_from_a_client_that_sends_it_whole() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), CONTACTS_SCHEMA, |config| {
        config.body_limit = 64 * 1024;
    });
    // ureq writes the whole body before reading the answer, as most clients do.
    let body = vec![b' '; 16 * 1024 * 1024];
    let answer =
        ureq::post(&format!("{}/v1/push", server.url())).set("Content-Type", "application/json").send_bytes(&body);
    match answer {
        Err(ureq::Error::Status(413, response)) => {
            let text = response.into_string().unwrap();
            assert!(text.contains("\"code\":\"body_too_large\""), "{text}");
        }
        Err(other) => panic!("expected a 413, got {other}"),
        Ok(response) => panic!("expected a 413, got {}", response.status()),
    }
    // The server still answers.
    assert_eq!(ureq::get(&format!("{}/health", server.url())).call().unwrap().status(), 200);
}
