-- Device authorization (RFC 8628) for `keyhole login`. The client starts
-- a request bound to its WireGuard public key and device name; a user
-- approves it on /device with the short user_code; the client polls with
-- device_code (stored only as its SHA-256, hex) and receives a
-- client_session token once. status: pending, approved, denied, consumed.
CREATE TABLE device_authorizations (
    id TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'consumed')),
    interval_secs BIGINT NOT NULL,
    last_polled_at BIGINT,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    sign_in_method TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX device_authorizations_expires ON device_authorizations (expires_at);

-- The device key a client_session token is bound to: the control channel
-- accepts the token only with this public key. Goes with its token.
CREATE TABLE client_session_keys (
    token_id TEXT PRIMARY KEY REFERENCES tokens (id) ON DELETE CASCADE,
    public_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX client_session_keys_key ON client_session_keys (public_key);
