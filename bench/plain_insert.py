"""The reference for a pull: a plain bulk insert into a local SQLite file as
an application makes it (Python's sqlite3 module, WAL, synchronous=NORMAL),
of the rows `rowsync bench sync` syncs. Prints the seconds it took.

usage: plain_insert.py PATH ROWS
"""
import sqlite3
import sys
import time

path, rows = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT, qty INTEGER, price REAL)")
started = time.perf_counter()
db.execute("BEGIN")
db.executemany(
    "INSERT INTO items (id, name, qty, price) VALUES (?, ?, ?, ?)",
    ((f"k{i:07d}", f"item {i}", i, i * 0.5) for i in range(rows)),
)
db.execute("COMMIT")
print(time.perf_counter() - started)
