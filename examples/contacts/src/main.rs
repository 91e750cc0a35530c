//! The contacts app of the mission, written only against rowsync's public
//! client API. The app itself is ordinary SQLite code: it reads and writes
//! the `contacts` table with its own connection; rowsync captures the writes
//! and its background agent syncs them by itself (see `tui`).
//!
//! ```text
//! cargo run -p contacts -- laptop.db init http://127.0.0.1:7878 [TOKEN]   # or $ROWSYNC_TOKEN
//! cargo run -p contacts -- laptop.db          # the interactive app
//! cargo run -p contacts -- laptop.db add "Ada Lovelace" ada@example.org "+44 20 7946 0100"
//! cargo run -p contacts -- laptop.db set-phone <id> "+44 20 7946 0999"
//! cargo run -p contacts -- laptop.db list
//! cargo run -p contacts -- laptop.db sync
//! ```

mod tui;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rowsync_client::{new_key, sync, HttpTransport, Replica, SyncOptions, Transport};
use rusqlite::{params, Connection};

fn main() {
    if let Err(error) = run() {
        eprintln!("contacts: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [db] = args.as_slice() {
        return tui::run(Path::new(db));
    }
    let [db, command, rest @ ..] = args.as_slice() else {
        bail!(
            "usage: contacts DB [init URL [TOKEN] | add NAME [EMAIL] [PHONE] | set-phone ID PHONE | delete ID | list | sync] \
             (with no command: the interactive app)"
        );
    };
    let db = PathBuf::from(db);
    match (command.as_str(), rest) {
        ("init", [url, token @ ..]) if token.len() <= 1 => {
            let token = token.first().cloned().or_else(|| std::env::var("ROWSYNC_TOKEN").ok());
            let schema = HttpTransport::new(url, token.clone()).schema()?;
            Replica::init(&db, url, &schema, token.as_deref())?;
            println!("{} now syncs with {url}", db.display());
        }
        ("add", [name, more @ ..]) => {
            let id = new_key();
            app(&db)?.execute(
                "INSERT INTO contacts (id, name, email, phone) VALUES (?, ?, ?, ?)",
                params![id, name, more.first(), more.get(1)],
            )?;
            println!("{id}");
        }
        ("set-phone", [id, phone]) => {
            let n = app(&db)?.execute("UPDATE contacts SET phone = ? WHERE id = ?", params![phone, id])?;
            if n == 0 {
                bail!("no contact {id}");
            }
        }
        ("delete", [id]) => {
            app(&db)?.execute("DELETE FROM contacts WHERE id = ?", [id])?;
        }
        ("list", []) => {
            let conn = app(&db)?;
            let mut statement =
                conn.prepare("SELECT id, name, coalesce(email, ''), coalesce(phone, '') FROM contacts ORDER BY name")?;
            let rows = statement.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })?;
            for row in rows {
                let (id, name, email, phone) = row?;
                println!("{id}  {name:<24} {email:<28} {phone}");
            }
        }
        ("sync", []) => {
            let mut replica = Replica::open(&db)?;
            let transport = HttpTransport::connect(&replica.server_access()?)?;
            let report = sync(&mut replica, &transport, SyncOptions::default())?;
            println!("pulled {}, pushed {}", report.pulled, report.pushed);
        }
        _ => bail!("unknown command {command:?} or wrong arguments"),
    }
    Ok(())
}

/// The app's own connection: plain SQLite, nothing of rowsync loaded.
fn app(db: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(db).with_context(|| format!("open {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}
