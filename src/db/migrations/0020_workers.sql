-- The job worker processes (#27: the transcription dashboard's workers). Each process
-- that runs jobs writes its row every few seconds; a row not written for a while is a
-- process that stopped without saying so, and goes after an hour.
CREATE TABLE job_workers (
    id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    capacity BIGINT NOT NULL,
    busy BIGINT NOT NULL,
    jobs_handled BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
