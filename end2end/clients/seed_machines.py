#!/usr/bin/env python3
"""Fills a stopped oxiscale server's SQLite database with N machines, for measuring the
console at scale (e.g. time to interactive of /machines with 1,000 machines).

    python3 end2end/clients/seed_machines.py --db DATA_DIR/oxiscale.db --count 1000

The database must already exist (start and stop the server once). Adds one user `seed`
and N nodes owned by it, with random (well-formed) keys and distinct addresses; the server
loads them like any other rows. Never point it at a database that matters.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    db = sqlite3.connect(args.db)
    now = int(time.time())
    cur = db.cursor()
    cur.execute("SELECT COALESCE(MAX(id), 0) FROM users")
    uid = cur.fetchone()[0] + 1
    cur.execute(
        "INSERT INTO users (id, name, display_name, email, created_at) VALUES (?, ?, '', '', ?)",
        (uid, f"seed{uid}", now),
    )
    cur.execute("SELECT COALESCE(MAX(id), 0) FROM nodes")
    base = cur.fetchone()[0]
    for i in range(args.count):
        nid = base + i + 1
        n = 10 + i
        hostinfo = {"OS": "linux", "IPNVersion": "1.90.9", "Hostname": f"seed-{nid}",
                    "NetInfo": {"PreferredDERP": 1, "WorkingUDP": True}}
        cur.execute(
            "INSERT INTO nodes (id, machine_key, node_key, disco_key, hostname, given_name, user_id,"
            " ipv4, ipv6, hostinfo, endpoints, register_method, expiry, created_at, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'authkey', NULL, ?, ?)",
            (nid, "mkey:" + os.urandom(32).hex(), "nodekey:" + os.urandom(32).hex(),
             "discokey:" + os.urandom(32).hex(), f"seed-{nid}", f"seed-{nid}", uid,
             f"100.{64 + n // 65536}.{n // 256 % 256}.{n % 256}", f"fd7a:115c:a1e0::{n:x}",
             json.dumps(hostinfo), json.dumps([f"198.51.100.{n % 250}:41641"]), now - 3600, now - 60),
        )
    cur.execute("INSERT INTO sequences (name, next) VALUES ('node', ?)"
                " ON CONFLICT(name) DO UPDATE SET next = MAX(next, excluded.next)", (base + args.count + 1,))
    cur.execute("INSERT INTO sequences (name, next) VALUES ('user', ?)"
                " ON CONFLICT(name) DO UPDATE SET next = MAX(next, excluded.next)", (uid + 1,))
    db.commit()
    print(f"seeded {args.count} machines owned by user {uid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
