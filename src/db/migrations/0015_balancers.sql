-- Balancers (#32, seed 003): instances of one model behind one name a tenant's
-- requests route to (`model` = the balancer's name), weighted, healthy members only.
CREATE TABLE balancers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    -- JSON: [{"instance_id", "weight"}]
    members TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX balancers_name ON balancers (tenant_id, name);
