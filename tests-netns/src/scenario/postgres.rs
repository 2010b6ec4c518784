//! A throwaway PostgreSQL cluster for a portal under test: `initdb` into a
//! temp dir, the server listening only on a Unix socket there (reachable
//! from every network namespace, no TCP), stopped and removed on drop.
//! With `KEYHOLE_TEST_DATABASE_URL` set, that server is used instead and a
//! fresh database is created in it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::naming::unique_name;

pub struct TempPostgres {
    /// The cluster's directory when we started one.
    dir: Option<PathBuf>,
    bin: PathBuf,
    /// URL of the database created for this test.
    pub url: String,
}

impl TempPostgres {
    /// A fresh, empty database: in `KEYHOLE_TEST_DATABASE_URL`'s server if
    /// set, else in a cluster of our own.
    pub fn start() -> Result<TempPostgres> {
        let name = unique_name("keyhole_e2e").replace('-', "_");
        if let Ok(base) = std::env::var("KEYHOLE_TEST_DATABASE_URL") {
            run(Command::new("psql")
                .arg(&base)
                .args(["-qc", &format!("CREATE DATABASE {name}")]))?;
            return Ok(TempPostgres {
                dir: None,
                bin: PathBuf::new(),
                url: with_database(&base, &name),
            });
        }
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(unique_name("keyhole-pg"));
        std::fs::create_dir_all(&dir)?;
        let mut pg = TempPostgres {
            dir: Some(dir.clone()),
            bin,
            url: String::new(),
        };
        run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        let data = dir.join("data");
        run(pg
            .tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data))?;
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off",
            dir.display()
        );
        run(pg
            .tool("pg_ctl")
            .args(["-w", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-o", &opts, "start"]))?;
        run(pg.tool("createdb").args([
            "-h",
            dir.to_str().context("dir")?,
            "-U",
            "postgres",
            &name,
        ]))?;
        pg.url = format!(
            "postgres://postgres@localhost/{name}?host={}",
            dir.display()
        );
        Ok(pg)
    }

    /// A PostgreSQL tool run as the `postgres` user (the server refuses root).
    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
        c
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-m", "immediate", "stop"])
                .output();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The newest installed server's bin dir.
fn bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|p| version(p));
    dirs.pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

fn version(bin: &Path) -> u32 {
    bin.parent()
        .and_then(|v| v.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// `base` with its database name replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = base.split_once('?').unwrap_or((base, ""));
    let head = match head.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}"),
            None => format!("{scheme}://{rest}"),
        },
        None => head.to_owned(),
    };
    if query.is_empty() {
        format!("{head}/{name}")
    } else {
        format!("{head}/{name}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_swapped() {
        assert_eq!(
            with_database("postgres://u@h/postgres?host=/tmp/x", "db1"),
            "postgres://u@h/db1?host=/tmp/x"
        );
        assert_eq!(with_database("postgres://u@h", "db1"), "postgres://u@h/db1");
        assert_eq!(
            with_database("postgres://u@h:5432/x", "db1"),
            "postgres://u@h:5432/db1"
        );
    }
}
