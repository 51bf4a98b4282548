//! A real PostgreSQL per test binary: Debian's server binaries
//! (`/usr/lib/postgresql/*/bin`), `initdb` in a fresh temporary directory
//! and `pg_ctl` on a free loopback port, run as an unprivileged user
//! (PostgreSQL refuses to run as root: as root, the test user runs it).
//! Stopped and removed when dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tempfile::TempDir;

/// The superuser `initdb` creates (trust authentication on loopback).
const SUPERUSER: &str = "cairn";
/// Starts retried when the port picked turned out to be taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A running PostgreSQL server, stopped on drop.
pub struct PostgresServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The user the server runs as (None: the current user).
    user: Option<String>,
    /// Server settings beyond the defaults (`-c ssl=on ...`).
    extra: String,
    // Dropped after the server is stopped (fields drop after `Drop::drop`).
    dir: TempDir,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The newest installed server's bin dir (`/usr/lib/postgresql/N/bin`).
pub fn server_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("picking a free loopback port")
}

impl PostgresServer {
    /// initdb + start on a free 127.0.0.1 port; panics with the server's
    /// log when it does not come up (install `postgresql`:
    /// scripts/setup-test-env.sh).
    pub fn start() -> PostgresServer {
        Self::start_with(None)
    }

    /// [`Self::start`] with TLS on (`ssl=on`), serving the PEM certificate
    /// `cert` and its key `key` (copied into the server's dir, owned by
    /// the server's user, mode 0600 as PostgreSQL demands). Plain
    /// connections are still accepted.
    pub fn start_tls(cert: &Path, key: &Path) -> PostgresServer {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> PostgresServer {
        let bin = server_bin_dir()
            .expect("no /usr/lib/postgresql/*/bin/initdb: run scripts/setup-test-env.sh");
        let user = is_root().then(crate::test_user);
        let dir = tempfile::Builder::new()
            .prefix("cairn-postgres-")
            .tempdir()
            .expect("creating the server's temp dir");
        if let Some(u) = &user {
            let st = Command::new("chown").arg(u).arg(dir.path()).status();
            assert!(
                st.is_ok_and(|s| s.success()),
                "chown of the server dir to {u}"
            );
        }
        let data = dir.path().join("data");
        let mut server = PostgresServer {
            bin,
            data,
            port: 0,
            user,
            extra: String::new(),
            dir,
        };
        if let Some((cert, key)) = tls {
            server.extra = server.install_tls(cert, key);
        }
        let out = server.run(
            "initdb",
            &[
                "-D",
                &server.data.display().to_string(),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            if server.try_start() {
                return server;
            }
        }
        panic!("PostgreSQL did not start:\n{}", server.log());
    }

    /// `pg_ctl start` on `self.port`, waiting until it accepts connections.
    fn try_start(&self) -> bool {
        let socket_dir = self.dir.path().display().to_string();
        // Tests only: no fsync, a small footprint, loopback and our own
        // socket dir (the system's /run/postgresql is not ours).
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {socket_dir} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB \
             -c max_connections=50 {}",
            self.port, self.extra
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let out = self.run(
            "pg_ctl",
            &[
                "start",
                "-D",
                &self.data.display().to_string(),
                "-w",
                "-t",
                "60",
                "-l",
                &log,
                "-o",
                &options,
            ],
        );
        out.status.success()
    }

    /// Copy the certificate and key where the server reads them; the
    /// settings that turn TLS on.
    fn install_tls(&self, cert: &Path, key: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        let mut settings = String::from("-c ssl=on");
        for (from, name, setting) in [
            (cert, "server.crt", "ssl_cert_file"),
            (key, "server.key", "ssl_key_file"),
        ] {
            let to = self.dir.path().join(name);
            std::fs::copy(from, &to).expect("copying the TLS files");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .expect("chmod of the TLS files");
            if let Some(u) = &self.user {
                let st = Command::new("chown").arg(u).arg(&to).status();
                assert!(st.is_ok_and(|s| s.success()), "chown of {name} to {u}");
            }
            settings.push_str(&format!(" -c {setting}={}", to.display()));
        }
        settings
    }

    /// Run one of the server's programs as the server's user.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `postgres://` URL for database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Create a fresh database `name` and return its URL (one per test
    /// keeps tests apart on one server).
    pub fn create_database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, name],
        );
        assert!(out.status.success(), "createdb {name}: {}", text(&out));
        self.url(name)
    }

    /// Run SQL through `psql` as the superuser in database `db`; its stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's log, for the message of a failing test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The data directory (owned by the server's user).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        // Immediate: a test server has nothing to flush; its dir goes next.
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
    }
}
