-- Receipts: how each delivery reached its reader (`monitor`, `check`, `ask`,
-- and the host hooks to come, e.g. `hook:claude:FileChanged`), beside when.
-- NULL on rows delivered before this column existed.
ALTER TABLE deliveries ADD COLUMN delivered_via TEXT COLLATE "C";

-- history gains the column at its end (CREATE OR REPLACE VIEW may only
-- append); `pending` reads history and is unchanged.
CREATE OR REPLACE VIEW history AS
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
                AND m.expires_at <= to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                            'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') THEN 'expired'
           ELSE 'pending'
       END                        AS status,
       m.seq                      AS seq,
       d.delivered_via            AS delivered_via
FROM deliveries d
JOIN messages m ON m.seq = d.message_seq
JOIN sessions r ON r.id = d.recipient_id
LEFT JOIN blobs b ON b.id = m.blob_id;
