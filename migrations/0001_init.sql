-- inter-session mailbox schema, version 1.
-- Readable with the stock sqlite3 shell (3.37+): no newer SQL functions here.
-- Times are UTC text, 'YYYY-MM-DDTHH:MM:SS.mmmZ', so they sort as text.

-- One row per mailbox address. A name is durable: mail to it waits until some
-- monitor watches it. `session_key` is the agent session that last owned it.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    session_key TEXT,
    label       TEXT NOT NULL DEFAULT '',
    -- 'online' is only a hint: the monitor's file lock is the truth, so a
    -- crashed monitor reads as offline at once.
    state       TEXT NOT NULL DEFAULT 'offline'
                CHECK (state IN ('online', 'offline', 'left')),
    cwd         TEXT NOT NULL DEFAULT '',
    project     TEXT NOT NULL DEFAULT '',
    monitor_pid INTEGER,
    owner_pid   INTEGER,
    created_at  TEXT NOT NULL,
    since       TEXT NOT NULL
);
CREATE INDEX sessions_by_key ON sessions (session_key);

-- Bodies longer than the inline cap (400 characters).
CREATE TABLE blobs (
    id   INTEGER PRIMARY KEY,
    body TEXT NOT NULL
);

-- One row per message. `seq` is the commit order (assigned inside the
-- inserting transaction); `id` is the ULID users see.
CREATE TABLE messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('direct', 'broadcast')),
    sender_id    INTEGER REFERENCES sessions (id),
    sender       TEXT NOT NULL,
    sender_label TEXT NOT NULL DEFAULT '',
    chars        INTEGER NOT NULL,
    text         TEXT,
    blob_id      INTEGER REFERENCES blobs (id),
    CHECK ((text IS NULL) <> (blob_id IS NULL))
);
CREATE INDEX messages_by_sender ON messages (sender_id, created_at);

-- One row per message and recipient mailbox.
CREATE TABLE deliveries (
    message_seq  INTEGER NOT NULL REFERENCES messages (seq),
    recipient_id INTEGER NOT NULL REFERENCES sessions (id),
    delivered_at TEXT,
    PRIMARY KEY (recipient_id, message_seq)
) WITHOUT ROWID;
CREATE INDEX deliveries_pending ON deliveries (recipient_id, message_seq)
    WHERE delivered_at IS NULL;
CREATE INDEX deliveries_by_message ON deliveries (message_seq);

-- Labels remembered per project (nearest ancestor holding .git, else cwd).
CREATE TABLE project_labels (
    project TEXT PRIMARY KEY,
    label   TEXT NOT NULL
);

-- history: one row per message and recipient.
CREATE VIEW history AS
SELECT m.id                       AS id,
       m.created_at               AS created_at,
       m.kind                     AS kind,
       m.sender                   AS sender,
       r.name                     AS recipient,
       COALESCE(m.text, b.body)   AS text,
       d.delivered_at             AS delivered_at,
       m.seq                      AS seq
FROM deliveries d
JOIN messages m ON m.seq = d.message_seq
JOIN sessions r ON r.id = d.recipient_id
LEFT JOIN blobs b ON b.id = m.blob_id;

-- pending: mail not yet printed by a monitor (or read with inbox check).
CREATE VIEW pending AS
SELECT id, created_at, kind, sender, recipient, text, seq
FROM history
WHERE delivered_at IS NULL;
