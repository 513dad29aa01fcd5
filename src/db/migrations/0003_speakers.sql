-- ScaiEcho speaker library: enrolled speaker profiles (tombstoned, never hard-deleted,
-- so audits and past labels stay explainable) and the nodes each profile is warm on.

CREATE TABLE scaiecho_speakers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    label TEXT NOT NULL,
    enrollment_status TEXT NOT NULL,         -- pending | ready | failed
    status_reason TEXT,
    embedding TEXT,                          -- JSON array of floats, once computed
    reference_key TEXT NOT NULL,             -- object store key of the reference clip
    preflight TEXT NOT NULL,                 -- JSON preflight block
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX scaiecho_speakers_tenant ON scaiecho_speakers (tenant_id, created_at);
-- One live speaker per label and tenant (labels name speakers in transcripts).
CREATE UNIQUE INDEX scaiecho_speakers_label ON scaiecho_speakers (tenant_id, label)
    WHERE deleted_at IS NULL;

CREATE TABLE scaiecho_speaker_warm (
    speaker_id TEXT NOT NULL REFERENCES scaiecho_speakers(id),
    node_id TEXT NOT NULL,
    warmed_at BIGINT NOT NULL,
    PRIMARY KEY (speaker_id, node_id)
);
