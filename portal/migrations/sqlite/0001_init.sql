-- Keyhole portal schema. Kept portable between SQLite and PostgreSQL:
-- ids are UUID text, times are unix milliseconds (BIGINT), flags are
-- BIGINT 0/1, structured values (filters, conditions) are JSON text.
-- The postgres/ twin of this file must stay equivalent.

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    is_admin BIGINT NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    disabled BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at BIGINT NOT NULL
);

CREATE TABLE service_accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    disabled BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at BIGINT NOT NULL
);

CREATE TABLE actor_groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Exactly one of user_id / service_account_id is set.
CREATE TABLE memberships (
    group_id TEXT NOT NULL REFERENCES actor_groups (id) ON DELETE CASCADE,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    service_account_id TEXT REFERENCES service_accounts (id) ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (service_account_id IS NULL)),
    UNIQUE (group_id, user_id),
    UNIQUE (group_id, service_account_id)
);
CREATE INDEX memberships_user ON memberships (user_id);
CREATE INDEX memberships_service_account ON memberships (service_account_id);

CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Every secret the portal accepts, stored as SHA-256 hex of the token.
-- kind: admin_api (user_id), service_account (service_account_id),
-- client_session (user_id or service_account_id), gateway (site_id),
-- relay (none).
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('admin_api', 'service_account', 'client_session', 'gateway', 'relay')),
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    service_account_id TEXT REFERENCES service_accounts (id) ON DELETE CASCADE,
    site_id TEXT REFERENCES sites (id) ON DELETE CASCADE,
    sign_in_method TEXT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL UNIQUE,
    ipv4 TEXT NOT NULL UNIQUE,
    ipv6 TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL,
    backend TEXT NOT NULL CHECK (backend IN ('kernel', 'userspace')),
    online BIGINT NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
    remote_ip TEXT,
    last_seen_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX gateways_site ON gateways (site_id);

CREATE TABLE relays (
    id TEXT PRIMARY KEY,
    public_ipv4 TEXT,
    public_ipv6 TEXT,
    port BIGINT NOT NULL,
    online BIGINT NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
    last_seen_at BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (public_ipv4, public_ipv6, port)
);

-- address_kind dns|ip|cidr|internet; address holds the pattern/IP/CIDR
-- (NULL for internet); filters is a JSON array.
CREATE TABLE resources (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address_kind TEXT NOT NULL CHECK (address_kind IN ('dns', 'ip', 'cidr', 'internet')),
    address TEXT,
    filters TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    CHECK ((address_kind = 'internet') = (address IS NULL))
);

CREATE TABLE resource_sites (
    resource_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    PRIMARY KEY (resource_id, site_id)
);
CREATE INDEX resource_sites_site ON resource_sites (site_id);

-- conditions is the JSON of policy::Conditions.
CREATE TABLE policies (
    id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES actor_groups (id) ON DELETE CASCADE,
    resource_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    enabled BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    conditions TEXT NOT NULL DEFAULT '{}',
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX policies_resource ON policies (resource_id);

-- Devices. Exactly one owner column is set.
CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    service_account_id TEXT REFERENCES service_accounts (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL UNIQUE,
    ipv4 TEXT NOT NULL UNIQUE,
    ipv6 TEXT NOT NULL UNIQUE,
    disabled BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    last_seen_at BIGINT,
    created_at BIGINT NOT NULL,
    CHECK ((user_id IS NULL) <> (service_account_id IS NULL))
);

-- Audit trail of flow decisions; no foreign keys, it outlives what it
-- mentions.
CREATE TABLE flow_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    gateway_id TEXT,
    policy_id TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason TEXT
);
CREATE INDEX flow_log_at ON flow_log (at);

-- Every tunnel address ever handed out (clients and gateways share the
-- space). Addresses are not reused, so a stale route never reaches a new
-- device; the /10 holds four million.
CREATE TABLE tunnel_addresses (
    ipv4 TEXT PRIMARY KEY,
    ipv6 TEXT NOT NULL UNIQUE,
    allocated_at BIGINT NOT NULL
);
