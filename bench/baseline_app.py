"""The bare-Flask reference the service's ingest is compared with: POST /hook -> 202, nothing else.

    gunicorn -w 2 -k gthread --threads 8 --chdir bench baseline_app:app

BASELINE_DB=<path>  one INSERT of the request (id, time, headers, body) per request, in its own
                    transaction, WAL, one connection per thread
BASELINE_SYNC=FULL|NORMAL  PRAGMA synchronous of those connections (default FULL, as the service's)
"""
import json
import os
import sqlite3
import threading
import time
import uuid

from flask import Flask, jsonify, request

app = Flask(__name__)
DB_PATH = os.environ.get("BASELINE_DB", "")
SYNC = os.environ.get("BASELINE_SYNC", "FULL").upper()
if SYNC not in ("OFF", "NORMAL", "FULL", "EXTRA"):
    raise ValueError(f"BASELINE_SYNC must be OFF, NORMAL, FULL or EXTRA, got {SYNC!r}")
_local = threading.local()


def _db() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(DB_PATH, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {SYNC}")
        conn.execute("CREATE TABLE IF NOT EXISTS hooks (id TEXT PRIMARY KEY, received_at REAL NOT NULL,"
                     " headers TEXT NOT NULL, body BLOB NOT NULL)")
    return conn


@app.post("/hook")
def hook():
    body = request.get_data()
    hook_id = uuid.uuid4().hex
    if DB_PATH:
        _db().execute("INSERT INTO hooks (id, received_at, headers, body) VALUES (?, ?, ?, ?)",
                      (hook_id, time.time(), json.dumps(dict(request.headers)), body))
    return jsonify({"execution_id": hook_id}), 202


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
