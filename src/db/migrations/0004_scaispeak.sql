-- ScaiSpeak: per-tenant backend policy.

CREATE TABLE scaispeak_policies (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    allowed_backends TEXT NOT NULL,          -- JSON array of "A" | "B"
    updated_at BIGINT NOT NULL
);
