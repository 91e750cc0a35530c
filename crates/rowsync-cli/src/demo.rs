//! `rowsync demo`: the mission in one command. A server on the embedded
//! store, two devices (a laptop and a phone) editing the same contacts while
//! the server is down, then sync, and both devices side by side; then a
//! table under the manual strategy, where a conflict is handed to the user;
//! last, both devices under their background agents, a write arriving by
//! itself.
//!
//! The devices write through plain SQLite connections, as an app would;
//! rowsync's capture triggers do the rest.

use std::net::SocketAddr;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Context;
use rowsync_client::{
    new_key, sync, Agent, AgentOptions, HttpTransport, Replica, Resolution, Side, State, SyncOptions, Transport,
};
use rowsync_core::parse_schema;
use rowsync_server::{BackgroundServer, DatabaseUrl, ServerConfig};
use rusqlite::{params, Connection};

const SCHEMA: &str = "CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    phone TEXT
);
CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);";

struct Device {
    name: &'static str,
    replica: Replica,
    app: Connection,
}

impl Device {
    fn new(dir: &Path, name: &'static str, url: &str, token: &str) -> anyhow::Result<Device> {
        let path = dir.join(format!("{name}.db"));
        let schema = HttpTransport::new(url, Some(token.to_string())).schema()?;
        let replica = Replica::init(&path, url, &schema, Some(token))?;
        let app = Connection::open(&path)?;
        app.busy_timeout(Duration::from_secs(10))?;
        Ok(Device { name, replica, app })
    }

    fn sync(&mut self) -> Result<rowsync_client::SyncReport, rowsync_client::ClientError> {
        let transport = HttpTransport::connect(&self.replica.server_access()?)?;
        sync(&mut self.replica, &transport, SyncOptions::default())
    }

    fn contacts(&self) -> anyhow::Result<Vec<[String; 3]>> {
        let mut statement =
            self.app.prepare("SELECT name, coalesce(email, '-'), coalesce(phone, '-') FROM contacts ORDER BY name")?;
        let rows = statement.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn edit(&self, what: &str, sql: &str, values: impl rusqlite::Params) -> anyhow::Result<()> {
        self.app.execute(sql, values)?;
        println!("    {:<7} {what}", format!("{}:", self.name));
        // Let the wall clock move on, so "later" in the story is later in time.
        sleep(Duration::from_millis(5));
        Ok(())
    }
}

pub fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let database = dir.path().join("server.db");
    let mut config = ServerConfig::new(DatabaseUrl::Sqlite(database.clone()), Some(parse_schema(SCHEMA)?));
    config.conflicts.insert("notes".into(), rowsync_proto::ConflictStrategy::Manual);
    let any_port: SocketAddr = "127.0.0.1:0".parse()?;
    let server = BackgroundServer::start(config.clone(), any_port)?;
    let addr = server.addr;
    let url = server.url();
    println!("rowsync demo: two devices, one server, offline edits and conflicts\n");
    println!("[1] server running at {url} (embedded SQLite store in {})", dir.path().display());
    // Both devices are Ada's: one user, one token (`rowsync token create`).
    let token = crate::tokens::issue(&config.database, "ada")?;
    println!("    it asks every request for a token; Ada's devices share hers ({}…)", &token[..12]);

    let mut laptop = Device::new(dir.path(), "laptop", &url, &token)?;
    let mut phone = Device::new(dir.path(), "phone", &url, &token)?;
    let (ada, grace, linus) = (new_key(), new_key(), new_key());
    for (id, name, email, tel) in [
        (&ada, "Ada Lovelace", "ada@example.org", "+44 20 7946 0100"),
        (&grace, "Grace Hopper", "grace@example.org", "+1 202 555 0101"),
        (&linus, "Linus Pauling", "linus@example.org", "+1 503 555 0199"),
    ] {
        laptop.app.execute("INSERT INTO contacts VALUES (?, ?, ?, ?)", params![id, name, email, tel])?;
    }
    let note = new_key();
    laptop.app.execute("INSERT INTO notes VALUES (?, 'Call Ada about the engine')", [&note])?;
    laptop.sync()?;
    phone.sync()?;
    println!(
        "[2] laptop and phone are replicas; the laptop added 3 contacts and a note (text UUID keys) and both synced"
    );

    server.stop();
    println!("\n[3] the server is down; both devices keep working offline:");
    laptop.edit(
        "Ada's phone   -> +44 20 7946 0999",
        "UPDATE contacts SET phone = '+44 20 7946 0999' WHERE id = ?",
        [&ada],
    )?;
    phone.edit(
        "Ada's email   -> ada@analytical.engine",
        "UPDATE contacts SET email = 'ada@analytical.engine' WHERE id = ?",
        [&ada],
    )?;
    laptop.edit(
        "Grace's phone -> +1 202 555 0111",
        "UPDATE contacts SET phone = '+1 202 555 0111' WHERE id = ?",
        [&grace],
    )?;
    phone.edit(
        "Grace's phone -> +1 202 555 0122 (later)",
        "UPDATE contacts SET phone = '+1 202 555 0122' WHERE id = ?",
        [&grace],
    )?;
    laptop.edit(
        "Linus's email -> linus@caltech.edu",
        "UPDATE contacts SET email = 'linus@caltech.edu' WHERE id = ?",
        [&linus],
    )?;
    phone.edit("deletes Linus Pauling (later)", "DELETE FROM contacts WHERE id = ?", [&linus])?;
    laptop.edit(
        "the note      -> Call Ada on Tuesday",
        "UPDATE notes SET body = 'Call Ada on Tuesday' WHERE id = ?",
        [&note],
    )?;
    phone.edit(
        "the note      -> Call Ada on Friday",
        "UPDATE notes SET body = 'Call Ada on Friday' WHERE id = ?",
        [&note],
    )?;
    laptop.edit(
        "adds Katherine Johnson",
        "INSERT INTO contacts VALUES (?, 'Katherine Johnson', 'kj@example.org', NULL)",
        [new_key()],
    )?;
    match laptop.sync() {
        Err(e) if e.is_unreachable() => println!(
            "    laptop tries to sync: server unreachable, {} change(s) stay queued",
            laptop.replica.status()?.pending_changes
        ),
        Err(e) => return Err(e.into()),
        Ok(_) => anyhow::bail!("the server was supposed to be down"),
    }

    let server = BackgroundServer::start(config, addr)?;
    println!("\n[4] the server is back at {}; laptop, phone, laptop sync", server.url());
    for device in [&mut laptop, &mut phone] {
        let report = device.sync()?;
        println!("    {:<7} pulled {}, pushed {}", format!("{}:", device.name), report.pulled, report.pushed);
    }
    let report = laptop.sync()?;
    println!("    {:<7} pulled {}, pushed {}", "laptop:", report.pulled, report.pushed);

    let left = laptop.contacts()?;
    let right = phone.contacts()?;
    let store = Connection::open(&database)?;
    let mut statement =
        store.prepare("SELECT name, coalesce(email, '-'), coalesce(phone, '-') FROM contacts ORDER BY name")?;
    let on_server: Vec<[String; 3]> =
        statement.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]))?.collect::<Result<_, _>>()?;

    println!("\n[5] contacts, side by side:");
    let width = 52;
    println!("    {:<width$} | phone", "laptop");
    println!("    {}-+-{}", "-".repeat(width), "-".repeat(width));
    for i in 0..left.len().max(right.len()) {
        let show =
            |rows: &[[String; 3]]| rows.get(i).map(|r| format!("{}, {}, {}", r[0], r[1], r[2])).unwrap_or_default();
        println!("    {:<width$} | {}", show(&left), show(&right));
    }
    let same = left == right && left == on_server;
    println!("\n    laptop, phone and server hold identical contacts: {}", if same { "yes" } else { "NO" });

    // The story below is checked against what the devices hold, not assumed.
    let find = |name: &str| left.iter().find(|r| r[0] == name);
    let ada_ok = find("Ada Lovelace").is_some_and(|r| r[1] == "ada@analytical.engine" && r[2] == "+44 20 7946 0999");
    let grace_ok = find("Grace Hopper").is_some_and(|r| r[2] == "+1 202 555 0122");
    let linus_ok = find("Linus Pauling").is_none();
    if !(ada_ok && grace_ok && linus_ok) {
        anyhow::bail!("the conflicts were not decided as the demo explains: this is a bug in rowsync");
    }
    println!("\n[6] how each conflict was decided (field-level last writer wins):");
    println!("    Ada:   different fields on each device, so both edits were kept (new phone and new email)");
    println!("    Grace: the same field on both devices; the phone wrote later, so its number won everywhere");
    println!("    Linus: the laptop edited the email, the phone deleted him later; the later delete won");
    println!("\n    versions are hybrid logical clocks (wall time + counter, device id as tie-break),");
    println!("    so every replica picks the same winner whatever order it syncs in.");
    if !same {
        anyhow::bail!("the devices did not converge");
    }
    ask_the_user(&mut laptop, &mut phone)?;
    by_itself(dir.path(), &laptop, &phone)
}

/// Both devices under their background agents: a write on one is on the
/// other moments later, with no sync command.
fn by_itself(dir: &Path, laptop: &Device, phone: &Device) -> anyhow::Result<()> {
    println!("\n[8] both devices under their background agents (what `rowsync watch` runs):");
    let start = |device: &Device| Agent::start(&dir.join(format!("{}.db", device.name)), AgentOptions::default());
    let (on_laptop, on_phone) = (start(laptop)?, start(phone)?);
    let started = Instant::now();
    while [&on_laptop, &on_phone].iter().any(|a| a.status().state != State::Idle) {
        if started.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("the agents did not get in sync: {:?}", on_phone.status().state);
        }
        sleep(Duration::from_millis(5));
    }
    let id = new_key();
    let started = Instant::now();
    laptop
        .app
        .execute("INSERT INTO contacts (id, name, email) VALUES (?, 'Dorothy Vaughan', 'dv@example.org')", [&id])?;
    let arrived = |conn: &Connection| -> rusqlite::Result<bool> {
        conn.query_row("SELECT count(*) FROM contacts WHERE id = ?", [&id], |r| r.get::<_, i64>(0)).map(|n| n == 1)
    };
    while !arrived(&phone.app)? {
        if started.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("the laptop's write did not reach the phone by itself: this is a bug in rowsync");
        }
        sleep(Duration::from_micros(200));
    }
    println!(
        "    laptop: INSERT Dorothy Vaughan; the phone could read it {:.1} ms later, with no sync command",
        started.elapsed().as_secs_f64() * 1000.0
    );
    on_laptop.stop()?;
    on_phone.stop()?;
    Ok(())
}

/// The notes table is under the manual strategy: the server kept the
/// laptop's note (it arrived first) and recorded the phone's as a conflict.
fn ask_the_user(laptop: &mut Device, phone: &mut Device) -> anyhow::Result<()> {
    let note = |device: &Device| -> anyhow::Result<String> {
        Ok(device.app.query_row("SELECT body FROM notes", [], |r| r.get(0))?)
    };
    println!(
        "
[7] notes are under the manual strategy (\"ask the user\"): the server kept the note that"
    );
    println!("    arrived first and recorded the other side as a conflict, which every replica received:");
    let conflicts = phone.replica.conflicts()?;
    let [conflict] = conflicts.as_slice() else {
        anyhow::bail!("the phone should hold exactly one conflict, it holds {}", conflicts.len());
    };
    println!("    the phone's open conflict, as `rowsync conflicts phone.db` lists it:");
    println!("      {}  notes {}", conflict.id, conflict.column);
    println!("        local   \"{}\"  by this device", conflict.local.value);
    println!("        remote  \"{}\"  by the laptop  (shown)", conflict.remote.value);
    println!("    phone:  rowsync resolve phone.db {} --keep local", &conflict.id[..8]);
    phone.replica.resolve(&conflict.id, &Resolution::Keep(Side::Local))?;
    phone.sync()?;
    laptop.sync()?;
    let (on_laptop, on_phone) = (note(laptop)?, note(phone)?);
    println!("    after both sync: laptop \"{on_laptop}\", phone \"{on_phone}\"");
    let open = laptop.replica.status()?.open_conflicts + phone.replica.status()?.open_conflicts;
    if on_laptop != "Call Ada on Friday" || on_phone != on_laptop || open != 0 {
        anyhow::bail!("the resolution did not reach every replica: this is a bug in rowsync");
    }
    println!("    the resolution was an ordinary change: it synced everywhere and closed the conflict.");
    Ok(())
}
