-- Foundation schema: tenants, users, roles, permissions, grants, API keys, refresh
-- tokens, module enablement, audit log. Portable between SQLite and PostgreSQL: ids are
-- TEXT, times are BIGINT unix milliseconds, flags are BIGINT 0/1, JSON is TEXT.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    rate_limit TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX users_tenant ON users(tenant_id);

-- Permission strings the platform knows (catalogue; grants may also use wildcards).
CREATE TABLE permissions (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL
);

-- Built-in roles have tenant_id NULL; custom roles belong to one tenant.
CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    builtin BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX roles_tenant_name ON roles(tenant_id, name);

CREATE TABLE role_permissions (
    role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    permission TEXT NOT NULL,
    PRIMARY KEY (role_id, permission)
);

-- Role assignments of users and API keys (subject_kind 'user' | 'api_key').
CREATE TABLE subject_roles (
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (subject_kind, subject_id, role_id)
);

-- Direct permission grants of users and API keys.
CREATE TABLE grants (
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    permission TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (subject_kind, subject_id, permission)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_by TEXT,
    rate_limit TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- Rotating refresh tokens; a family is one login. Presenting a rotated-out token again
-- revokes its whole family (theft detection).
CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    replaced_by TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE tenant_modules (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    module_id TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, module_id)
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    detail TEXT,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, created_at);
