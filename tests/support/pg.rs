//! A PostgreSQL server for the integration tests, and a fresh database per
//! test on it.
//!
//! The server: `INTER_SESSION_TEST_PG_URL` (a superuser URL, e.g. the one
//! `.ci/pg-throwaway start` exports; each test makes its own database) if
//! set, else a throwaway cluster started here (initdb into a temp dir, a free
//! port on 127.0.0.1, the socket in the temp dir, `fsync=off`, as the
//! `postgres` user when running as root), stopped when the test binary ends.
//! Without either — no URL and no PostgreSQL installed — `server_url` and
//! `fresh_db` say why (`Err`), and every PostgreSQL test SKIPS loudly with
//! `support::skip`, need `postgres` (one line, the end-of-run list, a
//! failure under `INTER_SESSION_TEST_REQUIRE=all`). A URL that does not
//! work, or an installed PostgreSQL that will not start, FAILS the tests.
//!
//! PostgreSQL's programs are found in `/usr/lib/postgresql/<newest>/bin`,
//! else on `PATH`; `INTER_SESSION_TEST_PG_BIN=<dir>` (test-only) searches
//! only that folder, so `INTER_SESSION_TEST_PG_BIN=/nonexistent` hides an
//! installed PostgreSQL to try the fresh-machine path.
//!
//! Included with `#[path = "support/pg.rs"] mod pg;` next to `mod support;`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The variable naming a server the tests may use.
pub const URL_VAR: &str = "INTER_SESSION_TEST_PG_URL";
pub const INSTALL_HINT: &str = "install PostgreSQL (Debian/Ubuntu: `apt-get install -y \
     postgresql`; its binaries go to /usr/lib/postgresql/<version>/bin), or point \
     INTER_SESSION_TEST_PG_URL at a server where the URL's user may CREATE DATABASE \
     (`eval \"$(.ci/pg-throwaway start)\"` starts one)";
/// The superuser password of the clusters started here.
pub const PASSWORD: &str = "s3cret-Pw";

// ------------------------------------------------------------ the server

/// A throwaway PostgreSQL cluster.
pub struct Server {
    bin: PathBuf,
    pub root: PathBuf,
    pub port: u16,
    as_postgres: bool,
    /// More `-c name=value` settings for the server.
    extra: String,
}

impl Server {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let data = self.data();
        let mut full = vec!["-D", data.to_str().unwrap_or_default()];
        full.extend_from_slice(args);
        run_pg(&self.bin.join("pg_ctl"), &full, self.as_postgres)
    }

    /// Start (or restart after `stop`); waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400 {}",
            self.port,
            self.root.display(),
            self.extra
        );
        let log = self.root.join("log");
        let out = self.pg_ctl(&[
            "-l",
            log.to_str().unwrap_or_default(),
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ])?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.root.join("log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// `pg_ctl stop -m <mode>`, waiting for it.
    pub fn stop(&self, mode: &str) {
        let _ = self.pg_ctl(&["-w", "-m", mode, "stop"]);
    }

    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// initdb + start, as the `postgres` user when we are root. TCP
    /// connections are trusted (the URL's password is not asked for): the
    /// client's SCRAM exchange costs ~60 ms per connection in a debug build,
    /// and every CLI command makes one. `launch_with` makes a server that
    /// checks passwords.
    pub fn launch() -> Result<Server, String> {
        Server::launch_with("trust", |_| Ok(String::new()))
    }

    /// Like `launch`, with `auth` for TCP connections (`trust`,
    /// `scram-sha-256`) and server settings made by `extra` from the root folder.
    pub fn launch_with(
        auth: &str,
        extra: impl Fn(&Path) -> Result<String, String>,
    ) -> Result<Server, String> {
        let bin = find_pg_bin().ok_or_else(|| format!("no initdb/pg_ctl found: {INSTALL_HINT}"))?;
        // SAFETY: geteuid cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let root = tempfile::Builder::new()
            .prefix("inter-session-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("tempdir: {e}"))?
            .keep();
        let postgres_uid = if as_postgres {
            let uid = user_id("postgres").ok_or_else(|| {
                format!("running as root but there is no 'postgres' user: {INSTALL_HINT}")
            })?;
            chown(&root, uid)?;
            Some(uid)
        } else {
            None
        };
        let pwfile = root.join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| format!("pwfile: {e}"))?;
        if let Some(uid) = postgres_uid {
            chown(&pwfile, uid)?;
        }
        let data = root.join("data");
        let out = run_pg(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-U",
                "postgres",
                "--pwfile",
                pwfile.to_str().unwrap_or_default(),
                "--auth-local=trust",
                &format!("--auth-host={auth}"),
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ],
            as_postgres,
        )?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&root);
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let extra = extra(&root)?;
        // The port is free when picked but may be taken before the server
        // binds it: a few tries with another port.
        let mut last = String::new();
        for _ in 0..5 {
            let server = Server {
                bin: bin.clone(),
                root: root.clone(),
                port: free_port()?,
                as_postgres,
                extra: extra.clone(),
            };
            match server.start() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last = e;
                    // Dropping `server` would remove the folder; keep it for the next try.
                    std::mem::forget(server);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&root);
        Err(last)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn run_pg(program: &Path, args: &[&str], as_postgres: bool) -> Result<Output, String> {
    let mut c = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    c.args(args)
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {}: {e}", program.display()))
}

/// The test-only override of where PostgreSQL's programs are.
pub const BIN_VAR: &str = "INTER_SESSION_TEST_PG_BIN";

/// The newest installed PostgreSQL's bin folder (Debian layout), else one on
/// PATH; only `$INTER_SESSION_TEST_PG_BIN` when that is set.
pub fn find_pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_VAR).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return (dir.join("initdb").exists() && dir.join("pg_ctl").exists()).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
}

pub fn user_id(name: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

pub fn chown(path: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path; gid -1 leaves the group.
    if unsafe { libc::chown(c.as_ptr(), uid, u32::MAX) } != 0 {
        return Err(format!(
            "chown {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

// ------------------------------------------------------------ skipping
// (This file is shared with the benchmark, which has no `support`: it says
// why a test cannot run, `Err(why)`, and the test skips with `support::skip`.)

/// Whether this machine can start clusters of its own (tests that restart
/// their server or need TLS settings do); `Err(why)` when it cannot.
pub fn can_launch() -> Result<(), String> {
    match find_pg_bin() {
        Some(_) => Ok(()),
        None => Err(
            "this test starts a PostgreSQL server of its own and PostgreSQL is not \
                     installed (no initdb); install it: `apt-get install -y postgresql` \
                     (Debian/Ubuntu)"
                .to_string(),
        ),
    }
}

// ------------------------------------------------------------ the shared server

enum Unavailable {
    /// Nothing to test against: skip loudly.
    Skip(String),
    /// Something is there but broken: fail.
    Fail(String),
}

static SHARED: OnceLock<Result<String, Unavailable>> = OnceLock::new();
static SHARED_SERVER: Mutex<Option<Server>> = Mutex::new(None);

extern "C" fn stop_shared_server() {
    if let Ok(mut s) = SHARED_SERVER.lock() {
        drop(s.take());
    }
}

/// Whether the tests were given a server (`INTER_SESSION_TEST_PG_URL`).
pub fn given_url() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty())
}

/// The admin URL of the server the tests use (started on first use), or
/// `Err(why)` when there is none to test against (the test skips).
pub fn server_url() -> Result<String, String> {
    let got = SHARED.get_or_init(|| {
        if let Some(url) = given_url() {
            let _ = writeln!(std::io::stderr(), "postgres tests: using {URL_VAR}");
            return Ok(url);
        }
        if find_pg_bin().is_none() {
            return Err(Unavailable::Skip(format!(
                "no PostgreSQL to test against: {URL_VAR} is not set and PostgreSQL is not \
                 installed; {INSTALL_HINT}"
            )));
        }
        let server = Server::launch().map_err(Unavailable::Fail)?;
        let url = server.admin_url();
        let _ = writeln!(
            std::io::stderr(),
            "postgres tests: started a throwaway cluster on port {} ({URL_VAR} not set)",
            server.port
        );
        if let Ok(mut s) = SHARED_SERVER.lock() {
            *s = Some(server);
        }
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(stop_shared_server) };
        Ok(url)
    });
    match got {
        Ok(url) => Ok(url.clone()),
        Err(Unavailable::Skip(why)) => Err(why.clone()),
        Err(Unavailable::Fail(e)) => panic!("cannot run the PostgreSQL tests: {e}"),
    }
}

// ------------------------------------------------------------ databases

/// `url` with its database replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let base = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// The database name of a URL.
pub fn db_name(url: &str) -> String {
    let main = url.split('?').next().unwrap_or("");
    let after_scheme = main.find("://").map_or(main, |i| &main[i + 3..]);
    after_scheme
        .split_once('/')
        .map(|(_, db)| db.to_string())
        .unwrap_or_default()
}

/// The password in a URL, if it has one.
pub fn url_password(url: &str) -> Option<String> {
    let main = url.split('?').next().unwrap_or("");
    let rest = &main[main.find("://")? + 3..];
    let authority = rest.split('/').next().unwrap_or("");
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, pw) = userinfo.split_once(':')?;
    (!pw.is_empty()).then(|| pw.to_string())
}

pub fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"))
}

static DB_SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database on `server_url`; returns its URL.
pub fn fresh_db_on(server_url: &str) -> String {
    let name = format!(
        "is_test_{}_{}",
        std::process::id(),
        DB_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let mut c = admin(server_url);
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    with_db(server_url, &name)
}

/// A fresh database on the shared server, or `Err(why)` (see `server_url`).
pub fn fresh_db() -> Result<String, String> {
    server_url().map(|u| fresh_db_on(&u))
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_parts() {
        let u = "postgres://postgres:pw@127.0.0.1:5/is_test_1?sslmode=disable";
        assert_eq!(super::db_name(u), "is_test_1");
        assert_eq!(super::url_password(u).as_deref(), Some("pw"));
        assert_eq!(super::url_password("postgres://u@h/d"), None);
        assert_eq!(
            super::with_db(u, "x"),
            "postgres://postgres:pw@127.0.0.1:5/x?sslmode=disable"
        );
    }
}
