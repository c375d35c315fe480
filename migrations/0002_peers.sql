-- tmux-hosted agent sessions started with `peer spawn`, so that `peer list`
-- works from any shell. The peer's mailbox is the session of the same name.
CREATE TABLE peers (
    name         TEXT PRIMARY KEY,
    session_id   INTEGER REFERENCES sessions (id),
    tmux_socket  TEXT NOT NULL,
    tmux_session TEXT NOT NULL,
    command      TEXT NOT NULL,
    cwd          TEXT NOT NULL,
    spawned_by   TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    -- Set by `peer kill`; a peer whose tmux session died without it is 'dead'.
    killed_at    TEXT
);
