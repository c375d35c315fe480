-- Receipts: how each delivery reached its reader (`monitor`, `check`, `ask`,
-- and the host hooks to come, e.g. `hook:claude:FileChanged`), beside when.
-- NULL on rows delivered before this column existed.
ALTER TABLE deliveries ADD COLUMN delivered_via TEXT;

DROP VIEW pending;
DROP VIEW history;

-- history: one row per message and recipient. `status` is delivered,
-- pending or expired; `delivered_via` says how a delivered one was read.
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
       m.seq                      AS seq,
       d.delivered_via            AS delivered_via
FROM deliveries d
JOIN messages m ON m.seq = d.message_seq
JOIN sessions r ON r.id = d.recipient_id
LEFT JOIN blobs b ON b.id = m.blob_id;

-- pending: mail not yet printed (or read with inbox check) and not expired.
CREATE VIEW pending AS
SELECT id, created_at, kind, sender, recipient, text, in_reply_to, thread_id, expires_at, seq
FROM history
WHERE status = 'pending';
