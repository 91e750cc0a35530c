//! Managing tokens (`rowsync token …`): straight on the server's database,
//! with or without a server running. A token made, listed or revoked here
//! counts for every server process on that database at its next request.

use std::time::Duration;

use crate::auth::{generate, NewToken, TokenRecord};
use crate::config::DatabaseUrl;
use crate::store::{MysqlStore, PoolSettings, PostgresStore, Revoke, SqliteStore, Store, StoreError};

/// What to do with tokens.
#[derive(Clone, Copy, Debug)]
pub enum TokenCommand<'a> {
    /// Make a token for `user`, valid for `lifetime` (for ever without one).
    Create {
        user: &'a str,
        lifetime: Option<Duration>,
    },
    List,
    Revoke(Revoke<'a>),
}

/// What was done.
#[derive(Debug)]
pub enum TokenAnswer {
    Created(NewToken),
    Listed(Vec<TokenRecord>),
    /// How many tokens were revoked (those revoked before are not counted).
    Revoked(u64),
}

/// Carries out `command` on `database` at `now_ms` (Unix milliseconds).
pub async fn manage_tokens(
    database: &DatabaseUrl,
    command: TokenCommand<'_>,
    now_ms: u64,
) -> Result<TokenAnswer, StoreError> {
    let pool = PoolSettings { max_connections: 2, ..PoolSettings::default() };
    match database {
        DatabaseUrl::Sqlite(path) => on(SqliteStore::open(path).await?, command, now_ms).await,
        DatabaseUrl::Postgres(url) => on(PostgresStore::connect(url, &pool).await?, command, now_ms).await,
        DatabaseUrl::Mysql(url) => on(MysqlStore::connect(url, &pool).await?, command, now_ms).await,
    }
}

async fn on<S: Store>(store: S, command: TokenCommand<'_>, now_ms: u64) -> Result<TokenAnswer, StoreError> {
    store.prepare().await?;
    Ok(match command {
        TokenCommand::Create { user, lifetime } => {
            let new = generate(user, now_ms, lifetime).map_err(StoreError::Conflict)?;
            store.save_token(&new.record).await?;
            TokenAnswer::Created(new)
        }
        TokenCommand::List => TokenAnswer::Listed(store.list_tokens().await?),
        TokenCommand::Revoke(which) => TokenAnswer::Revoked(store.revoke_tokens(which, now_ms).await?),
    })
}
