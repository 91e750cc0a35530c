//! `rowsync conflicts` and `rowsync resolve`: the command-line face of the
//! client library's conflict API, for tables under the manual strategy.

use std::path::Path;

use anyhow::{anyhow, bail};
use rowsync_client::{OpenConflict, Replica, Resolution, Side};
use rowsync_proto::{ColumnType, Schema, Value, Version, Written};
use serde_json::json;

/// How `resolve` was asked to settle a conflict.
pub enum How {
    Keep(Side),
    /// `COLUMN=VALUE` arguments, not yet parsed.
    Set(Vec<String>),
}

pub fn list(local: &Path, as_json: bool) -> anyhow::Result<()> {
    let replica = Replica::open(local)?;
    let conflicts = replica.conflicts()?;
    if as_json {
        let items: Vec<serde_json::Value> =
            conflicts.iter().map(|c| to_json(&replica, c)).collect::<anyhow::Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if conflicts.is_empty() {
        println!("no open conflicts in {}", local.display());
        return Ok(());
    }
    for conflict in &conflicts {
        println!("{}  {} {} {}", conflict.id, conflict.table, key_text(&conflict.key), conflict.column);
        for (label, side, written) in
            [("local ", Side::Local, &conflict.local), ("remote", Side::Remote, &conflict.remote)]
        {
            let shown = if conflict.shown == side { "  (shown)" } else { "" };
            println!(
                "  {label}  {}  by {} at {}{shown}",
                value_text(&written.value),
                who(&replica, &written.version),
                when(&replica, &written.version)?
            );
        }
        match &conflict.base {
            Some(base) => {
                let value = conflict.base_value.as_ref().map_or("(value unknown)".to_string(), value_text);
                println!("  base    {value}  by {} at {}", who(&replica, base), when(&replica, base)?)
            }
            None => println!("  base    none (both sides wrote a row the other had not seen)"),
        }
    }
    println!(
        "\n{} open conflict(s); resolve one with `rowsync resolve {} ID --keep local|remote` or `--set COLUMN=VALUE`",
        conflicts.len(),
        local.display()
    );
    Ok(())
}

pub fn resolve(local: &Path, id: &str, how: How) -> anyhow::Result<()> {
    let replica = Replica::open(local)?;
    let resolution = match how {
        How::Keep(side) => Resolution::Keep(side),
        How::Set(pairs) => {
            // The columns' types are known once the conflict is found.
            let conflict = replica.find_conflict(id)?;
            Resolution::Set(parse_pairs(replica.schema(), &conflict.table, &pairs)?)
        }
    };
    let conflict = replica.resolve(id, &resolution)?;
    println!(
        "resolved {} ({} {} {}); sync to send the resolution everywhere",
        conflict.id,
        conflict.table,
        key_text(&conflict.key),
        conflict.column
    );
    Ok(())
}

/// `COLUMN=VALUE` arguments as typed values of `table`'s columns.
fn parse_pairs(schema: &Schema, table: &str, pairs: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    let table = schema.table(table).ok_or_else(|| anyhow!("no table {table} in the schema"))?;
    pairs
        .iter()
        .map(|pair| {
            let (name, text) = pair.split_once('=').ok_or_else(|| anyhow!("--set {pair}: expected COLUMN=VALUE"))?;
            let column = table
                .column_index(name)
                .map(|i| &table.columns[i])
                .ok_or_else(|| anyhow!("--set {pair}: table {} has no column {name}", table.name))?;
            Ok((name.to_string(), parse_value(column.ty, text).map_err(|e| anyhow!("--set {pair}: {e}"))?))
        })
        .collect()
}

fn parse_value(ty: ColumnType, text: &str) -> anyhow::Result<Value> {
    if text == "NULL" {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ColumnType::Text => Value::Text(text.to_string()),
        ColumnType::Integer => Value::Integer(text.parse().map_err(|_| anyhow!("{text:?} is not an integer"))?),
        ColumnType::Real => Value::Real(text.parse().map_err(|_| anyhow!("{text:?} is not a number"))?),
        ColumnType::Boolean => match text {
            "true" | "1" => Value::Integer(1),
            "false" | "0" => Value::Integer(0),
            _ => bail!("{text:?} is not a boolean (true, false, 1 or 0)"),
        },
        ColumnType::Blob => {
            let digits = text.strip_prefix("x'").and_then(|t| t.strip_suffix('\'')).unwrap_or(text);
            if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{text:?} is not a blob in hex (such as x'00ff')");
            }
            let bytes = (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16));
            Value::Blob(bytes.collect::<Result<_, _>>()?)
        }
    })
}

/// A value as the listing shows it: text quoted, so that '' and NULL differ.
fn value_text(value: &Value) -> String {
    match value {
        Value::Text(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

fn key_text(key: &[Value]) -> String {
    let parts: Vec<String> = key.iter().map(value_text).collect();
    format!("[{}]", parts.join(", "))
}

fn who(replica: &Replica, version: &Version) -> String {
    if &version.site == replica.site() {
        "this device".to_string()
    } else {
        format!("site {}", &version.site.as_str()[..8])
    }
}

/// A version's wall time as UTC text.
fn when(replica: &Replica, version: &Version) -> anyhow::Result<String> {
    let ms = version.hlc.millis() as f64;
    Ok(replica.connection().query_row(
        "SELECT strftime('%Y-%m-%d %H:%M:%f', ? / 1000.0, 'unixepoch') || ' UTC'",
        [ms],
        |row| row.get(0),
    )?)
}

fn to_json(replica: &Replica, conflict: &OpenConflict) -> anyhow::Result<serde_json::Value> {
    let side = |w: &Written| -> anyhow::Result<serde_json::Value> {
        Ok(json!({
            "value": w.value,
            "site": w.version.site,
            "time": when(replica, &w.version)?,
            "version": w.version,
        }))
    };
    let base = match &conflict.base {
        Some(base) => {
            let mut base_json = json!({ "site": base.site, "time": when(replica, base)?, "version": base });
            if let Some(value) = &conflict.base_value {
                base_json["value"] = json!(value);
            }
            base_json
        }
        None => serde_json::Value::Null,
    };
    Ok(json!({
        "id": conflict.id,
        "table": conflict.table,
        "key": conflict.key,
        "column": conflict.column,
        "shown": conflict.shown,
        "local": side(&conflict.local)?,
        "remote": side(&conflict.remote)?,
        "base": base,
    }))
}
