//! Just enough of the Redis protocol (RESP) for one atomic operation:
//! `SET key 1 NX EX ttl`, "remember this id unless someone already did".
//!
//! It lets N `kbqa serve` replicas behind a load balancer answer a Slack
//! event once even when Slack retries it and the retry reaches another
//! replica. A Redis the user already runs is the shared memory; kbqa does
//! not need a client library for one command, so none is linked.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long one exchange with Redis may take before it counts as down.
/// Short: Slack wants its acknowledgement within 3 s, and a Redis that does
/// not answer must not cost that.
const TIMEOUT: Duration = Duration::from_millis(500);

/// A Redis server named by a `redis://[:password@]host[:port][/db]` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Redis {
    addr: String,
    user: Option<String>,
    password: Option<String>,
    db: Option<u32>,
}

/// The password stays out of logs.
impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("db", &self.db)
            .finish()
    }
}

impl Redis {
    /// Parses a `redis://` URL (TLS, `rediss://`, is not supported).
    /// Errors never repeat the URL's password.
    pub fn from_url(url: &str) -> Result<Redis, String> {
        let rest = url
            .trim()
            .strip_prefix("redis://")
            .ok_or_else(|| "the Redis URL must start with redis://".to_string())?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (user, password) = match auth.map(|a| a.split_once(':')) {
            Some(Some((user, password))) => (user, password),
            Some(None) => ("", auth.unwrap_or_default()),
            None => ("", ""),
        };
        let user = Some(user.to_string()).filter(|u| !u.is_empty());
        let password = Some(password.to_string()).filter(|p| !p.is_empty());
        let url = format!("redis://{rest}");
        let (host, db) = match rest.split_once('/') {
            Some((host, "")) => (host, None),
            Some((host, db)) => (
                host,
                Some(
                    db.parse::<u32>()
                        .map_err(|_| format!("{url:?}: the database must be a number"))?,
                ),
            ),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let addr = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        Ok(Redis {
            addr,
            user,
            password,
            db,
        })
    }

    /// Host and port.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets `key` for `ttl` unless it exists; true when this call set it.
    pub async fn set_if_absent(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        tokio::time::timeout(TIMEOUT, self.exchange(key, ttl))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
    }

    async fn exchange(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut stream = BufReader::new(stream);
        let mut request = Vec::new();
        match (&self.user, &self.password) {
            (Some(user), Some(p)) => request.extend(command(&["AUTH", user, p])),
            (None, Some(p)) => request.extend(command(&["AUTH", p])),
            _ => {}
        }
        if let Some(db) = self.db {
            request.extend(command(&["SELECT", &db.to_string()]));
        }
        let secs = ttl.as_secs().max(1).to_string();
        request.extend(command(&["SET", key, "1", "NX", "EX", &secs]));
        stream
            .get_mut()
            .write_all(&request)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let preamble = usize::from(self.password.is_some()) + usize::from(self.db.is_some());
        for _ in 0..preamble {
            let reply = read_reply(&mut stream).await?;
            if !reply.starts_with('+') {
                return Err(format!("refused: {reply}"));
            }
        }
        let reply = read_reply(&mut stream).await?;
        match reply.as_bytes().first() {
            Some(b'+') => Ok(true),
            // A null bulk string (RESP2) or null (RESP3): the key was there.
            Some(b'$') if reply == "$-1" => Ok(false),
            Some(b'_') => Ok(false),
            _ => Err(format!("unexpected reply: {reply}")),
        }
    }
}

/// A command as a RESP array of bulk strings.
fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend(format!("${}\r\n", p.len()).as_bytes());
        out.extend(p.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// One reply line (the replies used here are all one line).
async fn read_reply(stream: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    let n = stream
        .read_line(&mut line)
        .await
        .map_err(|e| format!("cannot read: {e}"))?;
    if n == 0 {
        return Err("the connection closed".into());
    }
    let line = line.trim_end().to_string();
    if let Some(e) = line.strip_prefix('-') {
        return Err(e.to_string());
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_password_and_database() {
        let r = Redis::from_url("redis://127.0.0.1").unwrap();
        assert_eq!(
            (r.addr(), r.password.as_deref(), r.db),
            ("127.0.0.1:6379", None, None)
        );
        let r = Redis::from_url("redis://:s3cret@cache.internal:6380/2").unwrap();
        assert_eq!(r.addr(), "cache.internal:6380");
        assert_eq!(r.password.as_deref(), Some("s3cret"));
        assert_eq!((r.user.as_deref(), r.db), (None, Some(2)));
        assert!(!format!("{r:?}").contains("s3cret"));
        let r = Redis::from_url("redis://kbqa:s3cret@h").unwrap();
        assert_eq!(
            (r.user.as_deref(), r.password.as_deref()),
            (Some("kbqa"), Some("s3cret"))
        );
        assert!(Redis::from_url("http://x").is_err());
        let e = Redis::from_url("redis://:s3cret@x/abc").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(Redis::from_url("redis://").is_err());
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(
            command(&["SET", "k", "1"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n".to_vec()
        );
    }
}
