-- Prepaid balances (#32, seed 003): a tenant's balance in cost units, topped up by a
-- platform admin and debited while its instances run (each node's price_per_hour),
-- with every movement kept. A launch below the launch threshold is 402
-- BILLING_BELOW_MINIMUM; a balance run out fails the tenant's priced instances.
CREATE TABLE balances (
    tenant_id TEXT PRIMARY KEY,
    balance DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE balance_entries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    -- Positive: a top-up; negative: a debit.
    amount DOUBLE PRECISION NOT NULL,
    -- top_up | instance
    kind TEXT NOT NULL,
    instance_id TEXT,
    detail TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX balance_entries_tenant ON balance_entries (tenant_id, created_at);
-- What an instance costs per hour (the sum of its nodes' prices at placement), and up
-- to when it has been billed.
ALTER TABLE instances ADD COLUMN hourly_cost DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN billed_until BIGINT;
