-- Scale-out (#25). Evictions owed by nodes that could not be reached when a speaker or
-- a voice was deleted (offline, partitioned): the erasure reconciler sends each one as
-- soon as its node answers again, then deletes the row.
CREATE TABLE node_evictions (
    kind TEXT NOT NULL,
    item_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (kind, item_id, node_id)
);
CREATE INDEX node_evictions_node ON node_evictions (node_id);
