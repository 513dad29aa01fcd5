-- ScaiEcho: per-tenant backend policy, async jobs, usage events for accounting.

CREATE TABLE scaiecho_policies (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    allowed_backends TEXT NOT NULL,          -- JSON array of "A" | "B"
    backend_preference TEXT NOT NULL,
    inline_threshold_seconds DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    module TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,                    -- queued | processing | succeeded | failed | cancelled
    status_reason TEXT,
    subject TEXT NOT NULL,
    options TEXT NOT NULL,                   -- JSON
    input_key TEXT,
    media_type TEXT,
    result TEXT,                             -- JSON
    audio_seconds DOUBLE PRECISION,
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX jobs_tenant ON jobs (tenant_id, created_at);
CREATE INDEX jobs_status ON jobs (status, created_at);

CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    module TEXT NOT NULL,
    metric TEXT NOT NULL,                    -- audio_seconds, characters, tokens, ...
    quantity DOUBLE PRECISION NOT NULL,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_events_tenant ON usage_events (tenant_id, created_at);

-- A claimed job is leased; a worker that dies lets its lease run out and another
-- worker (or the restarted server) claims the job again.
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;

-- Events for webhooks (outbox: written in the transaction that causes them, delivered
-- by the gateway's webhook dispatcher).
CREATE TABLE event_outbox (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX event_outbox_pending ON event_outbox (delivered_at, created_at);
