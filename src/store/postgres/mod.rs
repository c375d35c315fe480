//! The PostgreSQL backend: one database shared by sessions on several
//! machines, selected with `INTER_SESSION_DATABASE_URL=postgres://…`.
//!
//! What it does:
//! - Implements `Mailbox` with the same observable behaviour as the SQLite
//!   store (names and suffixes, offline replay in commit order, broadcasts
//!   and their rate limit, replies, `mail ask` holds, expiry, idempotent
//!   sends), over the schema in `migrations/postgres/`, applied in order under
//!   a transaction-level advisory lock and recorded in `schema_migrations`.
//! - Commit order: every send takes one transaction-level advisory lock
//!   before it inserts, so `seq` order is commit order, as a monitor's
//!   cursor needs.
//! - Presence: a monitor's claim takes a session-level advisory lock on the
//!   session id, on a dedicated connection. "Online" is the stored state
//!   `online` *and* that lock held (seen in `pg_lock_status()`, the function
//!   behind `pg_locks`), so a killed monitor
//!   reads offline as soon as its connection closes. TCP keepalives (client
//!   side, and the server's `tcp_keepalives_*`/`tcp_user_timeout` through the
//!   startup options) make a machine that died without closing its socket
//!   lose its names within about a minute.
//! - Wake-up: the monitor's dedicated connection LISTENs on its mailbox's
//!   channel (`inter_session_<id>`) and on `inter_session` (session changes)
//!   before `subscribe` returns; senders `pg_notify` in the inserting
//!   transaction, with the message's seq (ids only) as payload. A thread
//!   forwards notifications as `Wake::Change`.
//! - Faults: a lost connection is retried with backoff (briefly for a
//!   command, for minutes in a monitor); a monitor prints one
//!   `[inter-session] database connection lost; reconnecting` notice, then
//!   re-takes its lock, re-LISTENs and re-scans (if another monitor took the
//!   name meanwhile, `check_intact` fails and the monitor stops). A send
//!   whose commit answer was lost is checked by id before it is retried, so
//!   it is not doubled.
//! - TLS through rustls (ring provider; no OpenSSL), honouring `sslmode`
//!   (disable, allow/prefer, require, verify-ca, verify-full) and
//!   `sslrootcert` (a PEM file, or `system`); passwords from the URL,
//!   `PGPASSFILE` or `~/.pgpass`, never printed: `location()` masks them.
//! - `copy_from_sqlite` moves an SQLite mailbox into PostgreSQL (`db copy`).
//!
//! What it does not do: client certificates (`sslcert`/`sslkey`), libpq's
//! `PG*` environment variables other than `PGPASSFILE`, or connection pooling
//! (each process holds its own connections: a command one, a monitor two —
//! queries, and the dedicated lock-and-LISTEN one; a pooler in transaction
//! mode would break both advisory locks and LISTEN, so point the URL at the
//! server or at a session-mode pool). Keep `max_connections` above twice the
//! number of monitors plus the commands running at once.
//! PostgreSQL text cannot hold U+0000: a body that has one is stored with `\`
//! doubled and U+0000 written `\0` (`text_escaped` set), and read back whole.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, Row, SimpleQueryMessage, Statement};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{next_candidate, prefix_pattern};
use super::{
    now_text, Address, Claim, ClaimRequest, HistoryFilter, HistoryRow, LookupError, Mailbox,
    Message, NewMessage, NotFound, Peer, Presence, Recipients, SendError, Sent, SentTo, Session,
    SqlResult, State, Subscription, Wake, BROADCASTS_PER_MINUTE, INLINE_CHARS, LINE_PREFIX_CHARS,
};
use crate::datadir;

/// A function in the schema that returns the number of applied migrations.
const VERSION_FUNCTION: &str = "inter_session_schema_version";

/// The schema, in order; `schema_migrations` records which are applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_lean_writes",
        include_str!("../../../migrations/postgres/0002_lean_writes.sql"),
    ),
];

/// First key of every advisory lock we take (two-key form), so that our
/// locks cannot collide with another application's in the same database.
const LOCK_NS: i32 = 0x1A7E_5E55;
/// Second key of the lock that serialises first-time set-up.
const SETUP_KEY: i32 = 0;
/// Second key of the lock every send holds until it commits (commit order).
const SEND_KEY: i32 = -1;
/// Session changes (claims, renames, departures) are announced here.
const GLOBAL_CHANNEL: &str = "inter_session";
/// The current time in SQL, in the stored text format.
const SQL_NOW: &str =
    "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
/// The columns `message_from_row` reads, over `messages m` and `blobs b`.
const MESSAGE_COLUMNS: &str =
    "m.seq, m.id, m.created_at, m.kind, m.sender, m.sender_label, m.chars, \
     m.sender_id, m.in_reply_to, COALESCE(m.thread_id, m.id), m.expires_at, m.text_escaped";
/// The notice a monitor prints (once) when its database connection drops.
const LOST_NOTICE: &str = "[inter-session] database connection lost; reconnecting\n";
/// How long a command retries a transient failure before giving up.
const COMMAND_PATIENCE: Duration = Duration::from_secs(5);
/// How long a monitor keeps retrying before it gives up with an error.
const MONITOR_PATIENCE: Duration = Duration::from_secs(300);
/// After a reconnect, how long our own old backend may still hold the lock
/// (a network cut: the server has not noticed yet) before we call it lost.
const ZOMBIE_PATIENCE: Duration = Duration::from_secs(120);
/// The notification thread's wait per round (also its stop latency).
const LISTEN_ROUND: Duration = Duration::from_millis(100);
/// `sql`: longest a query may run.
const SQL_TIMEOUT_MS: u64 = 5000;
/// Client TCP keepalive: first probe after this much silence…
const KEEPALIVE_IDLE_S: u64 = 20;
/// …then one probe every this many seconds…
const KEEPALIVE_INTERVAL_S: u64 = 5;
/// …and the connection is dead after this many unanswered probes.
const KEEPALIVE_RETRIES: u32 = 4;
/// Unacknowledged data older than this breaks the connection.
const TCP_USER_TIMEOUT_S: u64 = 40;

/// This machine's name as sessions record it: `INTER_SESSION_HOSTNAME`, else
/// the system's host name.
pub fn this_host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(host_name).clone()
}

fn host_name() -> String {
    if let Ok(h) = std::env::var("INTER_SESSION_HOSTNAME") {
        if !h.trim().is_empty() {
            return h.trim().to_string();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name
    }
}

// ---------------------------------------------------------------------------
// Connection target: URL, TLS, passwords.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Everything needed to open a connection, parsed once.
struct Target {
    config: ::postgres::Config,
    tls: MakeRustlsConnect,
    /// The URL with any password replaced by `***`.
    masked: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let masked = mask_url(url);
        let url = url.trim();
        let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let mut mode = None;
        let mut rootcert: Option<String> = None;
        let mut given: HashSet<String> = HashSet::new();
        let conn_str = if is_url {
            // tokio-postgres knows sslmode disable/prefer/require only, and no
            // sslrootcert: take those out and apply them ourselves.
            match url.split_once('?') {
                None => url.to_string(),
                Some((base, query)) => {
                    let mut keep = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        let key = percent_decode(k);
                        let value = percent_decode(v);
                        given.insert(key.clone());
                        match key.as_str() {
                            "sslmode" => mode = Some(parse_sslmode(&value, &masked)?),
                            "sslrootcert" => rootcert = Some(value),
                            _ => keep.push(pair),
                        }
                    }
                    if keep.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", keep.join("&"))
                    }
                }
            }
        } else {
            // key=value form: passed through as it is (sslmode up to require).
            for part in url.split_whitespace() {
                if let Some((k, _)) = part.split_once('=') {
                    given.insert(k.trim().to_string());
                }
            }
            url.to_string()
        };
        let mut config: ::postgres::Config = conn_str.parse().map_err(|e: ::postgres::Error| {
            anyhow::anyhow!("invalid database URL {masked}: {}", pg_text(&e))
        })?;
        let mode = mode.unwrap_or(match config.get_ssl_mode() {
            ::postgres::config::SslMode::Disable => TlsMode::Disable,
            ::postgres::config::SslMode::Require => TlsMode::Require,
            _ => TlsMode::Prefer,
        });
        config.ssl_mode(match mode {
            TlsMode::Disable => ::postgres::config::SslMode::Disable,
            TlsMode::Prefer => ::postgres::config::SslMode::Prefer,
            _ => ::postgres::config::SslMode::Require,
        });
        if !given.contains("application_name") {
            config.application_name("inter-session");
        }
        if !given.contains("connect_timeout") {
            config.connect_timeout(Duration::from_secs(10));
        }
        if !given.contains("keepalives") {
            config.keepalives(true);
        }
        if !given.contains("keepalives_idle") {
            config.keepalives_idle(Duration::from_secs(KEEPALIVE_IDLE_S));
        }
        if !given.contains("keepalives_interval") {
            config.keepalives_interval(Duration::from_secs(KEEPALIVE_INTERVAL_S));
        }
        if !given.contains("keepalives_retries") {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        if !given.contains("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_secs(TCP_USER_TIMEOUT_S));
        }
        // The server side of the same: a backend whose client machine died
        // notices within about a minute and frees the advisory lock (the
        // monitor's name). Set per connection through the startup options.
        let server_side = format!(
            "-c tcp_keepalives_idle={KEEPALIVE_IDLE_S} -c tcp_keepalives_interval={KEEPALIVE_INTERVAL_S} \
             -c tcp_keepalives_count={KEEPALIVE_RETRIES} -c tcp_user_timeout={}",
            TCP_USER_TIMEOUT_S * 1000
        );
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {server_side}"),
            _ => server_side,
        };
        config.options(&options);
        if config.get_password().is_none() {
            if let Some(pw) = pgpass_lookup(&config) {
                config.password(pw);
            }
        }
        let tls = MakeRustlsConnect::new(tls_config(mode, rootcert.as_deref())?);
        Ok(Target {
            config,
            tls,
            masked,
        })
    }

    fn connect(&self) -> std::result::Result<Client, ::postgres::Error> {
        self.config.connect(self.tls.clone())
    }
}

fn parse_sslmode(value: &str, masked: &str) -> Result<TlsMode> {
    Ok(match value {
        "disable" => TlsMode::Disable,
        "allow" | "prefer" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => bail!(
            "invalid sslmode '{other}' in {masked}: use disable, prefer, require, verify-ca or verify-full"
        ),
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL (or key=value string) with any password replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let url = url.trim();
    let scheme_end = ["postgres://", "postgresql://"]
        .iter()
        .find(|s| url.starts_with(*s))
        .map(|s| s.len());
    let Some(start) = scheme_end else {
        // key=value form.
        return url
            .split_whitespace()
            .map(|part| match part.split_once('=') {
                Some((k, _)) if k.trim() == "password" => format!("{k}=***"),
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (scheme, rest) = url.split_at(start);
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let main = match main.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&main[..at], &main[at..]);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => main.to_string(),
            }
        }
        None => main.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if percent_decode(k) == "password" => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}{main}?{q}"),
        None => format!("{scheme}{main}"),
    }
}

/// libpq's password file: `PGPASSFILE`, else `~/.pgpass`; lines
/// `host:port:database:user:password` with `*` wildcards and `\` escapes.
/// A file readable by group or others is ignored, as libpq does.
fn pgpass_lookup(config: &::postgres::Config) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = match std::env::var_os("PGPASSFILE").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(::postgres::config::Host::Tcp(h)) => h.clone(),
        Some(::postgres::config::Host::Unix(_)) | None => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = match config.get_user() {
        Some(u) => u.to_string(),
        None => std::env::var("USER").ok().filter(|u| !u.is_empty())?,
    };
    let db = config.get_dbname().unwrap_or(&user).to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |field: &str, want: &str| field == "*" || field == want;
        if matches(&fields[0], &host)
            && matches(&fields[1], &port)
            && matches(&fields[2], &db)
            && matches(&fields[3], &user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(last)) = (chars.next(), fields.last_mut()) {
                    last.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

mod tls {
    //! Certificate checks for each sslmode, as libpq does them: prefer and
    //! require encrypt without checking (require checks the chain when a root
    //! certificate is given), verify-ca checks the chain, verify-full the chain
    //! and the host name.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

    /// Encrypts, checks the handshake signature, trusts any certificate.
    #[derive(Debug)]
    pub struct AnyCert(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// Checks the chain against the roots but not the host name (verify-ca).
    #[derive(Debug)]
    pub struct ChainOnly(pub Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

/// The root certificates for checking the server: `sslrootcert=<file>`,
/// `sslrootcert=system` (the system's store), else `~/.postgresql/root.crt`.
fn root_store(rootcert: Option<&str>) -> Result<Option<rustls::RootCertStore>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let file = match rootcert {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!("sslrootcert=system: no certificates found in the system's store");
            }
            return Ok(Some(roots));
        }
        Some(path) => PathBuf::from(path),
        None => match std::env::var_os("HOME") {
            Some(home) => {
                let p = PathBuf::from(home).join(".postgresql/root.crt");
                if !p.exists() {
                    return Ok(None);
                }
                p
            }
            None => return Ok(None),
        },
    };
    let certs = CertificateDer::pem_file_iter(&file)
        .with_context(|| format!("could not read sslrootcert {}", file.display()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("could not parse sslrootcert {}", file.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!("sslrootcert {}: no certificate in it", file.display());
    }
    Ok(Some(roots))
}

fn tls_config(mode: TlsMode, rootcert: Option<&str>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS set-up failed")?;
    let roots = match mode {
        TlsMode::Disable | TlsMode::Prefer => None,
        // libpq: require checks the chain when a root certificate is there.
        TlsMode::Require => root_store(rootcert)?,
        TlsMode::VerifyCa | TlsMode::VerifyFull => Some(root_store(rootcert)?.context(
            "sslmode=verify-ca/verify-full needs root certificates: add sslrootcert=/path/to/ca.pem \
             (or sslrootcert=system) to the URL, or put them in ~/.postgresql/root.crt",
        )?),
    };
    let config = match roots {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::AnyCert(provider)))
            .with_no_client_auth(),
        Some(roots) if mode == TlsMode::VerifyFull => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Some(roots) => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("TLS set-up failed")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(tls::ChainOnly(verifier)))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

/// A PostgreSQL error as one plain line (no repeated cause chain).
fn pg_text(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(" (");
            text.push_str(detail);
            text.push(')');
        }
        return text;
    }
    if e.is_closed() {
        return "the database connection was closed".to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A failure worth retrying on a new connection: the connection broke, the
/// server is restarting or shutting down, or a serialisation conflict.
fn is_transient(e: &anyhow::Error) -> bool {
    let Some(pg) = e
        .chain()
        .find_map(|c| c.downcast_ref::<::postgres::Error>())
    else {
        return false;
    };
    if pg.is_closed() {
        return true;
    }
    if let Some(code) = pg.code() {
        let code = code.code();
        return code.starts_with("08")
            || code.starts_with("57P")
            || code == "40001"
            || code == "40P01"
            || code == "53300";
    }
    let mut source = std::error::Error::source(pg);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // Errors without a code or an I/O cause: connect failures, unexpected EOF.
    let text = pg.to_string();
    text.contains("error connecting") || text.contains("connection closed")
}

/// Replace a PostgreSQL error by one clean line (its cause once), keeping
/// our own context; domain errors pass through untouched.
fn tidy(e: anyhow::Error, masked: &str) -> anyhow::Error {
    let Some(pg) = e
        .chain()
        .find_map(|c| c.downcast_ref::<::postgres::Error>())
    else {
        return e;
    };
    let text = pg_text(pg);
    let outer = e.to_string();
    if outer != pg.to_string() {
        // Our context on top (anyhow shows only it in to_string).
        return anyhow::anyhow!("{outer}: {text}");
    }
    if pg.as_db_error().is_some() {
        return anyhow::anyhow!("database error: {text}");
    }
    if is_transient(&e) {
        return anyhow::anyhow!("database unreachable at {masked}: {text}");
    }
    anyhow::anyhow!("database {masked}: {text}")
}

// ---------------------------------------------------------------------------
// The monitor's dedicated connection: advisory lock and LISTEN.
// ---------------------------------------------------------------------------

/// Prints the lost-connection notice, at most once per outage, and only in
/// a monitor (whose stdout is the agent's notification stream).
struct Notice {
    enabled: AtomicBool,
    /// The notification connection is down (until it reconnects).
    listen_down: AtomicBool,
    /// The query connection is down (until a query succeeds again).
    query_down: AtomicBool,
    /// When the notice was last printed.
    last: Mutex<Option<Instant>>,
    /// The outage under way (some connection still down) was announced.
    announced: AtomicBool,
}

impl Notice {
    /// One of the connections broke; print unless this outage was announced.
    /// The monitor's connections break together, but the query connection
    /// only finds out at its next query, perhaps after the notification
    /// connection is back: it stays quiet within a few seconds of a notice.
    fn lost(&self, listen: bool) {
        let (mine, other) = if listen {
            (&self.listen_down, &self.query_down)
        } else {
            (&self.query_down, &self.listen_down)
        };
        if mine.swap(true, Ordering::SeqCst) {
            return;
        }
        // The other connection is down too and that outage was announced.
        if other.load(Ordering::SeqCst) && self.announced.load(Ordering::SeqCst) {
            return;
        }
        if !self.enabled.load(Ordering::SeqCst) {
            return;
        }
        let mut last = lock(&self.last);
        // The query connection only finds out at its next query: soon after
        // a notice, this is most likely the same outage found late. If it is
        // a new one, the notification connection announces it.
        if !listen && last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        self.announced.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(LOST_NOTICE.as_bytes());
        let _ = out.flush();
    }

    fn back(&self, listen: bool) {
        if listen {
            self.listen_down.store(false, Ordering::SeqCst);
        } else {
            self.query_down.store(false, Ordering::SeqCst);
        }
        if !self.listen_down.load(Ordering::SeqCst) && !self.query_down.load(Ordering::SeqCst) {
            self.announced.store(false, Ordering::SeqCst);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The mailbox a monitor holds: retaken after a reconnect.
#[derive(Clone)]
struct Held {
    id: i64,
    host: String,
    pid: i64,
}

/// State shared by the store, the presence, the subscription and the thread
/// that owns the dedicated connection.
struct Link {
    target: Arc<Target>,
    held: Option<Held>,
    /// The locked connection between `claim` and `subscribe`.
    parked: Mutex<Option<Client>>,
    stop: AtomicBool,
    changed: Arc<Changes>,
    tx: Mutex<Option<Sender<Wake>>>,
    /// Set when the mailbox cannot be held any more (taken over).
    lost: Mutex<Option<String>>,
    notice: Arc<Notice>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Reconnect {
    Retry,
    Fatal(String),
}

/// What the notification thread saw since the monitor last looked.
#[derive(Default)]
struct Changes {
    /// Anything: mail, or a session change.
    any: AtomicBool,
    /// A session was claimed, renamed, relabelled or left (the global
    /// channel), or notifications may have been missed (a reconnect).
    sessions: AtomicBool,
}

impl Link {
    /// `sessions`: not only mail may have changed.
    fn wake(&self, sessions: bool) {
        if sessions {
            self.changed.sessions.store(true, Ordering::SeqCst);
        }
        self.changed.any.store(true, Ordering::SeqCst);
        if let Some(tx) = lock(&self.tx).as_ref() {
            let _ = tx.send(Wake::Change);
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // A connection never handed to a thread: closing it frees the lock.
        drop(lock(&self.parked).take());
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn reconnect(&self, channels: &[String], lost_since: Instant) -> Result<Client, Reconnect> {
        let mut c = self.target.connect().map_err(|_| Reconnect::Retry)?;
        if let Some(held) = &self.held {
            let got = try_lock(&mut c, held.id).map_err(|_| Reconnect::Retry)?;
            if !got {
                let row = c
                    .query_opt(
                        "SELECT host, monitor_pid, state FROM sessions WHERE id = $1",
                        &[&held.id],
                    )
                    .map_err(|_| Reconnect::Retry)?;
                let Some(row) = row else {
                    return Err(Reconnect::Fatal(
                        "this session's mailbox was removed".to_string(),
                    ));
                };
                let host: String = row.try_get(0).map_err(|_| Reconnect::Retry)?;
                let pid: Option<i64> = row.try_get(1).map_err(|_| Reconnect::Retry)?;
                let state: String = row.try_get(2).map_err(|_| Reconnect::Retry)?;
                let ours = host == held.host && pid == Some(held.pid) && state == "online";
                if ours && lost_since.elapsed() < ZOMBIE_PATIENCE {
                    // Our old backend has not noticed the cut yet.
                    return Err(Reconnect::Retry);
                }
                return Err(Reconnect::Fatal(format!(
                    "another monitor (pid {} on {host}) took this mailbox while the database connection was down",
                    pid.map_or("?".to_string(), |p| p.to_string())
                )));
            }
        }
        for ch in channels {
            c.batch_execute(&format!("LISTEN {ch}"))
                .map_err(|_| Reconnect::Retry)?;
        }
        Ok(c)
    }

    /// The thread that owns the dedicated connection: forwards notifications,
    /// and on a lost connection reconnects, re-locks and re-LISTENs.
    fn run(self: Arc<Self>, mut client: Option<Client>, channels: Vec<String>) {
        let mut delay = Duration::from_millis(100);
        let mut lost_since = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            match client.as_mut() {
                Some(c) => {
                    let got = c.notifications().timeout_iter(LISTEN_ROUND).next();
                    match got {
                        Ok(Some(first)) => {
                            let mut sessions = first.channel() == GLOBAL_CHANNEL;
                            while let Ok(Some(n)) = c.notifications().iter().next() {
                                sessions |= n.channel() == GLOBAL_CHANNEL;
                            }
                            self.wake(sessions);
                        }
                        Ok(None) if !c.is_closed() => {}
                        Ok(None) | Err(_) => {
                            if self.stop.load(Ordering::SeqCst) {
                                break;
                            }
                            client = None;
                            lost_since = Instant::now();
                            self.notice.lost(true);
                        }
                    }
                }
                None => match self.reconnect(&channels, lost_since) {
                    Ok(c) => {
                        client = Some(c);
                        self.notice.back(true);
                        delay = Duration::from_millis(100);
                        // Re-scan: mail that came while we were away.
                        self.wake(true);
                    }
                    Err(Reconnect::Retry) => {
                        let until = Instant::now() + delay;
                        while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(Reconnect::Fatal(text)) => {
                        *lock(&self.lost) = Some(text);
                        self.wake(true);
                        return;
                    }
                },
            }
        }
        // Dropping the connection ends the backend and frees the lock.
        drop(client);
    }

    /// LISTEN on `channels` (before returning) and start the thread.
    fn start(self: &Arc<Self>, client: Option<Client>, channels: Vec<String>) -> Result<()> {
        let mut client = match client {
            Some(c) => Some(c),
            None => Some(
                self.target
                    .connect()
                    .map_err(|e| tidy(e.into(), &self.target.masked))?,
            ),
        };
        if let Some(c) = client.as_mut() {
            for ch in &channels {
                if let Err(e) = c.batch_execute(&format!("LISTEN {ch}")) {
                    let e = anyhow::Error::from(e);
                    if !is_transient(&e) {
                        return Err(tidy(e, &self.target.masked));
                    }
                    // The thread reconnects and re-scans.
                    client = None;
                    break;
                }
            }
        }
        let link = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("inter-session-listen".into())
            .spawn(move || link.run(client, channels))
            .context("could not start the notification thread")?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }
}

fn try_lock(c: &mut Client, id: i64) -> std::result::Result<bool, ::postgres::Error> {
    let key = i32::try_from(id).unwrap_or(i32::MAX);
    c.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_NS, &key])?
        .try_get(0)
}

/// Held by a running monitor: the advisory lock lives on its connection.
struct LinkPresence(Arc<Link>);
impl Presence for LinkPresence {}
impl Drop for LinkPresence {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Keeps notifications flowing to the monitor's channel.
struct LinkSubscription {
    link: Arc<Link>,
    /// A subscription without a claim owns its connection.
    owns: bool,
}
impl Subscription for LinkSubscription {}
impl Drop for LinkSubscription {
    fn drop(&mut self) {
        *lock(&self.link.tx) = None;
        if self.owns {
            // Do not wait for the thread's round: the process is ending.
            self.link.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn mailbox_channel(id: i64) -> String {
    format!("{GLOBAL_CHANNEL}_{id}")
}

// ---------------------------------------------------------------------------
// The store.
// ---------------------------------------------------------------------------

pub struct PostgresStore {
    target: Arc<Target>,
    conn: RefCell<Option<Client>>,
    /// Statements prepared on `conn`, by name: the monitor's per-wake-up
    /// ones (a prepared statement skips parsing, and after a few runs
    /// planning). Emptied whenever `conn` is replaced.
    stmts: RefCell<HashMap<&'static str, Statement>>,
    host: String,
    changed: Arc<Changes>,
    last_look: Cell<Instant>,
    /// When `sessions_changed` last said yes.
    last_sessions_look: Cell<Instant>,
    link: RefCell<Option<Arc<Link>>>,
    /// Mailboxes whose channels a subscription listens on (claimed, or the
    /// asker of a `mail ask`).
    interest: RefCell<BTreeSet<i64>>,
    /// Sessions this process claimed, with the monitor pid it recorded.
    claimed: RefCell<HashMap<i64, i64>>,
    notice: Arc<Notice>,
}

/// SQL: the advisory lock of session `s` is held by some backend. (The
/// function behind the `pg_locks` view: a fresh server process plans it in
/// half the time.)
fn lock_held_sql() -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_lock_status() l WHERE l.locktype = 'advisory' AND l.granted \
         AND l.objsubid = 2 AND l.classid = {LOCK_NS}::oid AND l.objid = s.id::oid \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )
}

/// SQL: the live state of session `s`.
fn live_state_sql() -> String {
    format!(
        "CASE WHEN s.state = 'online' AND NOT {} THEN 'offline' ELSE s.state END",
        lock_held_sql()
    )
}

fn session_columns() -> String {
    format!(
        "s.id, s.name, s.session_key, s.label, {}, s.cwd, s.project, \
         s.monitor_pid, s.created_at, s.since, \
         (SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
          WHERE d.recipient_id = s.id AND d.delivered_at IS NULL \
            AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW})), \
         s.host",
        live_state_sql()
    )
}

fn session_from_row(r: &Row) -> Result<Session> {
    let state = match r.try_get::<_, String>(4)?.as_str() {
        "online" => State::Online,
        "left" => State::Left,
        _ => State::Offline,
    };
    Ok(Session {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        key: r.try_get(2)?,
        label: r.try_get(3)?,
        state,
        cwd: r.try_get(5)?,
        project: r.try_get(6)?,
        monitor_pid: if state == State::Online {
            r.try_get(7)?
        } else {
            None
        },
        created_at: r.try_get(8)?,
        since: r.try_get(9)?,
        pending: r.try_get(10)?,
        host: r.try_get(11)?,
    })
}

fn message_from_row(r: &Row) -> Result<Message> {
    Ok(Message {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        created_at: r.try_get(2)?,
        kind: r.try_get(3)?,
        sender: r.try_get(4)?,
        sender_label: r.try_get(5)?,
        chars: r.try_get(6)?,
        sender_id: r.try_get(7)?,
        in_reply_to: r.try_get(8)?,
        thread_id: r.try_get(9)?,
        expires_at: r.try_get(10)?,
        text: stored_to_text(r.try_get(12)?, r.try_get(11)?),
    })
}

/// PostgreSQL text cannot hold U+0000: such a text is stored with `\`
/// doubled and U+0000 as `\0` (and `text_escaped` set). Returns the stored
/// form and whether it is escaped.
fn text_to_stored(text: &str) -> (std::borrow::Cow<'_, str>, bool) {
    if !text.contains('\0') {
        return (std::borrow::Cow::Borrowed(text), false);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    (std::borrow::Cow::Owned(out), true)
}

/// The original text of a stored one (a prefix cut inside an escape loses
/// only that escape).
fn stored_to_text(stored: String, escaped: bool) -> String {
    if !escaped {
        return stored;
    }
    let mut out = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn peer_from_row(r: &Row) -> Result<Peer> {
    Ok(Peer {
        name: r.try_get(0)?,
        session_id: r.try_get(1)?,
        tmux_socket: r.try_get(2)?,
        tmux_session: r.try_get(3)?,
        command: r.try_get(4)?,
        cwd: r.try_get(5)?,
        spawned_by: r.try_get(6)?,
        created_at: r.try_get(7)?,
        killed_at: r.try_get(8)?,
        host: r.try_get(9)?,
    })
}

fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Create the local data folder (session-key locks stay on this machine)
/// without the SQLite-only checks (a network file system is fine here).
fn prepare_local_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = datadir::path()?;
    for (path, what) in [
        (dir.clone(), "data folder"),
        (datadir::locks_dir(&dir), "lock folder"),
    ] {
        if std::fs::symlink_metadata(&path).is_err() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("could not create {}", parent.display()))?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("could not create {}", path.display()))
                }
            }
        }
        datadir::check_private(&path, what, true)?;
    }
    Ok(dir)
}

fn schema_version(c: &mut Client) -> Result<usize> {
    // One round trip on every connection: a database without our table
    // answers "undefined table" (outside any transaction, so harmless).
    let v: i32 = match c.query_typed_one(
        "SELECT COALESCE(max(version), 0) FROM schema_migrations",
        &[],
    ) {
        Ok(row) => row.try_get(0)?,
        Err(e) if e.code() == Some(&::postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(usize::try_from(v).unwrap_or(0))
}

/// SQL: (re)create the function that answers the schema version without
/// touching a table (see `migrate`).
fn version_function_sql() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {VERSION_FUNCTION}() RETURNS integer \
         LANGUAGE sql IMMUTABLE AS 'SELECT {}'",
        MIGRATIONS.len()
    )
}

fn migrate(c: &mut Client, masked: &str) -> Result<()> {
    // The fast check, on every connection: a constant function costs a
    // fresh server process a fraction of what the first read of a table
    // does (its catalog entries, its indexes, planning).
    match c.query_typed_one(&format!("SELECT {VERSION_FUNCTION}()"), &[]) {
        Ok(row) => {
            let v: i32 = row.try_get(0)?;
            if usize::try_from(v).ok() == Some(MIGRATIONS.len()) {
                return Ok(());
            }
        }
        Err(e) if e.code() == Some(&::postgres::error::SqlState::UNDEFINED_FUNCTION) => {}
        Err(e) => return Err(e.into()),
    }
    let version = schema_version(c)?;
    if version == MIGRATIONS.len() {
        // Made by a version without the function: add it, if this role
        // may (else every connection takes the slower check).
        let _ = c.batch_execute(&version_function_sql());
        return Ok(());
    }
    if version > MIGRATIONS.len() {
        bail!(
            "the mailbox at {masked} has schema version {version}, newer than this inter-session knows ({}); upgrade inter-session",
            MIGRATIONS.len()
        );
    }
    // First-time set-up is serialised: the second process waits here, then
    // finds the work done.
    let mut tx = c.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_NS, &SETUP_KEY],
    )?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ( \
             version    INTEGER PRIMARY KEY, \
             name       TEXT NOT NULL, \
             applied_at TEXT NOT NULL)",
    )?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied == 0 {
        let foreign: Option<String> = tx
            .query_one("SELECT to_regclass('sessions')::text", &[])?
            .try_get(0)?;
        if foreign.is_some() {
            bail!(
                "the database at {masked} already has a 'sessions' table that is not inter-session's; \
                 use an empty database (or another schema, e.g. ?options=-csearch_path%3Dinter_session)"
            );
        }
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql)
            .with_context(|| format!("migration {name} failed"))?;
        let version = i32::try_from(i + 1)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, name, &now_text()],
        )?;
    }
    tx.batch_execute(&version_function_sql())?;
    tx.commit()?;
    Ok(())
}

impl PostgresStore {
    /// Connect to the database at `url`, creating or upgrading the schema.
    pub fn connect(url: &str) -> Result<Self> {
        prepare_local_dir()?;
        Self::connect_only(url)
    }

    /// Connect without touching the local data folder.
    fn connect_only(url: &str) -> Result<Self> {
        let target = Arc::new(Target::parse(url)?);
        let store = PostgresStore {
            target,
            conn: RefCell::new(None),
            stmts: RefCell::new(HashMap::new()),
            host: this_host(),
            changed: Arc::new(Changes::default()),
            last_look: Cell::new(Instant::now()),
            last_sessions_look: Cell::new(Instant::now()),
            link: RefCell::new(None),
            interest: RefCell::new(BTreeSet::new()),
            claimed: RefCell::new(HashMap::new()),
            notice: Arc::new(Notice {
                enabled: AtomicBool::new(false),
                listen_down: AtomicBool::new(false),
                query_down: AtomicBool::new(false),
                last: Mutex::new(None),
                announced: AtomicBool::new(false),
            }),
        };
        let masked = store.target.masked.clone();
        store.run(|c| migrate(c, &masked))?;
        Ok(store)
    }

    fn patience(&self) -> Duration {
        if self.notice.enabled.load(Ordering::SeqCst) {
            MONITOR_PATIENCE
        } else {
            COMMAND_PATIENCE
        }
    }

    /// Run `f` on the connection (opened on first use), retrying on a fresh
    /// connection while the failure is transient. `f` must be safe to run
    /// again: a transaction, or an idempotent statement.
    fn run<T>(&self, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let deadline = Instant::now() + self.patience();
        let mut delay = Duration::from_millis(50);
        loop {
            let attempt = {
                let mut slot = self.conn.borrow_mut();
                let ready = match slot.as_mut() {
                    Some(c) if !c.is_closed() => Ok(()),
                    _ => match self.target.connect() {
                        Ok(c) => {
                            self.stmts.borrow_mut().clear();
                            *slot = Some(c);
                            Ok(())
                        }
                        Err(e) => Err(anyhow::Error::from(e)
                            .context(format!("could not connect to {}", self.target.masked))),
                    },
                };
                match (ready, slot.as_mut()) {
                    (Ok(()), Some(c)) => f(c),
                    (Err(e), _) => Err(e),
                    (Ok(()), None) => Err(anyhow::anyhow!("no database connection")),
                }
            };
            match attempt {
                Ok(v) => {
                    self.notice.back(false);
                    return Ok(v);
                }
                Err(e) if is_transient(&e) && Instant::now() < deadline => {
                    self.conn.replace(None);
                    self.stmts.borrow_mut().clear();
                    self.notice.lost(false);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(tidy(e, &self.target.masked)),
            }
        }
    }

    /// The statement `key` on connection `c`, prepared on first use.
    fn prepared(
        &self,
        c: &mut Client,
        key: &'static str,
        sql: impl FnOnce() -> String,
        types: &[Type],
    ) -> Result<Statement> {
        if let Some(st) = self.stmts.borrow().get(key) {
            return Ok(st.clone());
        }
        let st = c.prepare_typed(&sql(), types)?;
        self.stmts.borrow_mut().insert(key, st.clone());
        Ok(st)
    }

    fn query_sessions(&self, where_sql: &str, params: &[&dyn Typed]) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT {} FROM sessions s WHERE {where_sql}",
            session_columns()
        );
        let params = typed(params);
        self.run(|c| {
            c.query_typed(sql.as_str(), &params)?
                .iter()
                .map(session_from_row)
                .collect()
        })
    }

    fn one_session(&self, where_sql: &str, params: &[&dyn Typed]) -> Result<Option<Session>> {
        Ok(self.query_sessions(where_sql, params)?.into_iter().next())
    }

    fn query_peers(&self, where_sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Peer>> {
        let sql = format!(
            "SELECT name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at, host \
             FROM peers WHERE {where_sql}"
        );
        self.run(|c| {
            c.query(sql.as_str(), params)?
                .iter()
                .map(peer_from_row)
                .collect()
        })
    }

    /// Live online state of several sessions at once.
    fn online_ids(&self, ids: &[i64]) -> Result<HashSet<i64>> {
        let sql = format!(
            "SELECT s.id FROM sessions s WHERE s.id = ANY($1) AND s.state = 'online' AND {}",
            lock_held_sql()
        );
        self.run(|c| {
            c.query_typed(sql.as_str(), &typed(&[&ids]))?
                .iter()
                .map(|r| r.try_get(0).map_err(anyhow::Error::from))
                .collect()
        })
    }

    /// The send transaction. On a retry, first looks for the message by id:
    /// an earlier attempt may have committed before its answer was lost.
    fn send_once(
        &self,
        c: &mut Client,
        msg: &NewMessage,
        id: &str,
        retry: bool,
    ) -> Result<SendOutcome> {
        let now = now_text();
        let chars = msg.text.chars().count();
        // The commit-order lock is held until commit: seq order is commit
        // order (see the module doc). The usual send (direct, short, from a
        // known sender, no key, no question) is one statement on its own,
        // which takes that lock itself; anything else is a transaction.
        let single = !retry
            && msg.sender.id != 0
            && msg.idempotency_key.is_none()
            && msg.ask_until.is_none()
            && chars <= INLINE_CHARS
            && matches!(msg.to, Recipients::One(_));
        let mut tx = if single {
            SendTx::autocommit(c)
        } else {
            SendTx::begin(c)?
        };
        if retry {
            if let Some(row) =
                tx.query_typed_opt("SELECT seq FROM messages WHERE id = $1", &typed(&[&id]))?
            {
                let seq: i64 = row.try_get(0)?;
                let rows = tx.query_typed(
                    "SELECT r.id, r.name FROM deliveries d JOIN sessions r ON r.id = d.recipient_id \
                     WHERE d.message_seq = $1 ORDER BY r.name",
                    &typed(&[&seq]),
                )?;
                let recipients = rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<Vec<_>>>()?;
                return Ok((recipients, false, id.to_string(), None));
            }
        }

        // A new `--from` sender (id 0) is registered here, inside the
        // transaction, so a refused send leaves no trace.
        let sender_id: i64 = if msg.sender.id == 0 {
            tx.execute_typed(
                "INSERT INTO sessions (name, state, created_at, since, host) VALUES ($1, 'offline', $2, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                &typed(&[&msg.sender.name, &now, &self.host]),
            )?;
            tx.query_typed_one(
                "SELECT id FROM sessions WHERE name = $1",
                &typed(&[&msg.sender.name]),
            )?
            .try_get(0)?
        } else {
            msg.sender.id
        };
        if let Some(key) = msg.idempotency_key {
            let since = time_text(chrono::Utc::now() - chrono::Duration::hours(24));
            let earlier = tx.query_typed_opt(
                "SELECT seq FROM messages WHERE sender_id = $1 AND idempotency_key = $2 \
                 AND created_at >= $3 ORDER BY seq LIMIT 1",
                &typed(&[&sender_id, &key, &since]),
            )?;
            if let Some(row) = earlier {
                let seq: i64 = row.try_get(0)?;
                let rows = tx.query_typed(
                    "SELECT m.id, r.name FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
                     JOIN sessions r ON r.id = d.recipient_id WHERE m.seq = $1 ORDER BY r.name",
                    &typed(&[&seq]),
                )?;
                let mut first_id = String::new();
                let mut recipients = Vec::new();
                for r in &rows {
                    let mid: String = r.try_get(0)?;
                    if first_id.is_empty() {
                        first_id = mid;
                    }
                    recipients.push((0, r.try_get(1)?));
                }
                return Ok((recipients, true, first_id, None));
            }
        }
        // The recipients: a direct one is checked by the insert below (one
        // statement fewer before the wake-up); a broadcast's are chosen
        // here, with whether each one's monitor is live.
        let (rids, online): (Vec<i64>, Option<HashSet<i64>>) = match &msg.to {
            Recipients::One(rid) => {
                if *rid == sender_id {
                    return Err(SendError::SelfSend(msg.sender.name.clone()).into());
                }
                // Whether its monitor is live is asked after the commit,
                // while that monitor is already fetching the message.
                (vec![*rid], None)
            }
            Recipients::All { project } => {
                let since = time_text(chrono::Utc::now() - chrono::Duration::seconds(60));
                let recent: i64 = tx
                    .query_typed_one(
                        "SELECT count(*) FROM messages WHERE sender_id = $1 AND kind = 'broadcast' AND created_at >= $2",
                        &typed(&[&sender_id, &since]),
                    )?
                    .try_get(0)?;
                if recent >= BROADCASTS_PER_MINUTE {
                    return Err(SendError::RateLimited.into());
                }
                let rows = tx.query_typed(
                    &format!(
                        "SELECT s.id, (s.state = 'online' AND {}) FROM sessions s \
                         WHERE s.state <> 'left' AND s.id <> $1 AND ($2::text IS NULL OR s.project = $2)",
                        lock_held_sql()
                    ),
                    &typed(&[&sender_id, project]),
                )?;
                if rows.is_empty() {
                    return Err(SendError::NoRecipients.into());
                }
                let mut online = HashSet::new();
                let mut rids = Vec::with_capacity(rows.len());
                for r in &rows {
                    let rid: i64 = r.try_get(0)?;
                    if r.try_get::<_, bool>(1)? {
                        online.insert(rid);
                    }
                    rids.push(rid);
                }
                (rids, Some(online))
            }
        };

        let (stored, escaped) = text_to_stored(msg.text);
        let (inline, blob_id): (Option<&str>, Option<i64>) = if chars <= INLINE_CHARS {
            (Some(&stored), None)
        } else {
            let bid: i64 = tx
                .query_typed_one(
                    "INSERT INTO blobs (body) VALUES ($1) RETURNING id",
                    &typed(&[&stored.as_ref()]),
                )?
                .try_get(0)?;
            (None, Some(bid))
        };
        let kind = match msg.to {
            Recipients::One(_) => "direct",
            Recipients::All { .. } => "broadcast",
        };
        let (in_reply_to, thread_id) = match msg.reply_to {
            Some(parent) => (Some(parent.id.as_str()), parent.thread_id.as_str()),
            None => (None, id),
        };
        let chars = i64::try_from(chars)?;
        if let Some(until) = &msg.ask_until {
            tx.execute_typed(
                "INSERT INTO asks (question_id, asker_id, \"until\") VALUES ($1, $2, $3) \
                 ON CONFLICT (question_id) DO UPDATE SET asker_id = excluded.asker_id, \"until\" = excluded.\"until\"",
                &typed(&[&id, &sender_id, until]),
            )?;
        }
        // In one statement: the commit-order lock (again, inside a
        // transaction: it is re-entrant), the recipients that have not left,
        // the message (only if there is one), its deliveries, and the wake-up
        // of their monitors when (and only if) this commits. `l` is read
        // before the message gets its seq, and CTEs with side effects run once.
        let rows = tx.query_typed(
                &format!(
                "WITH l AS (SELECT pg_advisory_xact_lock({LOCK_NS}, {SEND_KEY})), \
                      r AS (SELECT s.id, s.name FROM sessions s, l WHERE s.id = ANY($15) AND s.state <> 'left'), \
                      m AS (INSERT INTO messages (id, created_at, kind, sender_id, sender, sender_label, chars, \
                                                  text, blob_id, in_reply_to, thread_id, expires_at, \
                                                  idempotency_key, text_escaped) \
                            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
                            WHERE EXISTS (SELECT 1 FROM r) RETURNING seq), \
                      d AS (INSERT INTO deliveries (message_seq, recipient_id) \
                            SELECT m.seq, r.id FROM m, r \
                            RETURNING recipient_id, message_seq) \
                 SELECT r.id, r.name, pg_notify('inter_session_' || d.recipient_id, d.message_seq::text) \
                 FROM d JOIN r ON r.id = d.recipient_id ORDER BY r.name"),
                &typed(&[
                    &id,
                    &now,
                    &kind,
                    &sender_id,
                    &msg.sender.name,
                    &msg.sender.label,
                    &chars,
                    &inline,
                    &blob_id,
                    &in_reply_to,
                    &thread_id,
                    &msg.expires_at,
                    &msg.idempotency_key,
                    &escaped,
                    &rids,
                ]),
            )?;
        let recipients = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, String)>>>()?;
        if recipients.is_empty() {
            // Nothing was written (dropping `tx` rolls back the rest). Say why.
            let Recipients::One(rid) = &msg.to else {
                return Err(SendError::NoRecipients.into());
            };
            let gone = tx.query_typed_opt(
                "SELECT name, state = 'left' FROM sessions WHERE id = $1",
                &typed(&[rid]),
            )?;
            return match gone {
                Some(r) if r.try_get::<_, bool>(1)? => Err(LookupError::Left(r.try_get(0)?).into()),
                _ => bail!("the recipient's mailbox vanished; try again"),
            };
        }
        tx.commit().context("could not commit the message")?;
        if msg.ask_until.is_some() {
            self.interest.borrow_mut().insert(sender_id);
        }
        Ok((recipients, false, id.to_string(), online))
    }
}

/// The send transaction: begun together with its lock in one round trip
/// (`Client::transaction` would take two), rolled back when dropped
/// uncommitted. Or none at all, for a send that is one statement.
struct SendTx<'a> {
    c: &'a mut Client,
    open: bool,
}

impl<'a> SendTx<'a> {
    fn begin(c: &'a mut Client) -> Result<Self> {
        c.batch_execute(&format!(
            "START TRANSACTION; SELECT pg_advisory_xact_lock({LOCK_NS}, {SEND_KEY})"
        ))?;
        Ok(SendTx { c, open: true })
    }

    /// No transaction: each statement commits on its own.
    fn autocommit(c: &'a mut Client) -> Self {
        SendTx { c, open: false }
    }

    fn commit(mut self) -> Result<()> {
        if self.open {
            self.open = false;
            self.c.batch_execute("COMMIT")?;
        }
        Ok(())
    }
}

impl std::ops::Deref for SendTx<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.c
    }
}

impl std::ops::DerefMut for SendTx<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.c
    }
}

impl Drop for SendTx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A broken connection is dropped by the caller anyway.
            let _ = self.c.batch_execute("ROLLBACK");
        }
    }
}

/// A statement parameter with its PostgreSQL type, so that the statement
/// goes out in one round trip (`query_typed`: parse, bind and execute sent
/// together) instead of three (prepare, execute, close). A `mail send` makes
/// about a dozen statements on a fresh connection; on loopback each saved
/// round trip is a wake-up of the server process.
trait PgType {
    const TYPE: Type;
}

impl PgType for i64 {
    const TYPE: Type = Type::INT8;
}
impl PgType for i32 {
    const TYPE: Type = Type::INT4;
}
impl PgType for bool {
    const TYPE: Type = Type::BOOL;
}
impl PgType for String {
    const TYPE: Type = Type::TEXT;
}
impl PgType for &str {
    const TYPE: Type = Type::TEXT;
}
impl PgType for Vec<i64> {
    const TYPE: Type = Type::INT8_ARRAY;
}
impl PgType for &[i64] {
    const TYPE: Type = Type::INT8_ARRAY;
}
impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

trait Typed: ToSql + Sync {
    fn value(&self) -> &(dyn ToSql + Sync);
    fn pg_type(&self) -> Type;
}

impl<T: PgType + ToSql + Sync> Typed for T {
    fn value(&self) -> &(dyn ToSql + Sync) {
        self
    }
    fn pg_type(&self) -> Type {
        T::TYPE
    }
}

/// `params` as `query_typed` takes them.
fn typed<'a>(params: &[&'a dyn Typed]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p.value(), p.pg_type())).collect()
}

/// What the send transaction did: the recipients (id, name), whether an
/// earlier send with the same idempotency key made it a duplicate, and the
/// message id.
/// Also which recipients had a live monitor, when the transaction could
/// tell (`None`: look it up after the commit).
type SendOutcome = (Vec<(i64, String)>, bool, String, Option<HashSet<i64>>);

/// Announce session changes (to every monitor) and wake these mailboxes.
fn notify(c: &mut Client, ids: &[i64], global: bool) -> std::result::Result<(), ::postgres::Error> {
    let payload = ids.first().map_or_else(String::new, |id| id.to_string());
    if global {
        c.execute("SELECT pg_notify($1, $2)", &[&GLOBAL_CHANNEL, &payload])?;
    }
    c.execute(
        "SELECT pg_notify('inter_session_' || r, $1) FROM unnest($2::bigint[]) AS r",
        &[&payload, &ids],
    )?;
    Ok(())
}

impl Mailbox for PostgresStore {
    fn location(&self) -> String {
        self.target.masked.clone()
    }

    fn session_by_key(&self, key: &str) -> Result<Option<Session>> {
        // Session keys are local to their machine.
        self.one_session(
            "s.session_key = $1 AND s.host = $2 ORDER BY s.since DESC, s.id DESC LIMIT 1",
            &[&key, &self.host],
        )
    }

    fn session_by_name(&self, name: &str) -> Result<Option<Session>> {
        self.one_session("s.name = $1", &[&name])
    }

    fn session_by_id(&self, id: i64) -> Result<Option<Session>> {
        self.one_session("s.id = $1", &[&id])
    }

    /// On the fresh connection of a `mail send`, each table and view a
    /// statement touches costs its planning a catalog load: one lean query.
    fn briefs(&self, a: &str, b: &str) -> Result<Vec<(Address, bool)>> {
        self.run(|c| {
            c.query_typed(
                "SELECT id, name, label, state = 'left' FROM sessions WHERE name = $1 OR name = $2",
                &typed(&[&a, &b]),
            )?
            .iter()
            .map(|r| {
                Ok((
                    Address {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        label: r.try_get(2)?,
                    },
                    r.try_get(3)?,
                ))
            })
            .collect()
        })
    }

    fn name_and_left(&self, id: i64) -> Result<Option<(String, bool)>> {
        self.run(|c| {
            let st = self.prepared(
                c,
                "name_and_left",
                || "SELECT name, state = 'left' FROM sessions WHERE id = $1".into(),
                &[Type::INT8],
            )?;
            c.query_opt(&st, &[&id])?
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .transpose()
        })
    }

    fn sessions(&self, include_left: bool) -> Result<Vec<Session>> {
        if include_left {
            self.query_sessions("TRUE ORDER BY s.name", &[])
        } else {
            self.query_sessions("s.state <> 'left' ORDER BY s.name", &[])
        }
    }

    fn sessions_with_prefix(&self, prefix: &str) -> Result<Vec<Session>> {
        self.query_sessions(
            "s.name LIKE $1 ESCAPE '\\' AND s.state <> 'left' ORDER BY s.name",
            &[&prefix_pattern(prefix)],
        )
    }

    fn active_names(&self) -> Result<Vec<String>> {
        self.run(|c| {
            c.query(
                "SELECT name FROM sessions WHERE state <> 'left' ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| r.try_get(0).map_err(anyhow::Error::from))
            .collect()
        })
    }

    fn register(&self, name: &str, key: Option<&str>) -> Result<Session> {
        let now = now_text();
        self.run(|c| {
            c.execute(
                "INSERT INTO sessions (name, session_key, state, created_at, since, host) \
                 VALUES ($1, $2, 'offline', $3, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[&name, &key, &now, &self.host],
            )?;
            Ok(())
        })?;
        self.session_by_name(name)?
            .context("session vanished after registering it")
    }

    fn claim(&self, req: &ClaimRequest) -> Result<Claim> {
        // The dedicated connection: it holds the lock and later LISTENs.
        let mut locker = {
            let deadline = Instant::now() + COMMAND_PATIENCE;
            loop {
                match self.target.connect() {
                    Ok(c) => break c,
                    Err(e) => {
                        let e = anyhow::Error::from(e);
                        if !is_transient(&e) || Instant::now() >= deadline {
                            return Err(tidy(e, &self.target.masked));
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        };
        let mut candidate = req.name.to_string();
        for attempt in 1..=1000u32 {
            let now = now_text();
            let id: i64 = self.run(|c| {
                c.execute(
                    "INSERT INTO sessions (name, state, created_at, since, host) VALUES ($1, 'offline', $2, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&candidate, &now, &self.host],
                )?;
                Ok(c.query_one("SELECT id FROM sessions WHERE name = $1", &[&candidate])?
                    .try_get(0)?)
            })?;
            if i32::try_from(id).is_err() {
                bail!("session id {id} is too large for an advisory lock");
            }
            let got = try_lock(&mut locker, id).map_err(|e| tidy(e.into(), &self.target.masked))?;
            if got {
                self.run(|c| {
                    let mut tx = c.transaction()?;
                    tx.execute(
                        "UPDATE sessions SET session_key = NULL WHERE session_key = $1 AND host = $2 AND id <> $3",
                        &[&req.key, &self.host, &id],
                    )?;
                    tx.execute(
                        "UPDATE sessions SET session_key = $1, label = $2, state = 'online', cwd = $3, project = $4, \
                         monitor_pid = $5, owner_pid = $6, since = $7, host = $8 WHERE id = $9",
                        &[
                            &req.key,
                            &req.label,
                            &req.cwd,
                            &req.project,
                            &req.monitor_pid,
                            &req.owner_pid,
                            &now,
                            &self.host,
                            &id,
                        ],
                    )?;
                    tx.execute("SELECT pg_notify($1, $2)", &[&GLOBAL_CHANNEL, &id.to_string()])?;
                    tx.commit()?;
                    Ok(())
                })?;
                self.notice.enabled.store(true, Ordering::SeqCst);
                self.claimed.borrow_mut().insert(id, req.monitor_pid);
                self.interest.borrow_mut().insert(id);
                let link = Arc::new(Link {
                    target: Arc::clone(&self.target),
                    held: Some(Held {
                        id,
                        host: self.host.clone(),
                        pid: req.monitor_pid,
                    }),
                    parked: Mutex::new(Some(locker)),
                    stop: AtomicBool::new(false),
                    changed: Arc::clone(&self.changed),
                    tx: Mutex::new(None),
                    lost: Mutex::new(None),
                    notice: Arc::clone(&self.notice),
                    thread: Mutex::new(None),
                });
                *self.link.borrow_mut() = Some(Arc::clone(&link));
                let session = self
                    .session_by_id(id)?
                    .context("session vanished after claiming it")?;
                return Ok(Claim {
                    session,
                    presence: Box::new(LinkPresence(link)),
                });
            }
            candidate = next_candidate(req.name, attempt);
        }
        bail!("could not find a free name after '{}'", req.name)
    }

    fn release(&self, session_id: i64) -> Result<()> {
        let pid = self.claimed.borrow().get(&session_id).copied();
        let now = now_text();
        self.run(|c| {
            match pid {
                // Only our own claim: another monitor may have taken the
                // name while our connection was down.
                Some(pid) => c.execute(
                    "UPDATE sessions SET state = 'offline', monitor_pid = NULL, since = $2 \
                     WHERE id = $1 AND state = 'online' AND monitor_pid = $3 AND host = $4",
                    &[&session_id, &now, &pid, &self.host],
                )?,
                None => c.execute(
                    "UPDATE sessions SET state = 'offline', monitor_pid = NULL, since = $2 \
                     WHERE id = $1 AND state = 'online'",
                    &[&session_id, &now],
                )?,
            };
            notify(c, &[session_id], true)?;
            Ok(())
        })
    }

    fn is_online(&self, session_id: i64) -> bool {
        self.online_ids(&[session_id])
            .is_ok_and(|ids| ids.contains(&session_id))
    }

    fn rename(&self, session_id: i64, new_name: &str) -> Result<()> {
        let taken: Option<i64> = self.run(|c| {
            Ok(
                match c.query_opt("SELECT id FROM sessions WHERE name = $1", &[&new_name])? {
                    Some(r) => Some(r.try_get(0)?),
                    None => None,
                },
            )
        })?;
        match taken {
            Some(id) if id == session_id => return Ok(()),
            Some(_) => bail!("name '{new_name}' is already taken; pick another"),
            None => {}
        }
        self.run(|c| {
            c.execute(
                "UPDATE sessions SET name = $1 WHERE id = $2",
                &[&new_name, &session_id],
            )?;
            notify(c, &[session_id], true)?;
            Ok(())
        })
    }

    fn relabel(&self, session_id: i64, label: &str) -> Result<()> {
        self.run(|c| {
            c.execute(
                "UPDATE sessions SET label = $1 WHERE id = $2",
                &[&label, &session_id],
            )?;
            notify(c, &[session_id], true)?;
            Ok(())
        })
    }

    fn disconnect(&self, session_id: i64) -> Result<Option<i64>> {
        let pid: Option<i64> = self.run(|c| {
            Ok(
                match c.query_opt(
                    "SELECT monitor_pid FROM sessions WHERE id = $1",
                    &[&session_id],
                )? {
                    Some(r) => r.try_get(0)?,
                    None => None,
                },
            )
        })?;
        let online = self.is_online(session_id);
        let now = now_text();
        self.run(|c| {
            c.execute(
                "UPDATE sessions SET state = 'left', monitor_pid = NULL, since = $2 WHERE id = $1",
                &[&session_id, &now],
            )?;
            notify(c, &[session_id], true)?;
            Ok(())
        })?;
        Ok(if online { pid } else { None })
    }

    fn remembered_label(&self, project: &str) -> Result<Option<String>> {
        self.run(|c| {
            Ok(
                match c.query_opt(
                    "SELECT label FROM project_labels WHERE project = $1",
                    &[&project],
                )? {
                    Some(r) => Some(r.try_get(0)?),
                    None => None,
                },
            )
        })
    }

    fn remember_label(&self, project: &str, label: &str) -> Result<()> {
        self.run(|c| {
            if label.is_empty() {
                c.execute("DELETE FROM project_labels WHERE project = $1", &[&project])?;
            } else {
                c.execute(
                    "INSERT INTO project_labels (project, label) VALUES ($1, $2) \
                     ON CONFLICT (project) DO UPDATE SET label = excluded.label",
                    &[&project, &label],
                )?;
            }
            Ok(())
        })
    }

    fn send(&self, msg: &NewMessage) -> Result<Sent> {
        let id = ulid::Ulid::new().to_string();
        let attempts = Cell::new(0u32);
        let (recipients, duplicate, sent_id, online) = self.run(|c| {
            attempts.set(attempts.get() + 1);
            self.send_once(c, msg, &id, attempts.get() > 1)
        })?;
        if duplicate {
            return Ok(Sent {
                id: sent_id,
                recipients: recipients
                    .into_iter()
                    .map(|(_, name)| SentTo {
                        name,
                        status: "duplicate, not resent",
                    })
                    .collect(),
                duplicate: true,
            });
        }
        let online = match online {
            Some(known) => known,
            None => {
                let ids: Vec<i64> = recipients.iter().map(|(rid, _)| *rid).collect();
                self.online_ids(&ids).unwrap_or_default()
            }
        };
        Ok(Sent {
            id: sent_id,
            recipients: recipients
                .into_iter()
                .map(|(rid, name)| SentTo {
                    name,
                    status: if online.contains(&rid) {
                        "delivered"
                    } else {
                        "queued"
                    },
                })
                .collect(),
            duplicate: false,
        })
    }

    fn pending(&self, session_id: i64, after_seq: i64, limit: usize) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, substr(b.body, 1, $4)) \
             FROM deliveries d \
             JOIN messages m ON m.seq = d.message_seq \
             LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE d.recipient_id = $1 AND d.delivered_at IS NULL AND d.message_seq > $2 \
               AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW}) \
               AND (m.in_reply_to IS NULL OR NOT EXISTS (SELECT 1 FROM asks a \
                    WHERE a.question_id = m.in_reply_to AND a.asker_id = d.recipient_id AND a.\"until\" > {SQL_NOW})) \
             ORDER BY d.message_seq LIMIT $3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let prefix = i32::try_from(LINE_PREFIX_CHARS).unwrap_or(i32::MAX);
        self.run(|c| {
            let st = self.prepared(
                c,
                "pending",
                || sql.clone(),
                &[Type::INT8, Type::INT8, Type::INT8, Type::INT4],
            )?;
            c.query(&st, &[&session_id, &after_seq, &limit, &prefix])?
                .iter()
                .map(message_from_row)
                .collect()
        })
    }

    fn mark_delivered(&self, session_id: i64, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let now = now_text();
        self.run(|c| {
            let st = self.prepared(
                c,
                "mark_delivered",
                || {
                    "UPDATE deliveries SET delivered_at = $1 \
                     WHERE recipient_id = $2 AND message_seq = ANY($3) AND delivered_at IS NULL"
                        .into()
                },
                &[Type::TEXT, Type::INT8, Type::INT8_ARRAY],
            )?;
            c.execute(&st, &[&now, &session_id, &seqs])
                .context("could not record delivery")?;
            Ok(())
        })
    }

    fn message(&self, id_prefix: &str) -> Result<Message> {
        let prefix = id_prefix.to_ascii_uppercase();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, b.body) \
             FROM messages m LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE m.id >= $1 AND m.id < $1 || 'ZZZZZZZZZZZZZZZZZZZZZZZZZZ' ORDER BY m.id LIMIT 2"
        );
        let found: Vec<Message> = self.run(|c| {
            c.query(sql.as_str(), &[&prefix])?
                .iter()
                .map(message_from_row)
                .collect()
        })?;
        let mut found = found.into_iter().filter(|m| m.id.starts_with(&prefix));
        match (found.next(), found.next()) {
            (Some(m), None) => Ok(m),
            (None, _) => Err(NotFound(format!("no message with id '{id_prefix}'")).into()),
            (Some(_), Some(_)) => {
                bail!("message id prefix '{id_prefix}' is ambiguous; give more of it")
            }
        }
    }

    fn history(&self, f: &HistoryFilter) -> Result<Vec<HistoryRow>> {
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        self.run(|c| {
            c.query(
                "SELECT * FROM ( \
                   SELECT h.id, h.created_at, h.kind, h.sender, h.recipient, h.text, h.delivered_at, \
                          h.in_reply_to, h.thread_id, h.status, h.seq, m.text_escaped \
                   FROM history h \
                   JOIN messages m ON m.seq = h.seq \
                   JOIN sessions r ON r.name = h.recipient \
                   WHERE ($1::bigint IS NULL OR m.sender_id = $1 OR r.id = $1) \
                     AND ($2::bigint IS NULL OR m.sender_id = $2 OR r.id = $2) \
                     AND ($3::text IS NULL OR h.created_at >= $3) \
                     AND ($5::text IS NULL OR h.thread_id = $5) \
                   ORDER BY h.seq DESC, h.recipient DESC LIMIT $4 \
                 ) x ORDER BY seq, recipient",
                &[&f.involving, &f.with, &f.since, &limit, &f.thread],
            )?
            .iter()
            .map(|r| {
                Ok(HistoryRow {
                    id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    sender: r.try_get(3)?,
                    recipient: r.try_get(4)?,
                    text: stored_to_text(r.try_get(5)?, r.try_get(11)?),
                    delivered_at: r.try_get(6)?,
                    in_reply_to: r.try_get(7)?,
                    thread_id: r.try_get(8)?,
                    status: r.try_get(9)?,
                })
            })
            .collect()
        })
    }

    fn take_reply(&self, question_id: &str, asker_id: i64) -> Result<Option<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, b.body) \
             FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
             LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE d.recipient_id = $2 AND d.delivered_at IS NULL AND m.in_reply_to = $1 \
               AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW}) \
             ORDER BY m.seq LIMIT 1 FOR UPDATE OF d"
        );
        self.run(|c| {
            let mut tx = c.transaction()?;
            let reply = match tx.query_opt(sql.as_str(), &[&question_id, &asker_id])? {
                Some(r) => Some(message_from_row(&r)?),
                None => None,
            };
            if let Some(m) = &reply {
                tx.execute(
                    "UPDATE deliveries SET delivered_at = $3 WHERE recipient_id = $1 AND message_seq = $2",
                    &[&asker_id, &m.seq, &now_text()],
                )?;
                tx.execute("DELETE FROM asks WHERE question_id = $1", &[&question_id])?;
            }
            tx.commit()?;
            Ok(reply)
        })
    }

    fn end_ask(&self, question_id: &str) -> Result<()> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            let asker = tx.query_opt(
                "DELETE FROM asks WHERE question_id = $1 RETURNING asker_id",
                &[&question_id],
            )?;
            // A reply that was held back is now the monitor's to print.
            if let Some(r) = asker {
                let id: i64 = r.try_get(0)?;
                tx.execute("SELECT pg_notify($1, '')", &[&mailbox_channel(id)])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn is_delivered(&self, message_id: &str) -> Result<bool> {
        let undelivered: i64 = self.run(|c| {
            Ok(c.query_one(
                "SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
                 WHERE m.id = $1 AND d.delivered_at IS NULL",
                &[&message_id],
            )?
            .try_get(0)?)
        })?;
        Ok(undelivered == 0)
    }

    fn subscribe(&self, tx: Sender<Wake>) -> Result<Box<dyn Subscription>> {
        let mut channels = vec![GLOBAL_CHANNEL.to_string()];
        channels.extend(self.interest.borrow().iter().map(|id| mailbox_channel(*id)));
        let existing = self.link.borrow().clone();
        let (link, owns) = match existing {
            Some(link) => (link, false),
            None => {
                let link = Arc::new(Link {
                    target: Arc::clone(&self.target),
                    held: None,
                    parked: Mutex::new(None),
                    stop: AtomicBool::new(false),
                    changed: Arc::clone(&self.changed),
                    tx: Mutex::new(None),
                    lost: Mutex::new(None),
                    notice: Arc::clone(&self.notice),
                    thread: Mutex::new(None),
                });
                *self.link.borrow_mut() = Some(Arc::clone(&link));
                (link, true)
            }
        };
        *lock(&link.tx) = Some(tx);
        let running = lock(&link.thread).is_some();
        if !running {
            let parked = lock(&link.parked).take();
            link.start(parked, channels)?;
        }
        self.changed.any.store(false, Ordering::SeqCst);
        self.last_look.set(Instant::now());
        Ok(Box::new(LinkSubscription { link, owns }))
    }

    fn changed(&self) -> Result<bool> {
        // A notification since the last look; else, once a second, say yes
        // anyway (the caller runs one indexed query): a safety net for a
        // notification lost around a reconnect.
        let now = Instant::now();
        if self.changed.any.swap(false, Ordering::SeqCst) {
            self.last_look.set(now);
            return Ok(true);
        }
        if now.duration_since(self.last_look.get()) >= Duration::from_secs(1) {
            self.last_look.set(now);
            return Ok(true);
        }
        Ok(false)
    }

    fn sessions_changed(&self) -> bool {
        // Mail alone wakes a mailbox's own channel; everything else (and a
        // possibly missed notification) says yes, and so does a second
        // without a look (a killed monitor or a deleted row notifies nobody).
        let now = Instant::now();
        if self.changed.sessions.swap(false, Ordering::SeqCst)
            || now.duration_since(self.last_sessions_look.get()) >= Duration::from_secs(1)
        {
            self.last_sessions_look.set(now);
            return true;
        }
        false
    }

    fn check_intact(&self) -> Result<()> {
        if let Some(link) = self.link.borrow().as_ref() {
            if let Some(text) = lock(&link.lost).as_ref() {
                bail!("{text}");
            }
        }
        Ok(())
    }

    fn add_peer(&self, peer: &Peer, key: &str, project: &str) -> Result<Session> {
        let now = now_text();
        let id: i64 = self.run(|c| {
            let mut tx = c.transaction()?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO sessions (name, session_key, state, cwd, project, created_at, since, host) \
                     VALUES ($1, $2, 'offline', $3, $5, $4, $4, $6) \
                     ON CONFLICT (name) DO UPDATE SET session_key = excluded.session_key, cwd = excluded.cwd, \
                       project = excluded.project, host = excluded.host, \
                       state = CASE WHEN sessions.state = 'left' THEN 'offline' ELSE sessions.state END, \
                       since = excluded.since \
                     RETURNING id",
                    &[&peer.name, &key, &peer.cwd, &now, &project, &self.host],
                )?
                .try_get(0)?;
            tx.execute(
                "INSERT INTO peers (name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at, host) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9) \
                 ON CONFLICT (name) DO UPDATE SET session_id = excluded.session_id, tmux_socket = excluded.tmux_socket, \
                   tmux_session = excluded.tmux_session, command = excluded.command, cwd = excluded.cwd, \
                   spawned_by = excluded.spawned_by, created_at = excluded.created_at, killed_at = NULL, host = excluded.host",
                &[
                    &peer.name,
                    &id,
                    &peer.tmux_socket,
                    &peer.tmux_session,
                    &peer.command,
                    &peer.cwd,
                    &peer.spawned_by,
                    &now,
                    &self.host,
                ],
            )?;
            tx.execute("SELECT pg_notify($1, $2)", &[&GLOBAL_CHANNEL, &id.to_string()])?;
            tx.commit()?;
            Ok(id)
        })?;
        self.session_by_id(id)?.context("peer mailbox vanished")
    }

    fn peer(&self, name: &str) -> Result<Option<Peer>> {
        Ok(self.query_peers("name = $1", &[&name])?.into_iter().next())
    }

    fn peers(&self, include_killed: bool) -> Result<Vec<Peer>> {
        if include_killed {
            self.query_peers("TRUE ORDER BY name", &[])
        } else {
            self.query_peers("killed_at IS NULL ORDER BY name", &[])
        }
    }

    fn peer_killed(&self, name: &str) -> Result<()> {
        let now = now_text();
        self.run(|c| {
            c.execute(
                "UPDATE peers SET killed_at = $2 WHERE name = $1",
                &[&name, &now],
            )?;
            Ok(())
        })
    }

    fn query_readonly(&self, sql: &str) -> Result<SqlResult> {
        let timeout_ms = std::env::var("INTER_SESSION_SQL_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .unwrap_or(SQL_TIMEOUT_MS);
        let outcome = self.run(|c| {
            // Parsing alone refuses a second statement; it also gives the
            // column types, for JSON numbers.
            let stmt = match c.prepare(sql) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
            let columns: Vec<String> = stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let mut tx = c.build_transaction().read_only(true).start()?;
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}"))?;
            let result = tx.simple_query(sql);
            drop(tx); // rolled back: nothing a query did is kept
            Ok(result.map(|msgs| (columns, types, msgs)))
        })?;
        let (columns, types, msgs) = match outcome {
            Ok(v) => v,
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                let text = pg_text(&e);
                if code == "25006" {
                    bail!("sql is read-only: only queries (SELECT, EXPLAIN, SHOW) are allowed");
                }
                if code == "42601" && text.contains("multiple commands") {
                    bail!("sql takes one statement at a time");
                }
                if code == "57014" {
                    bail!(
                        "sql: the query ran longer than {} s and was cancelled",
                        timeout_ms as f64 / 1000.0
                    );
                }
                bail!("sql error: {text}");
            }
        };
        let mut rows = Vec::new();
        for m in msgs {
            if let SimpleQueryMessage::Row(row) = m {
                let mut out = Vec::with_capacity(columns.len());
                for (i, ty) in types.iter().enumerate() {
                    out.push(match row.try_get(i)? {
                        None => serde_json::Value::Null,
                        Some(text) => text_to_json(text, ty),
                    });
                }
                rows.push(out);
            }
        }
        Ok(SqlResult { columns, rows })
    }
}

/// A text-format value as JSON: numbers as numbers, booleans as booleans.
fn text_to_json(text: &str, ty: &Type) -> serde_json::Value {
    if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(ty) {
        if let Ok(v) = text.parse::<i64>() {
            return v.into();
        }
    }
    if [Type::FLOAT4, Type::FLOAT8, Type::NUMERIC].contains(ty) {
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return serde_json::Value::Number(n);
        }
    }
    if *ty == Type::BOOL {
        return (text == "t").into();
    }
    text.into()
}

// ---------------------------------------------------------------------------
// `db copy`: an SQLite mailbox into PostgreSQL.
// ---------------------------------------------------------------------------

/// What `copy_from_sqlite` wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// The target database, password masked.
    pub database: String,
    pub sessions: u64,
    pub messages: u64,
    pub blobs: u64,
    pub deliveries: u64,
    /// Deliveries already copied as pending, now marked delivered.
    pub delivered_since: u64,
    pub peers: u64,
    pub labels: u64,
    pub asks: u64,
}

impl CopyReport {
    pub fn nothing_new(&self) -> bool {
        self.sessions
            + self.messages
            + self.blobs
            + self.deliveries
            + self.delivered_since
            + self.peers
            + self.labels
            + self.asks
            == 0
    }
}

/// Rows per INSERT … SELECT FROM unnest(…) batch.
const COPY_BATCH: usize = 1000;

/// Copy the SQLite mailbox in `dir` into the PostgreSQL database at `url`:
/// sessions, blobs, messages (same ids and seqs), deliveries, peers, labels
/// and asks, in one transaction. Rows already there are left alone, so a
/// second run copies nothing; a database holding a *different* mailbox
/// (same id, other name or message) is refused and left unchanged.
pub fn copy_from_sqlite(dir: &Path, url: &str) -> Result<CopyReport> {
    // Opening it the usual way checks the folder and brings the schema up to date.
    drop(super::sqlite::SqliteStore::open_in(dir)?);
    let src = rusqlite::Connection::open_with_flags(
        dir.join(datadir::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context("could not open the SQLite mailbox")?;
    src.busy_timeout(Duration::from_secs(10))?;
    // One read transaction: a consistent snapshot even while others write.
    src.execute_batch("BEGIN")?;
    let data = SqliteData::read(&src)?;
    src.execute_batch("COMMIT")?;

    let store = PostgresStore::connect_only(url)?;
    let host = store.host.clone();
    let masked = store.target.masked.clone();
    let mut report = store.run(|c| write_copy(c, &data, &host))?;
    report.database = masked;
    Ok(report)
}

type Opt = Option<String>;
/// id, name, session_key, label, state, cwd, project, monitor_pid,
/// owner_pid, created_at, since.
type SessionRow = (
    i64,
    String,
    Opt,
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    String,
);
/// name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by,
/// created_at, killed_at.
type PeerRow = (
    String,
    Option<i64>,
    String,
    String,
    String,
    String,
    String,
    String,
    Opt,
);

/// Everything of an SQLite mailbox, column by column.
#[derive(Default)]
struct SqliteData {
    sessions: Vec<SessionRow>,
    blobs: Vec<(i64, String)>,
    messages: Vec<MessageRow>,
    deliveries: Vec<(i64, i64, Opt)>,
    labels: Vec<(String, String)>,
    peers: Vec<PeerRow>,
    asks: Vec<(String, i64, String)>,
}

struct MessageRow {
    seq: i64,
    id: String,
    created_at: String,
    kind: String,
    sender_id: Option<i64>,
    sender: String,
    sender_label: String,
    chars: i64,
    text: Opt,
    blob_id: Option<i64>,
    in_reply_to: Opt,
    thread_id: String,
    expires_at: Opt,
    idempotency_key: Opt,
    /// The text (inline or in its blob) holds U+0000 and is stored escaped.
    escaped: bool,
}

impl SqliteData {
    fn read(db: &rusqlite::Connection) -> Result<SqliteData> {
        let mut d = SqliteData::default();
        let mut stmt = db.prepare(
            "SELECT id, name, session_key, label, state, cwd, project, monitor_pid, owner_pid, created_at, since \
             FROM sessions ORDER BY id",
        )?;
        d.sessions = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = db.prepare("SELECT id, body FROM blobs ORDER BY id")?;
        d.blobs = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = db.prepare(
            "SELECT seq, id, created_at, kind, sender_id, sender, sender_label, chars, text, blob_id, \
                    in_reply_to, COALESCE(thread_id, id), expires_at, idempotency_key \
             FROM messages ORDER BY seq",
        )?;
        d.messages = stmt
            .query_map([], |r| {
                Ok(MessageRow {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    created_at: r.get(2)?,
                    kind: r.get(3)?,
                    sender_id: r.get(4)?,
                    sender: r.get(5)?,
                    sender_label: r.get(6)?,
                    chars: r.get(7)?,
                    text: r.get(8)?,
                    blob_id: r.get(9)?,
                    in_reply_to: r.get(10)?,
                    thread_id: r.get(11)?,
                    expires_at: r.get(12)?,
                    idempotency_key: r.get(13)?,
                    escaped: false,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        // Texts holding U+0000 are stored escaped (see `text_to_stored`).
        let nul_blobs: HashSet<i64> = d
            .blobs
            .iter()
            .filter(|(_, body)| body.contains('\0'))
            .map(|(id, _)| *id)
            .collect();
        for m in &mut d.messages {
            if let Some(t) = m.text.as_mut().filter(|t| t.contains('\0')) {
                *t = text_to_stored(t).0.into_owned();
                m.escaped = true;
            }
            if m.blob_id.is_some_and(|b| nul_blobs.contains(&b)) {
                m.escaped = true;
            }
        }
        for (id, body) in &mut d.blobs {
            if nul_blobs.contains(id) {
                *body = text_to_stored(body).0.into_owned();
            }
        }
        let mut stmt = db.prepare(
            "SELECT message_seq, recipient_id, delivered_at FROM deliveries ORDER BY message_seq, recipient_id",
        )?;
        d.deliveries = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = db.prepare("SELECT project, label FROM project_labels ORDER BY project")?;
        d.labels = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = db.prepare(
            "SELECT name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at \
             FROM peers ORDER BY name",
        )?;
        d.peers = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt =
            db.prepare("SELECT question_id, asker_id, until FROM asks ORDER BY question_id")?;
        d.asks = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(d)
    }
}

fn write_copy(c: &mut Client, d: &SqliteData, host: &str) -> Result<CopyReport> {
    let mut tx = c.transaction()?;
    // No sends while we copy: seqs stay in commit order.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_NS, &SEND_KEY],
    )?;
    let conflict = |what: String| -> anyhow::Error {
        anyhow::anyhow!(
            "the PostgreSQL database already holds a different mailbox ({what}); \
             db copy needs an empty database, or one filled by an earlier copy of this mailbox; nothing was copied"
        )
    };

    // Sessions: the same id must carry the same name, both ways.
    let mut by_id: HashMap<i64, String> = HashMap::new();
    let mut by_name: HashMap<String, i64> = HashMap::new();
    for r in tx.query("SELECT id, name FROM sessions", &[])? {
        let id: i64 = r.try_get(0)?;
        let name: String = r.try_get(1)?;
        by_name.insert(name.clone(), id);
        by_id.insert(id, name);
    }
    for s in &d.sessions {
        if let Some(name) = by_id.get(&s.0) {
            if *name != s.1 {
                return Err(conflict(format!(
                    "session {} is '{name}' there, '{}' here",
                    s.0, s.1
                )));
            }
        }
        if let Some(id) = by_name.get(&s.1) {
            if *id != s.0 {
                return Err(conflict(format!(
                    "session '{}' has id {id} there, {} here",
                    s.1, s.0
                )));
            }
        }
    }
    // Messages: the same seq must carry the same id, both ways.
    let mut seq_ids: HashMap<i64, String> = HashMap::new();
    let mut id_seqs: HashMap<String, i64> = HashMap::new();
    for r in tx.query("SELECT seq, id FROM messages", &[])? {
        let seq: i64 = r.try_get(0)?;
        let id: String = r.try_get(1)?;
        id_seqs.insert(id.clone(), seq);
        seq_ids.insert(seq, id);
    }
    for m in &d.messages {
        if let Some(id) = seq_ids.get(&m.seq) {
            if *id != m.id {
                return Err(conflict(format!(
                    "message seq {} is {id} there, {} here",
                    m.seq, m.id
                )));
            }
        }
        if let Some(seq) = id_seqs.get(&m.id) {
            if *seq != m.seq {
                return Err(conflict(format!(
                    "message {} has seq {seq} there, {} here",
                    m.id, m.seq
                )));
            }
        }
    }
    let new_messages: Vec<&MessageRow> = d
        .messages
        .iter()
        .filter(|m| !seq_ids.contains_key(&m.seq))
        .collect();
    // Blobs of messages not there yet must not collide with blobs there.
    let wanted: Vec<i64> = new_messages.iter().filter_map(|m| m.blob_id).collect();
    let taken: i64 = tx
        .query_one("SELECT count(*) FROM blobs WHERE id = ANY($1)", &[&wanted])?
        .try_get(0)?;
    if taken > 0 {
        return Err(conflict(format!(
            "{taken} long-message bodies use the same ids"
        )));
    }

    let mut report = CopyReport::default();
    for chunk in d.sessions.chunks(COPY_BATCH) {
        let ids: Vec<i64> = chunk.iter().map(|s| s.0).collect();
        let names: Vec<&str> = chunk.iter().map(|s| s.1.as_str()).collect();
        let keys: Vec<Option<&str>> = chunk.iter().map(|s| s.2.as_deref()).collect();
        let labels: Vec<&str> = chunk.iter().map(|s| s.3.as_str()).collect();
        // Nobody holds a PostgreSQL lock for these yet: online reads offline.
        let states: Vec<&str> = chunk
            .iter()
            .map(|s| {
                if s.4 == "online" {
                    "offline"
                } else {
                    s.4.as_str()
                }
            })
            .collect();
        let cwds: Vec<&str> = chunk.iter().map(|s| s.5.as_str()).collect();
        let projects: Vec<&str> = chunk.iter().map(|s| s.6.as_str()).collect();
        let pids: Vec<Option<i64>> = chunk
            .iter()
            .map(|s| if s.4 == "online" { None } else { s.7 })
            .collect();
        let owners: Vec<Option<i64>> = chunk.iter().map(|s| s.8).collect();
        let created: Vec<&str> = chunk.iter().map(|s| s.9.as_str()).collect();
        let since: Vec<&str> = chunk.iter().map(|s| s.10.as_str()).collect();
        report.sessions += tx.execute(
            "INSERT INTO sessions (id, name, session_key, label, state, cwd, project, monitor_pid, owner_pid, \
                                   created_at, since, host) \
             SELECT *, $12 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                                   $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[]) \
             ON CONFLICT DO NOTHING",
            &[
                &ids, &names, &keys, &labels, &states, &cwds, &projects, &pids, &owners, &created, &since, &host,
            ],
        )?;
    }
    let blob_rows: Vec<&(i64, String)> = {
        let wanted: HashSet<i64> = wanted.iter().copied().collect();
        d.blobs.iter().filter(|b| wanted.contains(&b.0)).collect()
    };
    for chunk in blob_rows.chunks(COPY_BATCH) {
        let ids: Vec<i64> = chunk.iter().map(|b| b.0).collect();
        let bodies: Vec<&str> = chunk.iter().map(|b| b.1.as_str()).collect();
        report.blobs += tx.execute(
            "INSERT INTO blobs (id, body) SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING",
            &[&ids, &bodies],
        )?;
    }
    for chunk in new_messages.chunks(COPY_BATCH) {
        let col = |f: fn(&MessageRow) -> Option<&str>| -> Vec<Option<&str>> {
            chunk.iter().map(|m| f(m)).collect()
        };
        let seqs: Vec<i64> = chunk.iter().map(|m| m.seq).collect();
        let ids = col(|m| Some(m.id.as_str()));
        let created = col(|m| Some(m.created_at.as_str()));
        let kinds = col(|m| Some(m.kind.as_str()));
        let sender_ids: Vec<Option<i64>> = chunk.iter().map(|m| m.sender_id).collect();
        let senders = col(|m| Some(m.sender.as_str()));
        let sender_labels = col(|m| Some(m.sender_label.as_str()));
        let chars: Vec<i64> = chunk.iter().map(|m| m.chars).collect();
        let texts = col(|m| m.text.as_deref());
        let blob_ids: Vec<Option<i64>> = chunk.iter().map(|m| m.blob_id).collect();
        let parents = col(|m| m.in_reply_to.as_deref());
        let threads = col(|m| Some(m.thread_id.as_str()));
        let expires = col(|m| m.expires_at.as_deref());
        let keys = col(|m| m.idempotency_key.as_deref());
        let escaped: Vec<bool> = chunk.iter().map(|m| m.escaped).collect();
        report.messages += tx.execute(
            "INSERT INTO messages (seq, id, created_at, kind, sender_id, sender, sender_label, chars, text, blob_id, \
                                   in_reply_to, thread_id, expires_at, idempotency_key, text_escaped) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
                                  $7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[], \
                                  $13::text[], $14::text[], $15::bool[]) \
             ON CONFLICT DO NOTHING",
            &[
                &seqs, &ids, &created, &kinds, &sender_ids, &senders, &sender_labels, &chars, &texts, &blob_ids,
                &parents, &threads, &expires, &keys, &escaped,
            ],
        )?;
    }
    for chunk in d.deliveries.chunks(COPY_BATCH) {
        let seqs: Vec<i64> = chunk.iter().map(|r| r.0).collect();
        let rids: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        let at: Vec<Option<&str>> = chunk.iter().map(|r| r.2.as_deref()).collect();
        report.deliveries += tx.execute(
            "INSERT INTO deliveries (message_seq, recipient_id, delivered_at) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING",
            &[&seqs, &rids, &at],
        )?;
    }
    // Mail read here since an earlier copy: read there too.
    let delivered: Vec<&(i64, i64, Opt)> = d.deliveries.iter().filter(|r| r.2.is_some()).collect();
    for chunk in delivered.chunks(COPY_BATCH) {
        let seqs: Vec<i64> = chunk.iter().map(|r| r.0).collect();
        let rids: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        let at: Vec<Option<&str>> = chunk.iter().map(|r| r.2.as_deref()).collect();
        report.delivered_since += tx.execute(
            "UPDATE deliveries d SET delivered_at = u.at \
             FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(seq, rid, at) \
             WHERE d.message_seq = u.seq AND d.recipient_id = u.rid AND d.delivered_at IS NULL",
            &[&seqs, &rids, &at],
        )?;
    }
    for (project, label) in &d.labels {
        report.labels += tx.execute(
            "INSERT INTO project_labels (project, label) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[project, label],
        )?;
    }
    for p in &d.peers {
        report.peers += tx.execute(
            "INSERT INTO peers (name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at, host) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            &[&p.0, &p.1, &p.2, &p.3, &p.4, &p.5, &p.6, &p.7, &p.8, &host],
        )?;
    }
    for (question, asker, until) in &d.asks {
        report.asks += tx.execute(
            "INSERT INTO asks (question_id, asker_id, \"until\") VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[question, asker, until],
        )?;
    }
    // New rows made here from now on get ids above the copied ones.
    for (table, column) in [("sessions", "id"), ("blobs", "id"), ("messages", "seq")] {
        tx.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                           GREATEST((SELECT max({column}) FROM {table}), 1), \
                           (SELECT max({column}) FROM {table}) IS NOT NULL)"
        ))?;
    }
    tx.commit().context("could not commit the copy")?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://bob:s3cret@db.example:5432/mail?sslmode=require"),
            "postgres://bob:***@db.example:5432/mail?sslmode=require"
        );
        assert_eq!(
            mask_url("postgresql://bob:p@ss/w@db/mail"),
            "postgresql://bob:***@db/mail"
        );
        assert_eq!(
            mask_url("postgres://db/mail?user=bob&password=s3cret"),
            "postgres://db/mail?user=bob&password=***"
        );
        assert_eq!(
            mask_url("host=db user=bob password=s3cret"),
            "host=db user=bob password=***"
        );
        assert_eq!(mask_url("postgres://bob@db/mail"), "postgres://bob@db/mail");
    }

    #[test]
    fn pgpass_lines_split_with_escapes() {
        assert_eq!(
            split_pgpass(r"db:5432:*:bob:pa\:ss\\w:rd"),
            vec!["db", "5432", "*", "bob", r"pa:ss\w:rd"]
        );
    }

    #[test]
    fn sslmodes_and_extra_params_are_understood() {
        let t = Target::parse("postgres://bob:pw@localhost:1/x?sslmode=disable&application_name=t")
            .map(|t| t.masked);
        assert_eq!(
            t.ok().as_deref(),
            Some("postgres://bob:***@localhost:1/x?sslmode=disable&application_name=t")
        );
        assert!(Target::parse("postgres://localhost/x?sslmode=bogus").is_err());
        assert!(Target::parse(
            "postgres://localhost/x?sslmode=verify-full&sslrootcert=/nonexistent"
        )
        .is_err());
        assert!(Target::parse("postgres://localhost/x?sslmode=require").is_ok());
    }

    #[test]
    fn nul_texts_round_trip() {
        for t in ["plain", "a\0b", "\\0 and \0\\", "\0", "end\\"] {
            let (stored, escaped) = text_to_stored(t);
            assert!(!stored.contains('\0'));
            assert_eq!(stored_to_text(stored.into_owned(), escaped), t);
        }
        assert_eq!(text_to_stored("a\\b").0, "a\\b", "escaped only when needed");
    }

    #[test]
    fn candidates_are_flat() {
        assert_eq!(next_candidate("a", 1), "a-2");
        assert_eq!(next_candidate("a-2", 1), "a-3");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("x%4"), "x%4");
    }
}
