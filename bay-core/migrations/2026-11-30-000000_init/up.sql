-- Ships: one row per sandbox, kept while STOPPED so that it can be restored.
-- Times are microseconds since the Unix epoch (UTC).
CREATE TABLE ships (
    id TEXT PRIMARY KEY NOT NULL,
    status INTEGER NOT NULL,                -- 0 stopped, 1 running, 2 creating
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    container_id TEXT,
    ip_address TEXT,
    ttl BIGINT NOT NULL,                    -- ttl requested by the operation that last started it
    max_session_num INTEGER NOT NULL,
    spec_cpus DOUBLE,                       -- the effective spec, reused by every restore
    spec_memory BIGINT,
    spec_disk BIGINT,
    auth_token TEXT NOT NULL,               -- per-ship bearer token for the agent
    deadline BIGINT,                        -- RUNNING: latest relation expiry
    ever_running BOOLEAN NOT NULL DEFAULT 0 -- false while a brand-new ship has never been ready
);
CREATE INDEX ships_status_deadline ON ships (status, deadline);
CREATE INDEX ships_created_at ON ships (created_at);

-- Relations between client sessions and ships.
CREATE TABLE session_ships (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL,
    ship_id TEXT NOT NULL REFERENCES ships (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_activity BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    initial_ttl BIGINT NOT NULL,
    UNIQUE (session_id, ship_id)
);
CREATE INDEX session_ships_ship ON session_ships (ship_id, expires_at);
CREATE INDEX session_ships_created ON session_ships (created_at);
