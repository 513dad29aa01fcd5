-- A model's answer cache (#28): JSON `{"ttl_seconds", "semantic_threshold"}`, NULL when
-- its answers are not cached.
ALTER TABLE gateway_models ADD COLUMN cache TEXT;
