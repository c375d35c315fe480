-- Conversations: replies and threads, expiry, idempotent sends, and the
-- waits of `mail ask`.

ALTER TABLE messages ADD COLUMN in_reply_to TEXT;      -- parent message id
ALTER TABLE messages ADD COLUMN thread_id TEXT;        -- root message id
ALTER TABLE messages ADD COLUMN expires_at TEXT;       -- undelivered after this: never printed
ALTER TABLE messages ADD COLUMN idempotency_key TEXT;  -- per sender, 24 h
UPDATE messages SET thread_id = id WHERE thread_id IS NULL;
CREATE INDEX messages_by_thread ON messages (thread_id, seq);
CREATE INDEX messages_by_parent ON messages (in_reply_to);
CREATE INDEX messages_by_idempotency ON messages (sender_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A running `mail ask` waiting for the first reply to its question. While
-- the wait lasts (until `until`), that reply is kept from the asker's
-- monitor so that it is printed once, by `ask`.
CREATE TABLE asks (
    question_id TEXT PRIMARY KEY,
    asker_id    INTEGER NOT NULL REFERENCES sessions (id),
    until       TEXT NOT NULL
);

DROP VIEW pending;
DROP VIEW history;

-- history: one row per message and recipient. `status` is delivered,
-- pending or expired.
CREATE VIEW history AS
SELECT m.id                       AS id,
       m.created_at               AS created_at,
       m.kind                     AS kind,
       m.sender                   AS sender,
       r.name                     AS recipient,
       COALESCE(m.text, b.body)   AS text,
       d.delivered_at             AS delivered_at,
       m.in_reply_to              AS in_reply_to,
       m.thread_id                AS thread_id,
       m.expires_at               AS expires_at,
       CASE
           WHEN d.delivered_at IS NOT NULL THEN 'delivered'
           WHEN m.expires_at IS NOT NULL
                AND m.expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN 'expired'
           ELSE 'pending'
       END                        AS status,
       m.seq                      AS seq
FROM deliveries d
JOIN messages m ON m.seq = d.message_seq
JOIN sessions r ON r.id = d.recipient_id
LEFT JOIN blobs b ON b.id = m.blob_id;

-- pending: mail not yet printed (or read with inbox check) and not expired.
CREATE VIEW pending AS
SELECT id, created_at, kind, sender, recipient, text, in_reply_to, thread_id, expires_at, seq
FROM history
WHERE status = 'pending';
