//! TURN over TCP: one task per connection splits the byte stream into
//! STUN and ChannelData frames and forwards them to the event loop.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::event_loop::Inbound;

/// Frames queued toward one client before we drop (slow reader).
const WRITE_QUEUE: usize = 1024;

pub async fn accept(listener: TcpListener, inbound: mpsc::Sender<Inbound>) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let client = crate::listen::unmap(client);
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, client, inbound.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "TCP accept failed"),
        }
    }
}

async fn connection(stream: TcpStream, client: SocketAddr, inbound: mpsc::Sender<Inbound>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    if inbound
        .send(Inbound::TcpOpened { client, tx })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 65536];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match keyhole_stun::frame_len(&buf) {
                Ok(Some(len)) if buf.len() >= len => {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    if inbound
                        .send(Inbound::TcpFrame { client, frame })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(%client, error = %e, "not STUN over TCP, closing");
                    break 'read;
                }
            }
        }
    }
    writer.abort();
    let _ = inbound.send(Inbound::TcpClosed { client }).await;
}
