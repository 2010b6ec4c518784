//! A small blocking TURN client over UDP for tests and the benchmark:
//! Allocate (with the 401 round), ChannelBind, ChannelData both ways.
//! Works against keyhole-relay and coturn's turnserver alike.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use keyhole_stun::auth::{long_term_key, rest_password, rest_username};
use keyhole_stun::{
    Attribute, ChannelData, Class, Message, MessageBuilder, MessageType, Method, PROTOCOL_UDP,
    TransactionId,
};

pub struct TurnClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    username: String,
    realm: String,
    nonce: String,
    key: [u8; 16],
    pub relayed: SocketAddr,
    counter: u64,
}

fn tid(counter: u64) -> TransactionId {
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(b"khxt");
    t[4..].copy_from_slice(&counter.to_be_bytes());
    TransactionId(t)
}

impl TurnClient {
    /// Binds `local`, allocates on `server` with REST credentials from `secret`.
    pub fn allocate(local: SocketAddr, server: SocketAddr, secret: &str) -> anyhow::Result<Self> {
        let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
        let username = rest_username(expiry, "bench");
        let password = rest_password(secret.as_bytes(), &username);
        Self::allocate_as(local, server, username, &password)
    }

    /// Allocates with given credentials (e.g. handed out by the portal).
    pub fn allocate_as(
        local: SocketAddr,
        server: SocketAddr,
        username: String,
        password: &str,
    ) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(local).context("binding client socket")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut c = TurnClient {
            socket,
            server,
            username,
            realm: String::new(),
            nonce: String::new(),
            key: [0; 16],
            relayed: server,
            counter: 0,
        };
        // First try without credentials to learn realm and nonce.
        let mut b = MessageBuilder::new(
            MessageType::new(Class::Request, Method::ALLOCATE),
            tid(c.next()),
        );
        b.add(&Attribute::RequestedTransport(PROTOCOL_UDP))?;
        let resp = c.transact(&b.finish())?;
        let msg = Message::parse(&resp)?;
        if msg.error_code().map(|e| e.0) != Some(401) {
            bail!("expected 401, got {:?}", msg.error_code());
        }
        c.realm = msg.realm().context("no REALM")?.to_string();
        c.nonce = msg.nonce().context("no NONCE")?.to_string();
        c.key = long_term_key(&c.username, &c.realm, password);
        let resp = c.request(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(PROTOCOL_UDP)],
        )?;
        let msg = Message::parse(&resp)?;
        c.relayed = msg
            .xor_relayed_addresses()
            .next()
            .context("no XOR-RELAYED-ADDRESS")?;
        Ok(c)
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn transact(&self, req: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..5 {
            self.socket.send(req)?;
            loop {
                match self.socket.recv(&mut buf) {
                    Ok(n) if n >= 20 && buf[0] < 4 && buf[8..20] == req[8..20] => {
                        return Ok(buf[..n].to_vec());
                    }
                    Ok(_) => continue, // stray data
                    Err(_) => break,   // timeout: resend
                }
            }
        }
        bail!("no response from {}", self.server)
    }

    /// An authenticated request; retries once on 438.
    fn request(&mut self, method: Method, attrs: &[Attribute<'_>]) -> anyhow::Result<Vec<u8>> {
        for _ in 0..2 {
            let mut b =
                MessageBuilder::new(MessageType::new(Class::Request, method), tid(self.next()));
            for a in attrs {
                b.add(a)?;
            }
            b.add(&Attribute::Username(&self.username))?;
            b.add(&Attribute::Realm(&self.realm))?;
            b.add(&Attribute::Nonce(&self.nonce))?;
            b.add_message_integrity(&self.key)?;
            let resp = self.transact(&b.finish())?;
            let msg = Message::parse(&resp)?;
            match (msg.class(), msg.error_code()) {
                (Class::Success, _) => return Ok(resp),
                (_, Some((438, _))) => {
                    self.nonce = msg.nonce().context("438 without NONCE")?.to_string();
                }
                (_, e) => bail!("request {method:?} failed: {e:?}"),
            }
        }
        bail!("nonce kept going stale")
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
        self.request(
            Method::CHANNEL_BIND,
            &[
                Attribute::ChannelNumber(channel),
                Attribute::XorPeerAddress(peer),
            ],
        )?;
        Ok(())
    }

    pub fn refresh(&mut self, lifetime: u32) -> anyhow::Result<()> {
        self.request(Method::REFRESH, &[Attribute::Lifetime(lifetime)])?;
        Ok(())
    }

    pub fn send_channel_data(&self, channel: u16, data: &[u8]) -> anyhow::Result<()> {
        let frame = ChannelData { channel, data }.encode(false)?;
        self.socket.send(&frame)?;
        Ok(())
    }

    /// The next ChannelData (skipping anything else).
    pub fn recv_channel_data(&self) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .context("waiting for ChannelData")?;
            if let Ok(cd) = ChannelData::parse(&buf[..n]) {
                return Ok((cd.channel, cd.data.to_vec()));
            }
        }
    }
}
