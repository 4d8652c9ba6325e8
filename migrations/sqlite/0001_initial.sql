-- oxiscale schema. Times are unix seconds (UTC); lists and Hostinfo are JSON text.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL DEFAULT '',
    email         TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL
);

CREATE TABLE nodes (
    id               INTEGER PRIMARY KEY,
    machine_key      TEXT NOT NULL,
    node_key         TEXT NOT NULL UNIQUE,
    disco_key        TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    given_name       TEXT NOT NULL UNIQUE,
    user_id          INTEGER REFERENCES users(id),
    tags             TEXT NOT NULL DEFAULT '[]',
    ipv4             TEXT UNIQUE,
    ipv6             TEXT UNIQUE,
    hostinfo         TEXT NOT NULL DEFAULT '{}',
    endpoints        TEXT NOT NULL DEFAULT '[]',
    approved_routes  TEXT NOT NULL DEFAULT '[]',
    ephemeral        INTEGER NOT NULL DEFAULT 0,
    register_method  TEXT NOT NULL,
    auth_key_id      INTEGER,
    expiry           INTEGER,
    created_at       INTEGER NOT NULL,
    last_seen        INTEGER,
    cap_version      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX nodes_machine_key ON nodes(machine_key);
CREATE INDEX nodes_user ON nodes(user_id);

CREATE TABLE pre_auth_keys (
    id          INTEGER PRIMARY KEY,
    prefix      TEXT NOT NULL UNIQUE,
    hash        BLOB NOT NULL,
    user_id     INTEGER REFERENCES users(id),
    reusable    INTEGER NOT NULL,
    ephemeral   INTEGER NOT NULL,
    used        INTEGER NOT NULL,
    tags        TEXT NOT NULL DEFAULT '[]',
    expiration  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    prefix      TEXT NOT NULL UNIQUE,
    hash        BLOB NOT NULL,
    expiration  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER
);

-- Next id of each kind, so that ids of deleted rows are never handed out again.
CREATE TABLE sequences (
    name  TEXT PRIMARY KEY,
    next  INTEGER NOT NULL
);

-- The policy in database mode; the newest row is in force, older rows are its history.
CREATE TABLE policies (
    id          INTEGER PRIMARY KEY,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Settings changed at run time (DNS from the console, …); they override the config file.
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
