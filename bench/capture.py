"""Capture overhead as an application sees it: Python's sqlite3 module, WAL,
synchronous=NORMAL, the same writes against a plain table and against a
rowsync replica (capture triggers installed). Run by `rowsync bench capture`,
which prepares the two template files; prints one JSON object.

Two more copies of the plain table show what capture by triggers costs
before it records anything of its own: one whose triggers do nothing, and
one whose triggers write about the least a log of changes can (one row
holding only its rowid) per write.

usage: capture.py PLAIN_TEMPLATE CAPTURED_TEMPLATE WORKDIR ROWS ROUNDS
"""
import json
import os
import shutil
import sqlite3
import statistics
import sys
import time

plain_template, captured_template, workdir, rows, rounds = sys.argv[1:6]
rows, rounds = int(rows), int(rounds)
single_rows = min(rows, 2000)


# Triggers on the plain table's copies, by kind: a body that does nothing,
# and a body that logs one rowid per write.
FLOORS = {
    "empty_trigger": "SELECT 1 WHERE 0;",
    "rowid_log": "INSERT INTO rowid_log (id) VALUES (NULL);",
}


def floor_template(kind):
    path = os.path.join(workdir, f"{kind}-template.db")
    shutil.copyfile(plain_template, path)
    db = sqlite3.connect(path, isolation_level=None)
    if kind == "rowid_log":
        db.execute("CREATE TABLE rowid_log (id INTEGER PRIMARY KEY)")
    for event in ("INSERT", "UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER items_{event.lower()} AFTER {event} ON items BEGIN {FLOORS[kind]} END")
    db.close()
    return path


def fresh(template, name):
    path = os.path.join(workdir, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    shutil.copyfile(template, path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def seeded(template, name):
    db = fresh(template, name)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO items (id, name, qty, price) VALUES (?, ?, ?, ?)",
        ((f"k{i:07d}", f"item {i}", i, i * 0.5) for i in range(rows)),
    )
    db.execute("COMMIT")
    # Start the measured phase with an empty log, as after a sync.
    if name.startswith("captured"):
        db.execute("DELETE FROM _rowsync_outbox")
    elif name.startswith("rowid_log"):
        db.execute("DELETE FROM rowid_log")
    return db


def bulk_insert(db):
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO items (id, name, qty, price) VALUES (?, ?, ?, ?)",
        ((f"k{i:07d}", f"item {i}", i, i * 0.5) for i in range(rows)),
    )
    db.execute("COMMIT")
    return rows


def single_commits(db):
    for i in range(single_rows):
        db.execute("INSERT INTO items (id, name, qty, price) VALUES (?, ?, ?, ?)", (f"s{i:07d}", "single", i, 1.5))
    return single_rows


def row_updates(db):
    db.execute("BEGIN")
    for i in range(rows):
        db.execute("UPDATE items SET qty = qty + 1 WHERE id = ?", (f"k{i:07d}",))
    db.execute("COMMIT")
    return rows


def insert_select(db):
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO items (id, name, qty, price) SELECT printf('x%07d', i), 'bulk', i, i * 0.25 FROM n",
        (rows - 1,),
    )
    return rows


scenarios = [
    ("bulk insert (one transaction)", bulk_insert, fresh),
    ("single-row commits", single_commits, fresh),
    ("per-row updates (one transaction)", row_updates, seeded),
    ("one INSERT...SELECT", insert_select, fresh),
]
templates = {
    "plain": plain_template,
    "captured": captured_template,
    **{kind: floor_template(kind) for kind in FLOORS},
}
kinds = list(templates)
results = []
for label, work, prepare in scenarios:
    times = {kind: [] for kind in kinds}
    for round_no in range(rounds):
        # Each round starts with another kind, and every other one runs
        # backwards, so that no kind always runs first or after the same one.
        start = round_no % len(kinds)
        order = kinds[start:] + kinds[:start]
        if round_no % 2:
            order.reverse()
        for kind in order:
            db = prepare(templates[kind], f"{kind}.db")
            start = time.perf_counter()
            count = work(db)
            times[kind].append(time.perf_counter() - start)
            db.close()
    median = {kind: statistics.median(times[kind]) for kind in kinds}
    results.append({
        "scenario": label,
        "rows": count,
        **{f"{kind}_rows_per_s": count / median[kind] for kind in kinds},
    })
print(json.dumps({"sqlite_version": sqlite3.sqlite_version, "results": results}))
