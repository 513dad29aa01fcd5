-- The W3C `traceparent` of the request that queued a job, and of the request or job that
-- caused an event (#30), kept so the job's run and the event's webhook deliveries join
-- that trace; NULL when there was none.
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
ALTER TABLE event_outbox ADD COLUMN traceparent TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN traceparent TEXT;
