//! A real `keyhole-portal` and its REST API, driven with `curl` from the
//! portal's namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::netns::Netns;
use crate::proc::Proc;

use super::binaries::portal_bin;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A running portal: its process, the bootstrap admin's API token and the
/// default site.
pub struct Portal {
    pub proc: Proc,
    /// `ip:port` it listens on (HTTP and WebSockets).
    pub addr: String,
    pub admin_token: String,
    pub site_id: String,
    ns_name: String,
    data_dir: PathBuf,
    database_url: Option<String>,
    relay_secret: String,
}

impl Portal {
    /// Starts the portal in `ns` on `addr` with its SQLite database in
    /// `data_dir`, or on PostgreSQL at `database_url`. Relays register
    /// with `relay_secret`.
    pub fn start(
        ns: &Netns,
        addr: &str,
        data_dir: &Path,
        database_url: Option<&str>,
        relay_secret: &str,
    ) -> Result<Portal> {
        let proc = spawn(ns, addr, data_dir, database_url, relay_secret)?;
        let out = proc.stdout_so_far();
        let admin_token = out
            .lines()
            .find_map(|l| l.split("store it now): ").nth(1))
            .map(|t| t.trim().to_owned())
            .with_context(|| format!("no admin token printed:\n{out}"))?;
        let site_id = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("default site: default ("))
            .and_then(|s| s.strip_suffix(')'))
            .map(str::to_owned)
            .with_context(|| format!("no default site printed:\n{out}"))?;
        Ok(Portal {
            proc,
            addr: addr.to_owned(),
            admin_token,
            site_id,
            ns_name: ns.name().to_owned(),
            data_dir: data_dir.to_owned(),
            database_url: database_url.map(str::to_owned),
            relay_secret: relay_secret.to_owned(),
        })
    }

    /// SIGKILLs the portal (as a crash would) and waits until it is gone.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()
    }

    /// Starts the portal again on the same database, as after a crash;
    /// returns once it listens. The old process must be gone.
    pub fn start_again(&mut self, ns: &Netns) -> Result<()> {
        self.proc = spawn(
            ns,
            &self.addr,
            &self.data_dir,
            self.database_url.as_deref(),
            &self.relay_secret,
        )?;
        Ok(())
    }

    /// `http://<addr>`, what gateways, clients and relays are given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One REST call as the admin from inside `ns` (the portal's own or
    /// any that reaches it); the JSON answer, `Null` for an empty one.
    pub fn api(&self, ns: &Netns, method: &str, path: &str, body: &str) -> Result<Value> {
        let out = ns
            .run(
                "curl",
                [
                    "-sS",
                    "--fail-with-body",
                    "--max-time",
                    "10",
                    "-X",
                    method,
                    "-H",
                    &format!("Authorization: Bearer {}", self.admin_token),
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    body,
                    &format!("http://{}/api/v1{path}", self.addr),
                ],
            )
            .with_context(|| format!("{method} {path} (portal in netns {})", self.ns_name))?;
        if out.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out).with_context(|| format!("{method} {path}: not JSON: {out}"))
    }

    /// As [`api`](Self::api), returning the answer's string field `field`.
    pub fn api_str(
        &self,
        ns: &Netns,
        method: &str,
        path: &str,
        body: &str,
        field: &str,
    ) -> Result<String> {
        let v = self.api(ns, method, path, body)?;
        match v[field].as_str() {
            Some(s) => Ok(s.to_owned()),
            None => bail!("{method} {path}: no {field:?} in {v}"),
        }
    }
}

/// Spawns the portal and waits until it listens.
fn spawn(
    ns: &Netns,
    addr: &str,
    data_dir: &Path,
    database_url: Option<&str>,
    relay_secret: &str,
) -> Result<Proc> {
    let bin = portal_bin()?;
    let mut cmd = ns.command(
        bin.to_str().context("portal path")?,
        [
            "--listen",
            addr,
            "--data-dir",
            data_dir.to_str().context("data dir")?,
            "--admin-email",
            ADMIN_EMAIL,
        ],
    );
    cmd.env("KEYHOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("KEYHOLE_RELAY_SECRET", relay_secret)
        .env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    let proc = ns.spawn_command(cmd)?;
    proc.wait_for_output("listening on", Duration::from_secs(30))
        .with_context(|| format!("portal did not start:\n{}", proc.output_so_far()))?;
    Ok(proc)
}
