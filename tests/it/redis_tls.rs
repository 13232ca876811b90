//! The Slack dedupe store over TLS (`rediss://`): the library's Redis client
//! against a real `redis-server` (Debian's, built with TLS) on loopback, with
//! a throwaway CA and server certificate made by `openssl` for the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kbqa::server::slack::redis::{Redis, TIMEOUT};

/// Whether `program` is installed. Outside CI a missing one skips the test
/// (with a message); under CI it fails it: .ci/run installs both.
fn installed(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap()
        .status
        .success();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing: .ci/run installs the Debian package"
        );
        eprintln!("skipped: no {program} (apt-get install redis-server openssl)");
    }
    found
}

fn tools() -> bool {
    installed("redis-server") && installed("openssl")
}

/// A loopback port nothing listens on (just now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, in a
/// scratch folder (removed on drop).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn make() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        // One openssl command, its arguments separated by spaces.
        let openssl = |command: &str| {
            let out = Command::new("openssl")
                .args(command.split_whitespace())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {command}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Self-signed, with OpenSSL's CA extensions (basicConstraints CA:TRUE).
        openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout ca.key -out ca.crt -days 2 -subj /CN=kbqa-test-CA",
        );
        openssl(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout server.key -out server.csr -subj /CN=localhost",
        );
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 2 \
             -extfile server.ext -out server.crt",
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
}

/// `redis-server` speaking only TLS on a loopback port; killed on drop.
struct TlsRedis {
    child: Child,
    log: PathBuf,
}

impl TlsRedis {
    /// Started on `port` with `extra` arguments; returns once it listens.
    fn start(pki: &Pki, port: u16, extra: &[&str]) -> TlsRedis {
        let log = pki.path(&format!("redis-{port}.log"));
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(pki.path("server.crt"))
            .arg("--tls-key-file")
            .arg(pki.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.ca())
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(pki.dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("redis-server exited ({status}): {}", read(&log));
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start: {}",
                read(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsRedis { child, log }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One runtime per test (a `Redis` keeps its connection on the runtime of
/// its first use).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const TTL: Duration = Duration::from_secs(60);

/// `set_if_absent`, which must answer (or fail) within its time limit.
fn set(rt: &tokio::runtime::Runtime, redis: &Redis, key: &str) -> Result<bool, String> {
    let start = Instant::now();
    let result = rt.block_on(redis.set_if_absent(key, TTL));
    assert!(
        start.elapsed() < TIMEOUT + Duration::from_secs(2),
        "{redis}: {result:?} after {:?}",
        start.elapsed()
    );
    result
}

#[test]
fn rediss_with_the_private_ca_sets_a_key_once_and_without_it_fails_cleanly() {
    if !tools() {
        return;
    }
    let pki = Pki::make();
    let port = free_port();
    let server = TlsRedis::start(&pki, port, &[]);
    let rt = runtime();
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = pki.ca();

    let trusted = Redis::from_url_with_ca(&url, Some(ca.as_path())).unwrap();
    assert_eq!(trusted.addr(), format!("127.0.0.1:{port}"));
    assert_eq!(set(&rt, &trusted, "kbqa:slack:event:Ev1"), Ok(true));
    assert_eq!(set(&rt, &trusted, "kbqa:slack:event:Ev1"), Ok(false));
    // A clone shares the connection; a second client is another replica.
    assert_eq!(
        set(&rt, &trusted.clone(), "kbqa:slack:event:Ev1"),
        Ok(false)
    );
    let replica = Redis::from_url_with_ca(&url, Some(ca.as_path())).unwrap();
    assert_eq!(set(&rt, &replica, "kbqa:slack:event:Ev1"), Ok(false));
    assert_eq!(set(&rt, &replica, "kbqa:slack:event:Ev2"), Ok(true));

    // The certificate's DNS name checks too.
    let by_name = format!("rediss://localhost:{port}");
    let by_name = Redis::from_url_with_ca(&by_name, Some(ca.as_path())).unwrap();
    assert_eq!(set(&rt, &by_name, "kbqa:slack:event:Ev2"), Ok(false));

    // Without the CA the public roots do not vouch for the server: the
    // handshake fails, with an error that says so.
    let untrusted = Redis::from_url(&url).unwrap();
    let e = set(&rt, &untrusted, "kbqa:slack:event:Ev3").unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // ...each time (nothing half-made is kept).
    set(&rt, &untrusted, "kbqa:slack:event:Ev3").unwrap_err();

    // Plain RESP to a TLS-only port: refused by the server, cleanly.
    let plain = Redis::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
    let e = set(&rt, &plain, "kbqa:slack:event:Ev3").unwrap_err();
    assert!(!e.contains("no answer within"), "{e}");

    // The key the failed clients tried was never set.
    assert_eq!(set(&rt, &trusted, "kbqa:slack:event:Ev3"), Ok(true));
    drop(server);
}

#[test]
fn rediss_with_a_password() {
    if !tools() {
        return;
    }
    let pki = Pki::make();
    let port = free_port();
    let _server = TlsRedis::start(&pki, port, &["--requirepass", "secret"]);
    let rt = runtime();
    let ca = pki.ca();

    let redis = Redis::from_url_with_ca(
        &format!("rediss://:secret@127.0.0.1:{port}"),
        Some(ca.as_path()),
    )
    .unwrap();
    assert!(!format!("{redis:?}").contains("secret"), "{redis:?}");
    assert!(!redis.to_string().contains("secret"), "{redis}");
    assert_eq!(redis.addr(), format!("127.0.0.1:{port}"));
    assert_eq!(set(&rt, &redis, "kbqa:slack:event:P1"), Ok(true));
    assert_eq!(set(&rt, &redis, "kbqa:slack:event:P1"), Ok(false));

    // The default user by name, as Redis 6+ ACLs allow.
    let named = format!("rediss://default:secret@127.0.0.1:{port}");
    let named = Redis::from_url_with_ca(&named, Some(ca.as_path())).unwrap();
    assert_eq!(set(&rt, &named, "kbqa:slack:event:P1"), Ok(false));

    // Without the password, or with a wrong one: an error, not the password.
    let anonymous =
        Redis::from_url_with_ca(&format!("rediss://127.0.0.1:{port}"), Some(ca.as_path())).unwrap();
    let e = set(&rt, &anonymous, "kbqa:slack:event:P2").unwrap_err();
    assert!(e.contains("NOAUTH") || e.contains("uthentication"), "{e}");
    let wrong = format!("rediss://:hunter2@127.0.0.1:{port}");
    let wrong = Redis::from_url_with_ca(&wrong, Some(ca.as_path())).unwrap();
    let e = set(&rt, &wrong, "kbqa:slack:event:P2").unwrap_err();
    assert!(!e.contains("hunter2"), "{e}");
    assert_eq!(set(&rt, &redis, "kbqa:slack:event:P2"), Ok(true));
}

#[test]
fn a_redis_down_at_start_up_or_restarted_is_used_once_it_is_up() {
    if !tools() {
        return;
    }
    let pki = Pki::make();
    let port = free_port();
    let rt = runtime();
    let ca = pki.ca();
    let redis =
        Redis::from_url_with_ca(&format!("rediss://127.0.0.1:{port}"), Some(ca.as_path())).unwrap();

    // Nothing listens yet: an error (the caller falls back to its memory).
    set(&rt, &redis, "kbqa:slack:event:D1").unwrap_err();
    let mut server = TlsRedis::start(&pki, port, &[]);
    assert_eq!(set(&rt, &redis, "kbqa:slack:event:D1"), Ok(true));

    // Redis restarts (empty: no persistence): the connection is remade.
    server.stop();
    set(&rt, &redis, "kbqa:slack:event:D2").unwrap_err();
    let server = TlsRedis::start(&pki, port, &[]);
    let start = Instant::now();
    loop {
        match set(&rt, &redis, "kbqa:slack:event:D1") {
            Ok(first) => {
                assert!(first, "a restarted Redis has forgotten D1");
                break;
            }
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(15),
                "not reconnected: {e}\n{}",
                read(&server.log)
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
