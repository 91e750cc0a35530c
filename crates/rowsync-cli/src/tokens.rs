//! `rowsync token create|list|revoke`: the tokens a server accepts, managed
//! on its database (see `rowsync_server::tokens`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use clap::Subcommand;
use rowsync_server::auth::{check_user, TokenRecord};
use rowsync_server::store::Revoke;
use rowsync_server::tokens::{manage_tokens, TokenAnswer, TokenCommand as Command};
use rowsync_server::DatabaseUrl;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token for a user and print it (it is shown this once; the
    /// server keeps only its hash).
    Create {
        /// The server's database, as given to `rowsync serve --database`.
        #[arg(long)]
        database: String,
        /// The user the token acts for: lowercase letters, digits and . _ - @.
        #[arg(long)]
        user: String,
        /// How long the token is valid, such as 90d, 12h or "1h 30m" (for ever without).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List the tokens: id, user, made, expires, revoked (never the secret).
    List {
        #[arg(long)]
        database: String,
        /// One JSON object per token.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (the part after `rs_`), or every token of a
    /// user; it is refused from the next request on.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "user"])))]
    Revoke {
        #[arg(long)]
        database: String,
        /// The token's id, as `token list` shows it.
        id: Option<String>,
        /// Revoke every token of this user instead.
        #[arg(long)]
        user: Option<String>,
    },
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let database = |url: &str| DatabaseUrl::parse(url).map_err(|e| anyhow!("--database: {e}"));
    let now = now_ms();
    match command {
        TokenCommand::Create { database: url, user, expires } => {
            check_user(&user).map_err(|e| anyhow!("--user: {e}"))?;
            let database = database(&url)?;
            let answer =
                runtime.block_on(manage_tokens(&database, Command::Create { user: &user, lifetime: expires }, now))?;
            let TokenAnswer::Created(new) = answer else { return Err(anyhow!("unexpected answer")) };
            let until = new.record.expires_ms.map_or("never expires".to_string(), |ms| format!("expires {}", when(ms)));
            eprintln!(
                "rowsync: token {} for {user} ({until}); it is shown only now: keep it secret, give it to the user's \
                 replicas with `rowsync init LOCAL.db --server URL --token TOKEN`",
                new.record.id
            );
            println!("{}", new.token);
        }
        TokenCommand::List { database: url, json } => {
            let database = database(&url)?;
            let TokenAnswer::Listed(tokens) = runtime.block_on(manage_tokens(&database, Command::List, now))? else {
                return Err(anyhow!("unexpected answer"));
            };
            for token in &tokens {
                if json {
                    println!("{}", serde_json::to_string(&describe_json(token, now))?);
                } else {
                    println!("{}", describe(token, now));
                }
            }
            if tokens.is_empty() && !json {
                eprintln!("rowsync: no tokens yet; make one with `rowsync token create --database URL --user NAME`");
            }
        }
        TokenCommand::Revoke { database: url, id, user } => {
            let database = database(&url)?;
            let which = match (&id, &user) {
                (Some(id), _) => Revoke::Id(id.strip_prefix("rs_").unwrap_or(id)),
                (None, Some(user)) => Revoke::User(user),
                (None, None) => return Err(anyhow!("name a token id or --user")),
            };
            let TokenAnswer::Revoked(count) =
                runtime.block_on(manage_tokens(&database, Command::Revoke(which), now))?
            else {
                return Err(anyhow!("unexpected answer"));
            };
            if count == 0 {
                return Err(anyhow!(
                    "no token to revoke: none matches, or it is revoked already (see `rowsync token list`)"
                ));
            }
            println!("revoked {count} token(s); they are refused from the next request on");
        }
    }
    Ok(())
}

/// Makes a token for `user` on `database`: the demo's and the benchmarks'
/// servers ask for tokens, as every server does by default.
pub fn issue(database: &DatabaseUrl, user: &str) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let command = Command::Create { user, lifetime: None };
    match runtime.block_on(manage_tokens(database, command, now_ms()))? {
        TokenAnswer::Created(new) => Ok(new.token),
        _ => Err(anyhow!("unexpected answer")),
    }
}

fn state(token: &TokenRecord, now: u64) -> &'static str {
    match (token.revoked_ms, token.expires_ms) {
        (Some(_), _) => "revoked",
        (None, Some(expires)) if expires <= now => "expired",
        _ => "valid",
    }
}

fn describe(token: &TokenRecord, now: u64) -> String {
    let expires = token.expires_ms.map_or("never".to_string(), when);
    format!(
        "{}  {:<8} user {:<20} made {}  expires {}",
        token.id,
        state(token, now),
        token.user,
        when(token.created_ms),
        expires
    )
}

fn describe_json(token: &TokenRecord, now: u64) -> serde_json::Value {
    serde_json::json!({
        "id": token.id,
        "user": token.user,
        "state": state(token, now),
        "created": when(token.created_ms),
        "expires": token.expires_ms.map(when),
        "revoked": token.revoked_ms.map(when),
    })
}
