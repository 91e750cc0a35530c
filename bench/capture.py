"""Capture overhead as an application sees it: Python's sqlite3 module, WAL,
synchronous=NORMAL, the same writes against a plain table and against a
rowsync replica (capture triggers installed). Run by `rowsync bench capture`,
which prepares the two template files; prints one JSON object.

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
    if "captured" in name:
        # Start the measured phase with an empty outbox, as after a sync.
        db.execute("DELETE FROM _rowsync_outbox")
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
results = []
for label, work, prepare in scenarios:
    times = {"plain": [], "captured": []}
    for round_no in range(rounds):
        order = ["plain", "captured"] if round_no % 2 == 0 else ["captured", "plain"]
        for kind in order:
            template = plain_template if kind == "plain" else captured_template
            db = prepare(template, f"{kind}.db")
            start = time.perf_counter()
            count = work(db)
            times[kind].append(time.perf_counter() - start)
            db.close()
    plain, captured = statistics.median(times["plain"]), statistics.median(times["captured"])
    results.append({
        "scenario": label,
        "rows": count,
        "plain_rows_per_s": count / plain,
        "captured_rows_per_s": count / captured,
        "ratio": plain / captured,
    })
print(json.dumps({"sqlite_version": sqlite3.sqlite_version, "results": results}))
