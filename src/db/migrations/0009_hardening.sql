-- Hardening (#22).
-- Claims of a job whose worker died (its lease ran out while processing): after three,
-- the job fails with `worker crashed` instead of taking down every worker in turn.
ALTER TABLE jobs ADD COLUMN crashes BIGINT NOT NULL DEFAULT 0;
-- Deleted speakers keep no voiceprint (biometric data); tombstones made before this
-- version lose theirs now.
UPDATE scaiecho_speakers SET embedding = NULL WHERE deleted_at IS NOT NULL;
-- Webhook secret rotation: the secret replaced last goes on signing deliveries (a
-- second `v1=`) until this time, so receivers can switch without losing any.
ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_until BIGINT;
