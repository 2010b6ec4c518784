//! Query parameters of the WebSocket upgrade request
//! (`GET /api/v1/{gateway,client,relay}/ws?...`), with the peer's secret
//! in `Authorization: Bearer <token>`.

use serde::{Deserialize, Serialize};

use crate::PublicKey;

/// Which WireGuard implementation a gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireguardBackend {
    Kernel,
    Userspace,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConnect {
    pub public_key: PublicKey,
    /// The gateway's software version.
    pub version: String,
    pub backend: WireguardBackend,
    /// Host name, for the admin's eyes.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConnect {
    pub public_key: PublicKey,
    pub version: String,
    /// Device name, for the admin's eyes.
    #[serde(default)]
    pub name: Option<String>,
}
