-- Scale-out (#25), seed 003: a chat model's context size. A request whose prompt and
-- requested completion exceed it is 413 CTX_TOO_LARGE with the limit; NULL: no limit.
ALTER TABLE gateway_models ADD COLUMN context_length BIGINT;
