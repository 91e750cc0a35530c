//! Long-poll: a pull that waits answers as soon as a change after its cursor
//! commits, also when the change was pushed through another server process
//! on the same database, and a server shutting down does not wait for it.

use std::time::{Duration, Instant};

use rowsync_proto::PullResponse;
use rowsync_testkit::{on_every_store, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

/// One pull; an error comes back as its message.
fn pull(base: &str, cursor: u64, wait: u64) -> Result<PullResponse, String> {
    let response =
        ureq::get(&format!("{base}/v1/pull?cursor={cursor}&wait={wait}")).call().map_err(|e| e.to_string())?;
    Ok(response.into_json().expect("a pull page"))
}

fn through_another_process_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let other = server.another_instance();
    let device = Device::init(dir.path(), "laptop", &server.url());
    device.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, NULL);");
    device.sync().unwrap();
    let cursor = pull(&other.url(), 0, 0).unwrap().cursor;

    // Waiting on one process; the write arrives through the other.
    let base = other.url();
    let started = Instant::now();
    let waiting = std::thread::spawn(move || pull(&base, cursor, 30));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "{}: nothing to answer yet", store.name());
    device.exec("INSERT INTO contacts VALUES ('b', 'Bo', NULL, NULL);");
    device.sync().unwrap();
    let page = waiting.join().unwrap().unwrap();
    let waited = started.elapsed();
    assert_eq!(page.changes.len(), 1, "{}", store.name());
    assert!(page.cursor > cursor);
    assert!(waited < Duration::from_secs(10), "{}: answered {waited:?} after asking", store.name());
}

#[test]
fn a_waiting_pull_answers_when_another_server_process_commits() {
    on_every_store(through_another_process_on);
}

#[test]
fn a_server_shutting_down_answers_its_waiting_pulls() {
    let dir = TempDir::new().unwrap();
    let mut server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let base = server.url();
    let waiting = std::thread::spawn(move || pull(&base, 0, 60));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(10), "the shutdown waited {:?}", started.elapsed());
    if let Ok(page) = waiting.join().unwrap() {
        assert!(page.changes.is_empty());
    }
}

/// A pull with more to come fetches the next page ahead; the next pull gets
/// it only when it asks for exactly that page, and a pull for anything else
/// is answered afresh.
#[test]
fn a_page_fetched_ahead_is_only_the_answer_to_the_pull_that_asks_for_it() {
    use rowsync_client::{HttpTransport, Transport};
    use rowsync_proto::{PullRequest, SiteId};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let writer = Device::init(dir.path(), "writer", &server.url());
    let rows: Vec<String> = (0..30).map(|i| format!("('k{i:02}', 'name {i}')")).collect();
    writer.exec(&format!("INSERT INTO contacts (id, name) VALUES {}", rows.join(", ")));
    writer.sync().unwrap();

    let site = SiteId::from_bytes([7; 16]);
    let request = |cursor, limit| PullRequest { site: site.clone(), cursor, limit, known: None, full: None };
    let ahead = HttpTransport::new(&server.url(), None);
    let fresh = || HttpTransport::new(&server.url(), None);
    let first = ahead.pull(&request(0, 10)).unwrap();
    assert!(first.more);
    // Not the page fetched ahead: the same page again, then another size.
    assert_eq!(ahead.pull(&request(0, 10)).unwrap(), first);
    assert_eq!(ahead.pull(&request(0, 5)).unwrap(), fresh().pull(&request(0, 5)).unwrap());
    // The pages in a row, each as a transport without pages ahead answers.
    let mut cursor = 0;
    let mut pages = 0;
    loop {
        let page = ahead.pull(&request(cursor, 10)).unwrap();
        assert_eq!(page, fresh().pull(&request(cursor, 10)).unwrap(), "page after {cursor}");
        pages += 1;
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, 3);

    // A page fetched ahead and asked for late (the sync was interrupted)
    // is not the answer: the row changed meanwhile has moved on.
    let first = ahead.pull(&request(0, 10)).unwrap();
    writer.exec("UPDATE contacts SET name = 'moved on' WHERE id = 'k12'");
    writer.sync().unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    let late = ahead.pull(&request(first.cursor, 10)).unwrap();
    assert_eq!(late, fresh().pull(&request(first.cursor, 10)).unwrap());
    assert!(late.changes.iter().all(|c| c.key != vec![rowsync_proto::Value::Text("k12".into())]));
}
