-- Firewall policies (#28): per tenant, attached to the tenant, an API key or a model,
-- in audit, block or redact mode, with rules (JSON) over the stages they guard (JSON).
CREATE TABLE firewall_policies (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    mode TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_id TEXT,
    stages TEXT NOT NULL,
    rules TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX firewall_policies_tenant ON firewall_policies(tenant_id);
