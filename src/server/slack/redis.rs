//! The Redis that `kbqa serve` replicas share so that a Slack event is
//! answered once, even when Slack retries it and the retry reaches another
//! replica behind the load balancer: each replica runs
//! `SET kbqa:slack:event:<id> 1 NX EX <ttl>` and only the one that set the
//! key answers.
//!
//! One command, but through the maintained `redis` crate rather than a
//! hand-written RESP client: an in-house Redis usually wants TLS
//! (`rediss://`, often under a private CA, given with
//! [`Redis::from_url_with_ca`]) and a password, and a long-running server
//! wants one multiplexed connection that is reconnected when Redis restarts
//! ([`redis::aio::ConnectionManager`]) instead of a TCP (and TLS) handshake
//! per Slack event.
//!
//! Building a [`Redis`] only parses and checks its URL (and reads the CA
//! file); the connection is made on first use, so a Redis that is down when
//! kbqa starts is simply tried again by later calls. Every call is bounded
//! by [`TIMEOUT`]; on an error the caller decides by its own memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use tokio::sync::Mutex;

/// How long one call ([`Redis::set_if_absent`]) may take, connecting
/// included, before Redis counts as down. Slack wants its acknowledgement
/// within 3 s, and the event is deduplicated before it is acknowledged.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How long one connection attempt (TCP, TLS and `AUTH`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one reply may take on an open connection (shorter than
/// [`TIMEOUT`], so that the error says which step was slow). A connection
/// that times out is dropped and the next call makes a new one: the
/// connection manager itself only replaces connections that broke.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(900);

/// What a Redis URL looks like, for error messages.
const FORM: &str = "redis://[[user]:password@]host[:port][/db] (rediss:// for TLS)";

/// The line that starts a certificate in a PEM file.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// A Redis server named by a `redis://` or `rediss://` (TLS) URL, with the
/// connection to it (made on first use, shared by clones, reconnected after
/// errors).
#[derive(Clone)]
pub struct Redis {
    /// The URL as given (trimmed). It may hold the password: never shown.
    url: String,
    /// The CA certificate(s) trusted for `rediss://`, when given.
    ca_file: Option<PathBuf>,
    /// `host:port`.
    addr: String,
    /// The URL without user and password (`rediss://host:port/db`).
    shown: String,
    user: Option<String>,
    has_password: bool,
    client: redis::Client,
    /// Made on first use; `None` again after a timeout.
    connection: Arc<Mutex<Option<ConnectionManager>>>,
}

/// The password stays out of logs.
impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.shown)
            .field("user", &self.user)
            .field("password", &self.has_password.then_some("<set>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The URL without user and password, e.g. `rediss://cache.internal:6380/2`.
impl std::fmt::Display for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Two `Redis` are equal when they were made from the same URL and CA file.
impl PartialEq for Redis {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url && self.ca_file == other.ca_file
    }
}

impl Eq for Redis {}

impl Redis {
    /// Parses and checks a `redis://` or `rediss://` URL; TLS connections
    /// trust the usual public roots. Does not connect. Errors never repeat
    /// the URL (it may hold a password).
    pub fn from_url(url: &str) -> Result<Redis, String> {
        Redis::from_url_with_ca(url, None)
    }

    /// Like [`Redis::from_url`], and for a `rediss://` URL trusts the PEM CA
    /// certificate(s) in `ca_file` *instead of* the public roots (as
    /// `redis-cli --cacert` does): the usual case of an in-house Redis whose
    /// certificate a private CA signed. The file is read now, so a wrong path
    /// is reported at start-up. A CA file with a `redis://` URL is an error
    /// (it would be silently unused).
    pub fn from_url_with_ca(url: &str, ca_file: Option<&Path>) -> Result<Redis, String> {
        let url = url.trim();
        let tls = match url.split_once("://").map(|(scheme, _)| scheme) {
            Some(s) if s.eq_ignore_ascii_case("rediss") => true,
            Some(s) if s.eq_ignore_ascii_case("redis") => false,
            _ => return Err(format!("the Redis URL must look like {FORM}")),
        };
        let parsed = redis::parse_redis_url(url)
            .ok_or_else(|| format!("the Redis URL does not parse; expected {FORM}"))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("the Redis URL names no host; expected {FORM}"));
        }
        if parsed.fragment().is_some() {
            return Err(
                "the Redis URL may not end with a #fragment (certificate checks cannot be \
                 turned off with #insecure: give the CA file of a private CA instead)"
                    .to_string(),
            );
        }
        let info = url
            .into_connection_info()
            .map_err(|e| format!("bad Redis URL: {e}"))?;
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => {
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            }
            _ => return Err(format!("the Redis URL must look like {FORM}")),
        };
        let settings = info.redis_settings();
        let db = settings.db();
        let shown = format!(
            "{}://{addr}{}",
            if tls { "rediss" } else { "redis" },
            if db == 0 {
                String::new()
            } else {
                format!("/{db}")
            }
        );
        let user = settings.username().map(str::to_string);
        let has_password = settings.password().is_some();
        let client = client(info, tls, ca_file)?;
        Ok(Redis {
            url: url.to_string(),
            ca_file: ca_file.map(Path::to_path_buf),
            addr,
            shown,
            user,
            has_password,
            client,
            connection: Arc::new(Mutex::new(None)),
        })
    }

    /// Host and port (never the password), for logs.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True for `rediss://`.
    pub fn tls(&self) -> bool {
        self.shown.starts_with("rediss://")
    }

    /// Sets `key` for `ttl` (at least a second) unless it exists; true when
    /// this call set it. Errors (Redis down, refused, too slow: at most
    /// [`TIMEOUT`]) never hold the password.
    pub async fn set_if_absent(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        match tokio::time::timeout(TIMEOUT, self.set_nx(key, ttl)).await {
            Ok(result) => result,
            Err(_) => {
                self.forget();
                Err(format!("no answer within {TIMEOUT:?}"))
            }
        }
    }

    async fn set_nx(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        let mut connection = self.manager().await?;
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        let reply: redis::Value = match set.query_async(&mut connection).await {
            Ok(reply) => reply,
            Err(e) => {
                if e.is_timeout() {
                    self.forget();
                }
                return Err(e.to_string());
            }
        };
        match reply {
            redis::Value::Okay => Ok(true),
            redis::Value::SimpleString(s) if s == "OK" => Ok(true),
            // A null bulk string (RESP2) or null (RESP3): the key was there.
            redis::Value::Nil => Ok(false),
            other => Err(format!("unexpected reply to SET NX: {other:?}")),
        }
    }

    /// The connection, made now if there is none. Until one is made nothing
    /// is kept, so each call tries afresh; after that the manager reconnects
    /// by itself when a command finds the connection broken (a Redis
    /// restart). Callers wait for one another's attempt rather than each
    /// connecting.
    async fn manager(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.connect().await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the connection (after a timeout: it may be half-open), so that
    /// the next call makes a new one. A call that is connecting right now
    /// (and holds the lock) makes a new one anyway.
    fn forget(&self) {
        if let Ok(mut slot) = self.connection.try_lock() {
            *slot = None;
        }
    }

    async fn connect(&self) -> Result<ConnectionManager, String> {
        // No retries inside one call: the call's time is short, and the next
        // call (the next Slack event) is the retry.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| format!("cannot connect: {e}"))
    }
}

/// The client for a parsed URL: plain, TLS with the system roots, or TLS
/// trusting only the CA certificate(s) in `ca_file`.
fn client(
    info: redis::ConnectionInfo,
    tls: bool,
    ca_file: Option<&Path>,
) -> Result<redis::Client, String> {
    Ok(match ca_file {
        Some(path) if !tls => {
            return Err(format!(
                "the Redis CA file {} is for rediss:// (TLS) URLs, and this one is redis://",
                path.display()
            ))
        }
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the Redis CA file {}: {e}", path.display()))?;
            if !pem
                .windows(PEM_CERTIFICATE.len())
                .any(|w| w == PEM_CERTIFICATE)
            {
                return Err(format!(
                    "the Redis CA file {} holds no PEM certificate ({})",
                    path.display(),
                    String::from_utf8_lossy(PEM_CERTIFICATE)
                ));
            }
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certificates)
                .map_err(|e| format!("the Redis CA file {}: {e}", path.display()))?
        }
        None => redis::Client::open(info).map_err(|e| format!("bad Redis URL: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_database_and_tls() {
        let r = Redis::from_url("redis://h:1/2").unwrap();
        assert_eq!((r.addr(), r.tls()), ("h:1", false));
        assert_eq!(r.to_string(), "redis://h:1/2");
        assert_eq!((r.user.as_deref(), r.has_password), (None, false));

        let r = Redis::from_url("redis://127.0.0.1").unwrap();
        assert_eq!(
            (r.addr(), r.to_string().as_str()),
            ("127.0.0.1:6379", "redis://127.0.0.1:6379")
        );

        let r = Redis::from_url("  rediss://cache.internal:6380  ").unwrap();
        assert_eq!((r.addr(), r.tls()), ("cache.internal:6380", true));
        assert_eq!(r.to_string(), "rediss://cache.internal:6380");

        let r = Redis::from_url("rediss://cache.internal/3").unwrap();
        assert_eq!(r.to_string(), "rediss://cache.internal:6379/3");

        let r = Redis::from_url("redis://[::1]:7000").unwrap();
        assert_eq!(r.addr(), "[::1]:7000");
    }

    #[test]
    fn the_password_stays_out_of_addr_debug_display_and_errors() {
        let r = Redis::from_url("rediss://:s3cret@cache.internal:6380/2").unwrap();
        assert_eq!(r.addr(), "cache.internal:6380");
        assert!(r.has_password);
        assert_eq!(r.user, None);
        for shown in [format!("{r:?}"), r.to_string(), r.addr().to_string()] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert!(format!("{r:?}").contains("<set>"), "{r:?}");

        let r = Redis::from_url("redis://kbqa:s3cret@h").unwrap();
        assert_eq!((r.user.as_deref(), r.has_password), (Some("kbqa"), true));
        assert!(!format!("{r:?}").contains("s3cret"));

        for bad in [
            "redis://:s3cret@x/abc",
            "redis://:s3cret@x:notaport",
            "rediss://:s3cret@x#insecure",
            "https://:s3cret@x",
        ] {
            let e = Redis::from_url(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_schemes_and_garbage_are_rejected_with_a_clear_message() {
        for bad in [
            "http://x",
            "unix:///run/redis.sock",
            "valkey://x",
            "cache.internal:6379",
            "garbage",
            "",
        ] {
            let e = Redis::from_url(bad).unwrap_err();
            assert!(
                e.contains("redis://") && e.contains("rediss://"),
                "{bad}: {e}"
            );
        }
        let e = Redis::from_url("redis://").unwrap_err();
        assert!(e.contains("host") || e.contains("parse"), "{e}");
        let e = Redis::from_url("redis://x/abc").unwrap_err();
        assert!(e.contains("database"), "{e}");
        let e = Redis::from_url("rediss://x#insecure").unwrap_err();
        assert!(e.contains("#insecure"), "{e}");
    }

    #[test]
    fn a_ca_file_is_read_now_and_only_for_tls() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Redis::from_url_with_ca("rediss://h", Some(missing.as_path())).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Redis::from_url_with_ca("rediss://h", Some(empty.as_path())).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");

        // PEM armour around bytes that are not a certificate.
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = Redis::from_url_with_ca("rediss://h", Some(broken.as_path())).unwrap_err();
        assert!(e.contains("broken.pem"), "{e}");

        let e = Redis::from_url_with_ca("redis://h", Some(broken.as_path())).unwrap_err();
        assert!(e.contains("rediss://"), "{e}");
    }

    #[test]
    fn equality_is_by_url_and_ca_file() {
        let a = Redis::from_url("redis://:p@h:1").unwrap();
        assert_eq!(a, a.clone());
        assert_eq!(a, Redis::from_url("redis://:p@h:1").unwrap());
        assert_ne!(a, Redis::from_url("redis://:q@h:1").unwrap());
        assert_ne!(a, Redis::from_url("rediss://:p@h:1").unwrap());
    }

    #[tokio::test]
    async fn a_redis_that_is_not_there_is_an_error_each_time_not_a_hang() {
        // A loopback port with nothing listening: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Redis::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
        for _ in 0..2 {
            let start = std::time::Instant::now();
            let e = r
                .set_if_absent("kbqa:test", Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(start.elapsed() <= TIMEOUT + Duration::from_secs(1), "{e}");
        }
        assert!(r.connection.try_lock().unwrap().is_none());
    }
}
