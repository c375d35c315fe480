//! Where the mailbox's database is and how to reach it: the URL (or
//! key=value string) parsed once into a connection target, with what
//! tokio-postgres does not know (`sslmode` verify-ca/verify-full,
//! `sslrootcert`) taken out and applied here; libpq's password file; TCP
//! keepalives on both ends, so that a machine that died frees its names;
//! and a rustls configuration for each `sslmode`. A URL leaves this file
//! only masked (`mask_url`).
//!
//! Not here: client certificates (`sslcert`/`sslkey`) and libpq's `PG*`
//! environment variables other than `PGPASSFILE`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ::postgres::Client;
use anyhow::{bail, Context, Result};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::pg_text;

const KEEPALIVE_IDLE_S: u64 = 20;
/// …then one probe every this many seconds…
const KEEPALIVE_INTERVAL_S: u64 = 5;
/// …and the connection is dead after this many unanswered probes.
const KEEPALIVE_RETRIES: u32 = 4;
/// Unacknowledged data older than this breaks the connection.
const TCP_USER_TIMEOUT_S: u64 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Everything needed to open a connection, parsed once.
pub(super) struct Target {
    config: ::postgres::Config,
    tls: MakeRustlsConnect,
    /// The URL with any password replaced by `***`.
    pub(super) masked: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target> {
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

    pub(super) fn connect(&self) -> std::result::Result<Client, ::postgres::Error> {
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

/// A query key or value of the URL as text: `%XX` decoded as tokio-postgres
/// decodes the rest of the URL, and `+` read as a space.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
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
    //! and the host name (rustls's own verifier).

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

    /// Encrypts and checks the handshake signature, never the host name;
    /// the chain only when there is one to check it against (`chain`).
    #[derive(Debug)]
    pub struct NoHostCheck {
        pub provider: Arc<CryptoProvider>,
        /// The roots' verifier (verify-ca, or require with a root
        /// certificate); `None` trusts any certificate.
        pub chain: Option<Arc<WebPkiServerVerifier>>,
    }

    impl ServerCertVerifier for NoHostCheck {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let Some(chain) = &self.chain else {
                return Ok(ServerCertVerified::assertion());
            };
            match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
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
            let algorithms = &self.provider.signature_verification_algorithms;
            verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
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
    let chain = match roots {
        Some(roots) if mode == TlsMode::VerifyFull => {
            return Ok(builder.with_root_certificates(roots).with_no_client_auth());
        }
        Some(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .context("TLS set-up failed")?,
        ),
        None => None,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::NoHostCheck { provider, chain }))
        .with_no_client_auth())
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
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("x%4"), "x%4");
        assert_eq!(percent_decode("a+b%2Bc"), "a b+c");
    }
}
