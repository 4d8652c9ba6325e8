-- Console sign-in: local administrator accounts, one-time setup links and browser sessions.

CREATE TABLE console_admins (
    id             INTEGER PRIMARY KEY,
    -- Compared case-insensitively, so "Alice" and "alice" cannot both exist.
    name           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    -- PHC string of an argon2id hash; never the password itself.
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_login     INTEGER
);

-- The setup link printed at start while no administrator exists: only a SHA-256 of the
-- token is kept, so the database alone cannot be used to claim the server.
CREATE TABLE console_setup_tokens (
    hash        BLOB PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);

-- tower-sessions-sqlx-store's layout (its `migrate` would create the same), kept here so
-- every table comes from a migration.
CREATE TABLE console_sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    data         BLOB NOT NULL,
    expiry_date  INTEGER NOT NULL
);
