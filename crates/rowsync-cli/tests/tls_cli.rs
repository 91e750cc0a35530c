//! HTTPS from the command line: `rowsync serve --tls-cert --tls-key` with a
//! certificate made here by a CA of the test's own; a replica that trusts
//! that CA (`init --ca-file`) syncs, and one that does not, or a server
//! whose certificate names another host, is refused before anything is
//! sent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{free_port, ROWSYNC};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

fn rowsync(args: &[&str]) -> Output {
    Command::new(ROWSYNC).args(args).env_remove("ROWSYNC_TOKEN").output().expect("run rowsync")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn one_line_failure(output: &Output, code: i32, needle: &str) {
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

/// A CA, written to `dir/ca.pem`, that signs server certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Ca { issuer, pem }
    }

    /// A server certificate for `names`, and its key: the two files.
    fn server(&self, dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

#[test]
fn a_replica_trusting_the_servers_ca_syncs_over_https_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("schema.sql"), "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL);").unwrap();
    let database = format!("sqlite://{}", path("server.db"));
    let token =
        text(&rowsync(&["token", "create", "--database", &database, "--user", "ada"]).stdout).trim().to_string();

    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.server(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let port = free_port();
    let _server = common::serve(
        &[
            "--database",
            &database,
            "--schema",
            &path("schema.sql"),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        port,
    );
    let url = format!("https://127.0.0.1:{port}");
    let ca_file = ca.pem.to_str().unwrap();

    // Without the CA the system's roots do not vouch for the server: init
    // says so in one line and makes nothing.
    let stranger = path("stranger.db");
    let refused = rowsync(&["init", &stranger, "--server", &url, "--token", &token]);
    one_line_failure(&refused, 1, "did not prove who it is");
    assert!(text(&refused.stderr).contains("--ca-file"), "the message says what to do");
    assert!(!Path::new(&stranger).exists(), "a refused init makes no file");

    // A file that holds no certificate is named, and nothing is made.
    std::fs::write(path("junk.pem"), "not a certificate\n").unwrap();
    let junk = rowsync(&["init", &stranger, "--server", &url, "--token", &token, "--ca-file", &path("junk.pem")]);
    one_line_failure(&junk, 1, "cannot trust these certificates");
    assert!(!Path::new(&stranger).exists());

    // Trusting the CA: init, a write, a sync; the CA is kept in the replica,
    // so the later sync needs no flag.
    let laptop = path("laptop.db");
    let init = rowsync(&["init", &laptop, "--server", &url, "--token", &token, "--ca-file", ca_file]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(!text(&init.stderr).contains("warning"), "no clear-text warning over https: {}", text(&init.stderr));
    rusqlite::Connection::open(&laptop).unwrap().execute("INSERT INTO contacts VALUES ('k1', 'Kim')", []).unwrap();
    let synced = rowsync(&["sync", &laptop]);
    assert!(synced.status.success(), "{}", text(&synced.stderr));
    assert!(text(&synced.stdout).contains("pushed 1 change(s)"), "{}", text(&synced.stdout));

    // Another device reaches the same server by its name.
    let phone = path("phone.db");
    let by_name = format!("https://localhost:{port}");
    let init = rowsync(&["init", &phone, "--server", &by_name, "--token", &token, "--ca-file", ca_file]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(rowsync(&["sync", &phone]).status.success());
    let name: String = rusqlite::Connection::open(&phone)
        .unwrap()
        .query_row("SELECT name FROM contacts WHERE id = 'k1'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(name, "Kim");

    // A certificate from the same CA for another host does not pass for
    // this one.
    let (cert, key) = ca.server(dir.path(), "elsewhere", &["elsewhere.example"]);
    let other_port = free_port();
    let _impostor = common::serve(
        &["--database", &database, "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        other_port,
    );
    let impostor = format!("https://127.0.0.1:{other_port}");
    let tablet = path("tablet.db");
    let refused = rowsync(&["init", &tablet, "--server", &impostor, "--token", &token, "--ca-file", ca_file]);
    one_line_failure(&refused, 1, "did not prove who it is");
    assert!(!Path::new(&tablet).exists());
}

#[test]
fn serve_refuses_a_certificate_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("server.db").display());
    let ca = Ca::new(dir.path(), "ca");
    let (cert, _) = ca.server(dir.path(), "one", &["localhost"]);
    let (_, other_key) = ca.server(dir.path(), "two", &["localhost"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let (cert, other_key) = (cert.to_str().unwrap(), other_key.to_str().unwrap());

    let mismatched =
        rowsync(&["serve", "--database", &database, "--listen", &listen, "--tls-cert", cert, "--tls-key", other_key]);
    one_line_failure(&mismatched, 1, "cannot serve together");
    let missing = rowsync(&["serve", "--database", &database, "--listen", &listen, "--tls-cert", cert]);
    assert_eq!(missing.status.code(), Some(2), "a certificate without its key is bad usage");
    assert!(text(&missing.stderr).contains("--tls-key"));
    assert!(!dir.path().join("server.db").exists(), "refused before anything was made");
}
