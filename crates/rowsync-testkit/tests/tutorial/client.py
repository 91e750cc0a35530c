#!/usr/bin/env python3
"""A client of the tutorial protocol, written from its description alone
(requests and sqlite3, nothing of rowsync): the app logs each change in a
change_log table in the same transaction as the write; sync posts the
unsynced changes one by one to POST /sync (200: mark it synced; anything
else: stop and retry later), then asks GET /changes?since=<last timestamp>
until the answer is empty, applying each change without logging it.

Usage: client.py DB URL [--token T] [--token-in-query] COMMAND ...
  add NAME [EMAIL] [PHONE]   prints the new id
  edit ID COLUMN VALUE
  delete ID
  sync                       prints {"pushed", "pulled", "stopped"} as JSON
  dump                       prints the contacts as JSON, by id
"""

import argparse
import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
import os

import requests

FIRST_SINCE = "1970-01-01T00:00:00+00:00"


def open_db(path):
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS contacts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            email TEXT,
            phone TEXT
        );
        CREATE TABLE IF NOT EXISTS change_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            table_name TEXT NOT NULL,
            record_id INTEGER NOT NULL,
            operation TEXT NOT NULL,
            timestamp TEXT NOT NULL,
            synced INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS sync_state (key TEXT PRIMARY KEY, value TEXT);
        """
    )
    return db


def now():
    # A test may set the device's clock off by some milliseconds.
    offset = int(os.environ.get("TUTORIAL_CLOCK_OFFSET_MS", "0"))
    return (datetime.now(timezone.utc) + timedelta(milliseconds=offset)).isoformat()


def log(db, record_id, operation):
    db.execute(
        "INSERT INTO change_log (table_name, record_id, operation, timestamp) VALUES ('contacts', ?, ?, ?)",
        (record_id, operation, now()),
    )


def add(db, name, email=None, phone=None):
    with db:
        cur = db.execute("INSERT INTO contacts (name, email, phone) VALUES (?, ?, ?)", (name, email, phone))
        log(db, cur.lastrowid, "INSERT")
    return cur.lastrowid


def edit(db, record_id, column, value):
    if column not in ("name", "email", "phone"):
        raise SystemExit(f"no column {column}")
    with db:
        db.execute(f"UPDATE contacts SET {column} = ? WHERE id = ?", (value, record_id))
        log(db, record_id, "UPDATE")


def delete(db, record_id):
    with db:
        db.execute("DELETE FROM contacts WHERE id = ?", (record_id,))
        log(db, record_id, "DELETE")


def sync(db, url, auth):
    pushed = 0
    pending = db.execute(
        "SELECT id, table_name, record_id, operation, timestamp FROM change_log WHERE synced = 0 ORDER BY id"
    ).fetchall()
    for change in pending:
        body = {
            "table": change["table_name"],
            "record_id": change["record_id"],
            "operation": change["operation"],
            "timestamp": change["timestamp"],
        }
        if change["operation"] != "DELETE":
            row = db.execute("SELECT * FROM contacts WHERE id = ?", (change["record_id"],)).fetchone()
            if row is not None:
                body["data"] = dict(row)
        answer = requests.post(f"{url}/sync", json=body, timeout=30, **auth)
        if answer.status_code != 200:
            return {"pushed": pushed, "pulled": 0, "stopped": answer.status_code, "error": answer.text}
        with db:
            db.execute("UPDATE change_log SET synced = 1 WHERE id = ?", (change["id"],))
        pushed += 1

    pulled = 0
    row = db.execute("SELECT value FROM sync_state WHERE key = 'last_sync'").fetchone()
    since = row["value"] if row else FIRST_SINCE
    while True:
        answer = requests.get(f"{url}/changes", params={"since": since, **auth.get("params", {})},
                              headers=auth.get("headers", {}), timeout=30)
        if answer.status_code != 200:
            return {"pushed": pushed, "pulled": pulled, "stopped": answer.status_code, "error": answer.text}
        changes = answer.json()
        if not changes:
            break
        with db:
            for change in changes:
                if change["table"] != "contacts":
                    continue
                if change["operation"] == "DELETE":
                    db.execute("DELETE FROM contacts WHERE id = ?", (change["record_id"],))
                else:
                    data = change["data"]
                    columns = ", ".join(data)
                    marks = ", ".join("?" for _ in data)
                    db.execute(f"INSERT OR REPLACE INTO contacts ({columns}) VALUES ({marks})", list(data.values()))
                pulled += 1
            since = changes[-1]["timestamp"]
            db.execute("INSERT OR REPLACE INTO sync_state (key, value) VALUES ('last_sync', ?)", (since,))
    return {"pushed": pushed, "pulled": pulled, "stopped": None}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--token-in-query", action="store_true")
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    options = parser.parse_args()
    db = open_db(options.db)
    auth = {}
    if options.token and options.token_in_query:
        auth = {"params": {"token": options.token}}
    elif options.token:
        auth = {"headers": {"Authorization": f"Bearer {options.token}"}}
    command, args = options.command, options.args
    if command == "add":
        print(add(db, *args))
    elif command == "edit":
        edit(db, int(args[0]), args[1], args[2])
    elif command == "delete":
        delete(db, int(args[0]))
    elif command == "sync":
        print(json.dumps(sync(db, options.url, auth)))
    elif command == "dump":
        rows = db.execute("SELECT id, name, email, phone FROM contacts ORDER BY id").fetchall()
        print(json.dumps([list(row) for row in rows]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    sys.exit(main())
