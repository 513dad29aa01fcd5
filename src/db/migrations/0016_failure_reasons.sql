-- Seed 003: every failed job and webhook delivery keeps a stable failure_reason enum
-- beside its one-line explanation (jobs: failure_detail; deliveries: error).
ALTER TABLE jobs ADD COLUMN failure_reason TEXT;
ALTER TABLE jobs ADD COLUMN failure_detail TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN failure_reason TEXT;
