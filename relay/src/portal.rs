//! Registration with the portal (`--portal-url` + `KEYHOLE_TOKEN`): the
//! relay announces its public addresses on `/api/v1/relay/ws`, receives the
//! TURN shared secret in the `init` reply, reports its load periodically,
//! and reconnects with backoff when the connection drops.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use keyhole_proto::{
    Decoded, Envelope, RequestId, TurnSecret, decode,
    messages::{PortalToRelay, RelayHeartbeat, RelayInit, RelayLoad, RelayRegister, RelayToPortal},
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest as _,
        http::{HeaderValue, header::AUTHORIZATION},
    },
};

use crate::stats::Stats;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the connection and for the `init` reply.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff: doubles from the first to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where and how this relay registers.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `http(s)://` or `ws(s)://` base URL of the portal.
    pub portal_url: String,
    /// A relay token issued by the portal (or its shared relay secret).
    pub token: String,
    pub public_ipv4: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub port: u16,
    /// How often load is reported.
    pub heartbeat: Duration,
}

/// `…/api/v1/relay/ws` from the portal's base URL.
pub fn relay_ws_url(portal_url: &str) -> anyhow::Result<String> {
    let base = portal_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_owned()
    } else {
        bail!("portal URL must start with http://, https://, ws:// or wss://");
    };
    Ok(format!("{base}/api/v1/relay/ws"))
}

fn load(stats: &Stats) -> RelayLoad {
    RelayLoad {
        allocations: u32::try_from(Stats::get(&stats.allocations)).unwrap_or(u32::MAX),
    }
}

/// Connect, register and wait for `init`.
async fn register(reg: &Registration, stats: &Stats) -> anyhow::Result<(Ws, RelayInit)> {
    let mut req = relay_ws_url(&reg.portal_url)?.into_client_request()?;
    req.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", reg.token))
            .context("the token is not a valid header value")?,
    );
    let (mut ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .context("timed out connecting to the portal")?
        .context("connecting to the portal")?;
    let register = Envelope::request(
        RequestId(1),
        RelayToPortal::Register(RelayRegister {
            public_ipv4: reg.public_ipv4,
            public_ipv6: reg.public_ipv6,
            port: reg.port,
            load: load(stats),
        }),
    );
    ws.send(Message::Text(register.encode()?.into())).await?;
    let init = tokio::time::timeout(CONNECT_TIMEOUT, async {
        while let Some(msg) = ws.next().await {
            let Message::Text(text) = msg? else { continue };
            match decode::<PortalToRelay>(text.as_bytes()) {
                Ok(Decoded::Known(env)) => match env.message {
                    PortalToRelay::Init(init) => return Ok(init),
                    PortalToRelay::Error(e) => {
                        bail!("the portal refused the registration: {}", e.message)
                    }
                },
                Ok(Decoded::Unknown { type_name, .. }) => {
                    tracing::debug!(%type_name, "ignoring unknown portal message");
                }
                Err(e) => bail!("bad frame from the portal: {e}"),
            }
        }
        bail!("the portal closed the connection before answering")
    })
    .await
    .context("timed out waiting for the portal's init")??;
    Ok((ws, init))
}

/// Register once, retrying with backoff until the portal answers; returns
/// the TURN secret and a task that keeps the registration alive.
pub async fn start(
    reg: Registration,
    stats: Arc<Stats>,
) -> anyhow::Result<(TurnSecret, tokio::task::JoinHandle<()>)> {
    let mut backoff = BACKOFF_MIN;
    let (ws, init) = loop {
        match register(&reg, &stats).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "registering with the portal failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    tracing::info!(relay = %init.relay_id, "registered with the portal");
    let secret = init.turn_secret.clone();
    let task = tokio::spawn(keep_registered(reg, stats, ws, secret.clone()));
    Ok((secret, task))
}

/// Report load until the connection drops, then re-register with backoff.
async fn keep_registered(reg: Registration, stats: Arc<Stats>, mut ws: Ws, secret: TurnSecret) {
    loop {
        let reason = serve(&reg, &stats, &mut ws).await;
        tracing::warn!(reason = %format!("{reason:#}"), "portal connection lost, re-registering");
        let mut backoff = BACKOFF_MIN;
        ws = loop {
            tokio::time::sleep(backoff).await;
            match register(&reg, &stats).await {
                Ok((ws, init)) => {
                    if init.turn_secret != secret {
                        // The running TURN server keeps the secret it
                        // started with; credentials from the new one fail
                        // until the relay restarts.
                        tracing::error!(
                            "the portal's TURN secret changed: restart the relay to use the new one"
                        );
                    }
                    tracing::info!(relay = %init.relay_id, "registered with the portal again");
                    break ws;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "re-registering failed");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
    }
}

/// One registered connection: heartbeats out, pings answered, until it
/// ends.
async fn serve(reg: &Registration, stats: &Stats, ws: &mut Ws) -> anyhow::Error {
    let mut tick = tokio::time::interval(reg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let hb = Envelope::new(RelayToPortal::Heartbeat(RelayHeartbeat { load: load(stats) }));
                let text = match hb.encode() {
                    Ok(t) => t,
                    Err(e) => return e.into(),
                };
                if let Err(e) = ws.send(Message::Text(text.into())).await {
                    return e.into();
                }
            }
            msg = ws.next() => match msg {
                None => return anyhow::anyhow!("closed"),
                Some(Err(e)) => return e.into(),
                Some(Ok(Message::Close(frame))) => {
                    return anyhow::anyhow!("closed by the portal: {frame:?}");
                }
                // Pings are answered by tungstenite while reading.
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_urls_become_relay_websocket_urls() {
        assert_eq!(
            relay_ws_url("http://portal:8080/").unwrap(),
            "ws://portal:8080/api/v1/relay/ws"
        );
        assert_eq!(
            relay_ws_url("https://portal.example").unwrap(),
            "wss://portal.example/api/v1/relay/ws"
        );
        assert_eq!(
            relay_ws_url("ws://10.0.0.1:1").unwrap(),
            "ws://10.0.0.1:1/api/v1/relay/ws"
        );
        assert!(relay_ws_url("portal:8080").is_err());
    }
}
