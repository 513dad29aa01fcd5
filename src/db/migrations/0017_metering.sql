-- A live stream records its usage at checkpoints (#26): each checkpoint is a row, and
-- the later ones of a stream say so, so `requests` in usage reports counts the stream
-- once.
ALTER TABLE usage_records ADD COLUMN continues INTEGER NOT NULL DEFAULT 0;
-- Who set a budget: a budget set by a platform admin ('platform') may be read and
-- lowered by the tenant's admins, never raised or deleted by them.
ALTER TABLE budgets ADD COLUMN set_by TEXT NOT NULL DEFAULT 'tenant';
