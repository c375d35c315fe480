-- Task queues (claim-once work) and file leases (SPEC §11).

-- A task is a message: its id, text, poster, expiry and idempotency key live
-- in `messages`, with no recipient until a worker claims it; then it reaches
-- that worker as an ordinary delivery (printed with `task=` and `queue=`,
-- marked delivered once the line was taken). This row is its place in a
-- queue and the state of its claim.
CREATE TABLE task_rows (
    message_seq  INTEGER PRIMARY KEY REFERENCES messages (seq),
    queue        TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'open'
                 CHECK (state IN ('open', 'claimed', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,   -- claims so far
    max_attempts INTEGER NOT NULL,
    lease_ms     INTEGER,          -- a claim not renewed for this long returns to the queue
    grace_ms     INTEGER NOT NULL, -- a claim whose holder's monitor is offline this long returns
    holder_id    INTEGER REFERENCES sessions (id),
    claimed_by   TEXT,             -- 'monitor' (inbox watch --take) or 'claim' (task claim)
    claimed_at   TEXT,
    renewed_at   TEXT,
    offline_at   TEXT,             -- when the holder's monitor was first seen offline
    finished_at  TEXT,
    failure      TEXT,             -- the last `task fail` text, or why it returned
    result_id    TEXT              -- the reply that carried the result to the poster
);
CREATE INDEX task_rows_open ON task_rows (queue, message_seq) WHERE state = 'open';
CREATE INDEX task_rows_claimed ON task_rows (holder_id) WHERE state = 'claimed';

-- tasks: one row per task, readable with plain sqlite3.
CREATE VIEW tasks AS
SELECT m.id                     AS id,
       t.queue                  AS queue,
       t.state                  AS state,
       m.sender                 AS poster,
       h.name                   AS holder,
       t.attempts               AS attempts,
       t.max_attempts           AS max_attempts,
       m.created_at             AS created_at,
       t.claimed_at             AS claimed_at,
       t.finished_at            AS finished_at,
       m.expires_at             AS expires_at,
       COALESCE(m.text, b.body) AS text,
       t.failure                AS failure,
       t.result_id              AS result_id,
       m.seq                    AS seq
FROM task_rows t
JOIN messages m ON m.seq = t.message_seq
LEFT JOIN sessions h ON h.id = t.holder_id
LEFT JOIN blobs b ON b.id = m.blob_id;

-- A file lease: `pattern` (a path or glob, relative to `project`, the git
-- root) held by a mailbox until released, expired, or its holder leaves.
CREATE TABLE leases (
    id          INTEGER PRIMARY KEY,
    project     TEXT NOT NULL,
    pattern     TEXT NOT NULL,
    holder_id   INTEGER NOT NULL REFERENCES sessions (id),
    exclusive   INTEGER NOT NULL,  -- 1, or 0 for --shared
    reason      TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    released_at TEXT
);
CREATE INDEX leases_live ON leases (project, holder_id) WHERE released_at IS NULL;
