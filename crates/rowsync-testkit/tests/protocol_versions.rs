//! A replica and a server that speak no protocol version in common (one of
//! them upgraded, the other not): the replica refuses to read the server's
//! answers, says which side to upgrade, and keeps its changes queued; once
//! it talks to a server it shares a version with, they sync. (The reverse,
//! a server refusing a client, is in `rowsync-server`'s `http_api.rs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use rowsync_client::{ClientError, Replica};
use rowsync_proto::Protocols;
use rowsync_testkit::{Device, TestServer, CONTACTS_SCHEMA};
use tempfile::TempDir;

/// A server of another rowsync, speaking protocol versions `protocols`
/// only: it answers every request with them stated and the refusal today's
/// server gives a client it shares no version with. Its base URL.
fn server_speaking(protocols: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink()).unwrap();
            let body = r#"{"code":"protocol_mismatch","message":"this client speaks another protocol"}"#;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nrowsync-protocol: {protocols}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url
}

#[test]
fn a_server_too_new_or_too_old_is_refused_with_the_side_to_upgrade_and_nothing_is_lost() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada')");
    let schema = laptop.replica().schema().clone();
    let pointed_at = |url: &str| Replica::init(&laptop.path, url, &schema, None).unwrap();

    pointed_at(&server_speaking("2-3"));
    let error = laptop.sync().expect_err("a server too new is refused");
    assert!(matches!(error, ClientError::ServerTooNew { server: Protocols { oldest: 2, newest: 3 }, .. }), "{error:?}");
    assert!(error.to_string().contains("upgrade rowsync on this device"), "{error}");
    pointed_at(&server_speaking("0"));
    let error = laptop.sync().expect_err("a server too old is refused");
    assert!(matches!(error, ClientError::ServerTooOld { .. }), "{error:?}");
    assert!(error.to_string().contains("upgrade the server"), "{error}");
    assert_eq!(laptop.pending(), 1, "the change stays queued");
    let shown = laptop.replica().status().unwrap().last_error.unwrap_or_default();
    assert!(shown.contains("upgrade the server"), "status shows {shown:?}");

    // Back with a server it shares a version with, it syncs what it kept.
    pointed_at(&server.url());
    laptop.sync().unwrap();
    assert_eq!(laptop.pending(), 0);
    assert_eq!(server.rows("SELECT id, name FROM contacts").len(), 1);
}
