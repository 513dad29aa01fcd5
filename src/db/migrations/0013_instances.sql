-- Model instances on nodes (#32, seed 003): a tenant launches a model, the scheduler
-- places its replicas on nodes that meet the smart constraints, and the instance moves
-- pending -> starting -> running -> stopping -> stopped | failed. Every failure keeps a
-- stable reason (the seed's codes) and a one-line detail.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    model TEXT NOT NULL,
    -- The smart constraints as JSON: {"max_price","region","capacity_tier"}.
    smart TEXT NOT NULL,
    replicas BIGINT NOT NULL,
    state TEXT NOT NULL,
    -- JSON arrays of node ids: where its replicas run, and where its launch loaded the
    -- model (stopping unloads it there only, so a node's own models stay).
    node_ids TEXT NOT NULL,
    loaded_node_ids TEXT NOT NULL,
    failure_reason TEXT,
    failure_detail TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT
);
CREATE INDEX instances_tenant ON instances (tenant_id, created_at);
CREATE INDEX instances_state ON instances (state);
