-- Gateway core: upstream backends, models with routing policies, per-tenant model
-- access, cost budgets, per-request usage records (replacing usage_events), webhooks
-- and their deliveries.

CREATE TABLE gateway_backends (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,                      -- openai
    base_url TEXT NOT NULL,
    api_key TEXT,                            -- never returned by the API
    timeout_s BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE gateway_models (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    tenant_id TEXT REFERENCES tenants(id),   -- NULL: global
    capabilities TEXT NOT NULL,              -- JSON array
    routing TEXT NOT NULL,                   -- JSON {"backends":[...]}
    pricing TEXT,                            -- JSON
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX gateway_models_global_slug ON gateway_models (slug) WHERE tenant_id IS NULL;
CREATE UNIQUE INDEX gateway_models_tenant_slug ON gateway_models (tenant_id, slug)
    WHERE tenant_id IS NOT NULL;

CREATE TABLE model_access (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    slug TEXT NOT NULL,
    rule TEXT NOT NULL,                      -- allow | deny
    PRIMARY KEY (tenant_id, slug)
);

CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    scope TEXT NOT NULL,                     -- tenant | api_key
    scope_id TEXT NOT NULL,
    period TEXT NOT NULL,                    -- day | month
    limit_cost DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX budgets_scope ON budgets (scope, scope_id, period);

CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subject_kind TEXT NOT NULL,              -- api_key | user
    subject_id TEXT NOT NULL,
    module TEXT NOT NULL,                    -- chat | scaiecho | scaispeak
    model TEXT,
    backend_id TEXT,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    audio_seconds DOUBLE PRECISION NOT NULL,
    characters BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_records_tenant ON usage_records (tenant_id, created_at);
CREATE INDEX usage_records_subject ON usage_records (subject_id, created_at);

INSERT INTO usage_records (id, tenant_id, subject_kind, subject_id, module, model, backend_id,
    input_tokens, output_tokens, audio_seconds, characters, cost, request_id, created_at)
SELECT id, tenant_id,
    CASE WHEN SUBSTR(subject, 1, 4) = 'key_' THEN 'api_key' ELSE 'user' END,
    subject, module, NULL, NULL, 0, 0,
    CASE WHEN metric = 'audio_seconds' THEN quantity ELSE 0 END,
    CASE WHEN metric = 'characters' THEN CAST(quantity AS BIGINT) ELSE 0 END,
    0, request_id, created_at
FROM usage_events;
DROP TABLE usage_events;

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,                    -- JSON array of event names
    secret TEXT NOT NULL,
    status TEXT NOT NULL,                    -- active | disabled
    disabled_reason TEXT,
    consecutive_failures BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,                     -- also the idempotency id sent to receivers
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,                    -- pending | succeeded | failed
    attempt BIGINT NOT NULL,
    next_attempt_at BIGINT,
    status_code BIGINT,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (webhook_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
