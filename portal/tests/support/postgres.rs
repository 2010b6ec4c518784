//! A throwaway PostgreSQL cluster for tests, from Debian's `postgresql`
//! package: `initdb` into a temp dir, the server listening only on a Unix
//! socket in that dir, stopped and removed on drop.
//!
//! If `KEYHOLE_TEST_DATABASE_URL` is set, that server is used instead
//! (each test still creates its own database in it).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub struct TempPostgres {
    dir: Option<PathBuf>,
    bin: PathBuf,
    base_url: String,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Newest installed server's bin dir.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    // initdb and the server refuse to run as root.
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl TempPostgres {
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("KEYHOLE_TEST_DATABASE_URL") {
            return Self {
                dir: None,
                bin: PathBuf::new(),
                base_url: url,
            };
        }
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "keyhole-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        }
        let data = dir.join("data");
        run(as_postgres(&bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        let opts = format!(
            "-k {} -p 5432 -c listen_addresses='' -c fsync=off -c synchronous_commit=off",
            dir.display()
        );
        run(as_postgres(&bin, "pg_ctl")
            .args(["-w", "-D"])
            .arg(&data)
            .args(["-l"])
            .arg(dir.join("log"))
            .args(["-o", &opts, "start"]));
        let base_url = format!(
            "postgres://postgres@localhost/postgres?host={}&port=5432",
            dir.display()
        );
        Self {
            dir: Some(dir),
            bin,
            base_url,
        }
    }

    /// URL of a fresh, empty database `name` in the cluster.
    pub async fn fresh_database(&self, name: &str) -> String {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.base_url).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        // Swap the database name in the URL's path.
        let (head, query) = self
            .base_url
            .split_once('?')
            .unwrap_or((&self.base_url, ""));
        let head = head.rsplit_once('/').map_or(head, |(h, _)| h);
        format!("{head}/{name}?{query}")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = as_postgres(&self.bin, "pg_ctl")
                .args(["-D"])
                .arg(dir.join("data"))
                .args(["-m", "immediate", "stop"])
                .output();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
