-- A live stream records its usage at checkpoints (#26): each checkpoint is a row, and
-- the later ones of a stream say so, so `requests` in usage reports counts the stream
-- once.
ALTER TABLE usage_records ADD COLUMN continues INTEGER NOT NULL DEFAULT 0;
