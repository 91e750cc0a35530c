//! A push request body as the server reads it: JSON into a `PushRequest`,
//! then every change checked against the schema by `decode_change`, the
//! one gate between network names and SQL. Nothing may panic, and what
//! passes the gate must hold what the stores rely on: a key of the table's
//! arity within the length limits, and a state that survives being encoded
//! for a pull and decoded again unchanged.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rowsync_core::change::{decode_change, encode_change, MAX_KEY_JSON};
use rowsync_core::parse_schema;
use rowsync_proto::{PushRequest, Schema};

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    parse_schema(
        "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER, photo BLOB, score REAL);
         CREATE TABLE tags (contact INTEGER NOT NULL, tag TEXT NOT NULL, note TEXT, PRIMARY KEY (contact, tag));",
    )
    .expect("the fuzz schema parses")
});

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PushRequest>(data) else { return };
    for pushed in request.changes {
        let Ok(decoded) = decode_change(&SCHEMA, pushed.row) else { continue };
        let table = &SCHEMA.tables[decoded.table];
        assert_eq!(decoded.key.len(), table.primary_key.len());
        assert!(decoded.key_json.chars().count() <= MAX_KEY_JSON, "{}", decoded.key_json);
        let encoded = encode_change(table, decoded.key.clone(), &decoded.state);
        let again = decode_change(&SCHEMA, encoded).expect("a change re-encoded for a pull decodes");
        assert_eq!(again, decoded, "encoding for a pull changed the row");
    }
});
