-- WebRTC sessions. The peer itself lives in one process's memory; this row outlives
-- it, so an offer or control socket for a session whose peer state is gone (the
-- process restarted) gets 410 `..._WEBRTC_SESSION_STATE_LOST` rather than 404.

CREATE TABLE webrtc_sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    module TEXT NOT NULL,                    -- scaiecho | scaispeak
    subject TEXT NOT NULL,
    status TEXT NOT NULL,                    -- created | active | ended
    end_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webrtc_sessions_tenant ON webrtc_sessions (tenant_id, created_at);
