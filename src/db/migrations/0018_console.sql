-- When each API key last authenticated (#27: the console's key list). Written when the
-- key is loaded into a process's principal cache, so it is exact to the cache's TTL and
-- costs one write per key per TTL, not one per request.
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
