-- ScaiSpeak tenant voices (cloning intake) and the nodes holding each voice's profile.
-- Deleting a voice erases it: the row, its profile and embedding, its warm entries and
-- the reference clip go; only the audit row remains.

CREATE TABLE scaispeak_voices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    embedding_status TEXT NOT NULL,          -- processing | ready | failed
    embedding_status_reason TEXT,
    reference_key TEXT NOT NULL,
    preflight TEXT NOT NULL,                 -- JSON preflight block
    profile TEXT,                            -- JSON conditioning profile
    embedding TEXT,                          -- JSON speaker embedding
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX scaispeak_voices_tenant ON scaispeak_voices (tenant_id, created_at);

CREATE TABLE scaispeak_voice_warm (
    voice_id TEXT NOT NULL REFERENCES scaispeak_voices(id),
    node_id TEXT NOT NULL,
    warmed_at BIGINT NOT NULL,
    PRIMARY KEY (voice_id, node_id)
);
