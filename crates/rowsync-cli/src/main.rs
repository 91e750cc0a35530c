//! `rowsync`: the one binary. Options are parsed here, validated into the
//! libraries' configuration, and handed over; no sync logic lives here.
//!
//! Exit codes: 0 success, 1 error, 2 bad usage, 3 server unreachable
//! (`sync`; local changes stay queued), 4 the server refused the replica's
//! token.

mod bench;
mod conflicts;
mod demo;
mod tokens;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use rowsync_client::transport::cleartext_warning;
use rowsync_client::{sync_showing, ClientError, HttpTransport, Replica, ServerAccess, Side, SyncOptions, Transport};
use rowsync_core::{parse_schema, schema_warnings};
use rowsync_server::{Auth, DatabaseUrl, Limits, PoolSettings, ServerConfig, Tls};

/// Exit code when the server cannot be reached.
const EXIT_UNREACHABLE: u8 = 3;
/// Exit code when the server refuses the replica's token.
const EXIT_UNAUTHORIZED: u8 = 4;

#[derive(Parser)]
#[command(name = "rowsync", version, about = "Offline-first sync for SQLite files", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync server.
    Serve {
        /// sqlite://PATH (the embedded default), postgres://USER@HOST/DB or mysql://USER@HOST/DB.
        #[arg(long, default_value = "sqlite://rowsync-server.db")]
        database: String,
        /// Most connections to a PostgreSQL or MySQL database.
        #[arg(long, default_value_t = 10)]
        pool_size: u32,
        /// Seconds a request waits for a database connection before answering 503.
        #[arg(long, default_value_t = 5)]
        db_timeout: u64,
        /// A file of CREATE TABLE statements: the synced tables. Needed the
        /// first time; later starts serve the schema the database holds.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Server settings (TOML): conflict strategy per table, clock skew bound.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: SocketAddr,
        /// Largest request body accepted, in MiB, as sent and after
        /// decompression. A row larger than this can never be pushed:
        /// clients set it aside. (The settings file can set the two apart.)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        max_body_mib: Option<u32>,
        /// Serve without tokens: anyone who reaches the server reads and
        /// writes everything. Refused unless --listen is a loopback address.
        #[arg(long)]
        insecure_no_auth: bool,
        /// Serve HTTPS with this certificate chain (PEM, the server's own
        /// certificate first).
        #[arg(long, requires = "tls_key", value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert", value_name = "FILE")]
        tls_key: Option<PathBuf>,
    },
    /// Make a SQLite file a replica of a server's schema.
    Init {
        /// The local SQLite file (created when missing).
        local: PathBuf,
        /// The server's base URL, such as http://127.0.0.1:7878.
        #[arg(long)]
        server: String,
        /// The token sent with every request (make one with `rowsync token
        /// create`); kept in the replica. Running init again with a new
        /// token replaces it.
        #[arg(long, env = "ROWSYNC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Trust only the CA certificate(s) in this PEM file for the
        /// server's HTTPS, instead of the system's roots (for a server
        /// whose certificate your own CA made). Kept in the replica.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Pull and push until both directions are caught up.
    Sync {
        local: PathBuf,
        /// Most changes per pull page (pages are sized so that writing one
        /// takes about 25 ms, the app's writes waiting meanwhile).
        #[arg(long, default_value_t = 5000)]
        pull_limit: u32,
        /// Outbox entries per push batch.
        #[arg(long, default_value_t = 2000)]
        push_limit: usize,
    },
    /// Keep syncing in the foreground: on local writes, on news from the
    /// server (long-poll), with backoff while offline. Stops on SIGINT or
    /// SIGTERM.
    Watch {
        local: PathBuf,
        /// One JSON status per line instead of a live status line.
        #[arg(long)]
        json: bool,
    },
    /// Show pending changes, cursor, last sync and last error.
    Status {
        local: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the open conflicts of tables under the manual strategy.
    Conflicts {
        /// The replica file.
        local: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Resolve an open conflict with an ordinary write that syncs everywhere.
    #[command(group(clap::ArgGroup::new("how").required(true).args(["keep", "set"])))]
    Resolve {
        /// The replica file.
        local: PathBuf,
        /// The conflict's id (or an unambiguous prefix of at least 4 digits).
        id: String,
        /// Keep this device's value (local) or the other one (remote).
        #[arg(long, value_enum)]
        keep: Option<KeepSide>,
        /// Write COLUMN=VALUE instead (repeatable; the column in conflict must
        /// be among them). VALUE is read as the column's type; NULL is SQL NULL.
        #[arg(long, value_name = "COLUMN=VALUE", num_args = 1..)]
        set: Vec<String>,
    },
    /// Make, list and revoke the tokens a server accepts (on its database;
    /// the server may be running).
    Token {
        #[command(subcommand)]
        what: tokens::TokenCommand,
    },
    /// Show the whole offline-first story on the embedded server.
    Demo,
    /// Measure capture overhead, sync throughput and latency: every figure
    /// beside its reference and its target, in one report.
    Bench {
        #[command(subcommand)]
        what: Option<BenchCommand>,
        /// Rows per scenario; several sizes (10000,100000,1000000) make a
        /// run each, to show the cost per row stays flat.
        #[arg(long, default_value = "100000", value_delimiter = ',', global = true)]
        rows: Vec<usize>,
        /// A server database to measure on (repeat for several; default:
        /// the embedded SQLite store). The bench makes a scratch database
        /// on that server for each run and drops it afterwards.
        #[arg(long, global = true)]
        database: Vec<String>,
        /// Print the report as JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeepSide {
    Local,
    Remote,
}

#[derive(Subcommand, Clone)]
enum BenchCommand {
    /// Captured against plain writes, through Python's sqlite3.
    Capture {
        /// Rounds per scenario (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// A backlog pushed and pulled through a real server.
    Sync,
    /// Writes made directly in the server's database: plain table against
    /// a synced one, then a new replica syncing them.
    Direct,
    /// From a commit on one device to readable on another, both under
    /// their background agents; and the CPU of idle agents.
    Latency {
        /// Writes measured.
        #[arg(long, default_value_t = 200)]
        writes: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,rowsync=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rowsync: {}", one_line(&error));
            match error.downcast_ref::<ClientError>() {
                Some(e) if e.is_unreachable() => ExitCode::from(EXIT_UNREACHABLE),
                Some(e) if e.is_unauthorized() => ExitCode::from(EXIT_UNAUTHORIZED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes on one line.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            database,
            schema,
            config,
            listen,
            pool_size,
            db_timeout,
            max_body_mib,
            insecure_no_auth,
            tls_cert,
            tls_key,
        } => {
            let pool =
                PoolSettings { max_connections: pool_size.max(1), acquire_timeout: Duration::from_secs(db_timeout) };
            let auth = if insecure_no_auth { Auth::Off } else { Auth::Tokens };
            let body_bytes = max_body_mib.map(|mib| mib as usize * 1024 * 1024);
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(Tls::from_pem_files(&cert, &key)?),
                _ => None,
            };
            serve(&database, schema.as_deref(), config, Listen { addr: listen, tls }, pool, body_bytes, auth)
        }
        Command::Init { local, server, token, ca_file } => init(&local, &server, token, ca_file.as_deref()),
        Command::Sync { local, pull_limit, push_limit } => {
            sync_command(&local, SyncOptions { pull_limit, push_limit, ..SyncOptions::default() })
        }
        Command::Watch { local, json } => watch::watch(&local, json),
        Command::Status { local, json } => status(&local, json),
        Command::Conflicts { local, json } => conflicts::list(&local, json),
        Command::Resolve { local, id, keep, set } => {
            let how = match keep {
                Some(KeepSide::Local) => conflicts::How::Keep(Side::Local),
                Some(KeepSide::Remote) => conflicts::How::Keep(Side::Remote),
                None => conflicts::How::Set(set),
            };
            conflicts::resolve(&local, &id, how)
        }
        Command::Token { what } => tokens::run(what),
        Command::Demo => demo::run(),
        Command::Bench { what, rows, database, json } => {
            let which = match what {
                None => bench::Which::All,
                Some(BenchCommand::Capture { rounds }) => bench::Which::Capture { rounds },
                Some(BenchCommand::Sync) => bench::Which::Sync,
                Some(BenchCommand::Latency { writes }) => bench::Which::Latency { writes },
                Some(BenchCommand::Direct) => bench::Which::Direct,
            };
            // As typed, less the binary's path and any password in a URL.
            let args = std::env::args().skip(1).map(|arg| match DatabaseUrl::parse(&arg) {
                Ok(url) if arg.contains("://") => url.redacted(),
                _ => arg,
            });
            let command = std::iter::once("rowsync".to_string()).chain(args).collect::<Vec<_>>().join(" ");
            bench::run(bench::Options { which, rows, databases: database, json, command })
        }
    }
}

/// Where `rowsync serve` listens, and with which certificate.
struct Listen {
    addr: SocketAddr,
    tls: Option<Tls>,
}

fn serve(
    database: &str,
    schema: Option<&Path>,
    config: Option<PathBuf>,
    Listen { addr: listen, tls }: Listen,
    pool: PoolSettings,
    body_bytes: Option<usize>,
    auth: Auth,
) -> anyhow::Result<()> {
    if auth == Auth::Off {
        rowsync_server::check_insecure_listen(listen).map_err(|e| anyhow!(e))?;
    }
    let database = DatabaseUrl::parse(database).map_err(|e| anyhow!("--database: {e}"))?;
    let settings = config.map(|path| read_settings(&path)).transpose()?;
    let schema = match schema {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read schema file {}", path.display()))?;
            let schema = parse_schema(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            for warning in schema_warnings(&schema) {
                eprintln!("rowsync: warning: {warning}");
            }
            Some(schema)
        }
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut config = ServerConfig::new(database.clone(), schema);
        config.pool = pool;
        config.auth = auth;
        let scheme = if tls.is_some() { "https" } else { "http" };
        config.tls = tls;
        if let Some(settings) = settings {
            for (name, table) in settings.tables {
                if let Some(conflict) = table.conflict {
                    config.conflicts.insert(name.clone(), conflict);
                }
                if let Some(owner) = table.owner {
                    config.owners.insert(name, owner);
                }
            }
            if let Some(secs) = settings.max_clock_ahead_secs {
                config.max_clock_ahead = Duration::from_secs(secs);
            }
            if let Some(secs) = settings.tombstone_retention_secs {
                config.tombstone_retention = (secs > 0).then(|| Duration::from_secs(secs));
            }
            config.limits = settings.limits.into_limits()?;
        }
        if let Some(bytes) = body_bytes {
            config.limits.body_bytes = bytes;
            config.limits.compressed_body_bytes = bytes;
        }
        let app = rowsync_server::build(&config).await?;
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let tokens = match auth {
            Auth::Tokens => "tokens required",
            Auth::Off => "WITHOUT TOKENS (--insecure-no-auth): anyone who reaches it reads and writes everything",
        };
        println!("rowsync: serving {} on {scheme}://{} ({tokens})", database.redacted(), listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        rowsync_server::serve_router(app, listener, shutdown).await?;
        Ok(())
    })
}

/// The server settings file (`--config`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Versions further ahead of the server's clock are refused.
    max_clock_ahead_secs: Option<u64>,
    /// Deletes are forgotten this long after their row's last write; 0
    /// keeps them forever.
    tombstone_retention_secs: Option<u64>,
    #[serde(default)]
    limits: LimitSettings,
    #[serde(default)]
    tables: std::collections::BTreeMap<String, TableSettings>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSettings {
    conflict: Option<rowsync_proto::ConflictStrategy>,
    /// Makes the table private: the column holding each row's owner.
    owner: Option<String>,
}

/// `[limits]` of the settings file; what is left out keeps its default.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSettings {
    body_mib: Option<u32>,
    compressed_body_mib: Option<u32>,
    push_changes: Option<usize>,
    page_changes: Option<u32>,
    wait_secs: Option<u64>,
    /// 0: no limit.
    requests_per_second: Option<u32>,
    burst: Option<u32>,
}

impl LimitSettings {
    fn into_limits(self) -> anyhow::Result<Limits> {
        let mut limits = Limits::default();
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(anyhow!("limits.{name} must be at least 1"))
            } else {
                Ok(value)
            }
        };
        if let Some(mib) = self.body_mib {
            limits.body_bytes = positive("body_mib", mib.into())? as usize * 1024 * 1024;
        }
        if let Some(mib) = self.compressed_body_mib {
            limits.compressed_body_bytes = positive("compressed_body_mib", mib.into())? as usize * 1024 * 1024;
        }
        if let Some(n) = self.push_changes {
            limits.push_changes = positive("push_changes", n as u64)? as usize;
        }
        if let Some(n) = self.page_changes {
            limits.page_changes = positive("page_changes", n.into())? as u32;
        }
        if let Some(secs) = self.wait_secs {
            limits.wait = Duration::from_secs(secs);
        }
        if let Some(rate) = self.requests_per_second {
            limits.requests_per_second = std::num::NonZeroU32::new(rate);
        }
        if let Some(burst) = self.burst {
            limits.burst =
                std::num::NonZeroU32::new(burst).ok_or_else(|| anyhow!("limits.burst must be at least 1"))?;
        }
        Ok(limits)
    }
}

fn read_settings(path: &Path) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read settings file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message()))
}

fn init(local: &Path, server: &str, token: Option<String>, ca_file: Option<&Path>) -> anyhow::Result<()> {
    warn_cleartext(server, token.is_some());
    let ca_pem = ca_file
        .map(|path| std::fs::read_to_string(path).with_context(|| format!("cannot read --ca-file {}", path.display())))
        .transpose()?;
    let access = ServerAccess { url: server.to_string(), token: token.clone(), ca_pem };
    // Only a CA can make connect fail: name the file it came from.
    let transport = HttpTransport::connect(&access)
        .map_err(|e| anyhow!("--ca-file {}: {e}", ca_file.unwrap_or(Path::new("")).display()))?;
    let schema = transport.schema()?;
    for warning in schema_warnings(&schema) {
        eprintln!("rowsync: warning: {warning}");
    }
    let replica = Replica::init(local, server, &schema, token.as_deref())?;
    if let Some(pem) = &access.ca_pem {
        replica.trust_ca(pem)?;
    }
    let status = replica.status()?;
    let tables: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
    println!(
        "{} is a replica of {server}: tables {}; {} change(s) queued",
        local.display(),
        tables.join(", "),
        status.pending_changes
    );
    Ok(())
}

/// Warns on stderr when a token would cross the network unencrypted.
pub fn warn_cleartext(server: &str, has_token: bool) {
    if let Some(warning) = cleartext_warning(server, has_token) {
        eprintln!("rowsync: warning: {warning}");
    }
}

fn sync_command(local: &Path, options: SyncOptions) -> anyhow::Result<()> {
    let mut replica = Replica::open(local)?;
    let access = replica.server_access()?;
    warn_cleartext(&access.url, access.token.is_some());
    let transport = HttpTransport::connect(&access)?;
    let started = Instant::now();
    let (progress, mut show) = watch::sync_progress();
    let result = sync_showing(&mut replica, &transport, options, &mut show);
    progress.finish_and_clear();
    match result {
        Ok(report) => {
            let open = replica.status()?.open_conflicts;
            let conflicts = if open > 0 {
                format!("; {open} open conflict(s), see `rowsync conflicts {}`", local.display())
            } else {
                String::new()
            };
            println!(
                "synced {}: pulled {} change(s), pushed {} change(s), cursor {}, {:.2} s{conflicts}",
                local.display(),
                report.pulled,
                report.pushed,
                report.cursor,
                started.elapsed().as_secs_f64()
            );
            for note in &report.notes {
                println!("note: {note}");
            }
            match report.rejections.first() {
                None => Ok(()),
                Some(reason) => Err(anyhow!(
                    "the server refused {} change(s), set aside in _rowsync_rejected (fix the rows and sync again); first: {reason}",
                    report.rejected
                )),
            }
        }
        Err(error) => {
            let pending = replica.status().map(|s| s.pending_changes).unwrap_or(0);
            let hint = if error.is_unreachable() {
                format!("{pending} change(s) stay queued; run sync again when the server is back")
            } else if error.is_unauthorized() {
                format!(
                    "{pending} change(s) stay queued; give the replica a valid token with \
                     `rowsync init {} --server URL --token TOKEN`",
                    local.display()
                )
            } else {
                format!("{pending} change(s) stay queued")
            };
            Err(anyhow::Error::new(error).context(format!("sync of {} failed ({hint})", local.display())))
        }
    }
}

fn status(local: &Path, json: bool) -> anyhow::Result<()> {
    let status = Replica::open(local)?.status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("replica      {}", status.path);
    println!("server       {}", status.server_url);
    println!("site         {}", status.site_id);
    println!("schema       version {}", status.schema_version);
    println!("pending      {} change(s)", status.pending_changes);
    if status.rejected_changes > 0 {
        println!("rejected     {} change(s) refused by the server (see _rowsync_rejected)", status.rejected_changes);
    }
    if status.open_conflicts > 0 {
        println!("conflicts    {} open (see `rowsync conflicts {}`)", status.open_conflicts, local.display());
    }
    println!("cursor       {}", status.cursor);
    println!("last sync    {}", status.last_sync.as_deref().unwrap_or("never"));
    if let Some(error) = &status.last_error {
        println!("last error   {} (at {})", error, status.last_error_at.as_deref().unwrap_or("?"));
    }
    Ok(())
}
