//! `rediss://` aliases: locks over TLS against a `redis-server` with a TLS
//! port and a certificate from a private CA made for the test. Without the
//! `tls` feature, such an alias is a configuration error that says so.

mod support;

#[cfg(not(feature = "tls"))]
#[test]
fn rediss_without_the_tls_feature_is_a_clear_configuration_error() {
    use lock_runtime::LockError;
    use lock_runtime::registry::{self, AliasConfig};
    let err = AliasConfig::from_url("rediss://127.0.0.1:6380")
        .and_then(|cfg| registry::add("tls-off", cfg))
        .unwrap_err();
    assert!(matches!(err, LockError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("`tls` feature"), "{err}");
}

#[cfg(feature = "tls")]
mod with_tls {
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Duration;

    use lock_runtime::registry::{self, AliasConfig};
    use lock_runtime::{Lock, LockError, Operation};

    use super::support::{self, RedisServer};

    /// A CA, and a server certificate it signed for 127.0.0.1.
    struct Certs {
        dir: PathBuf,
    }

    impl Certs {
        fn make() -> Self {
            let dir = support::private_dir("lock-tls");
            let run = |args: &[&str]| {
                let out = Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .output()
                    .unwrap_or_else(|e| panic!("the TLS tests need the `openssl` command (apt-get install openssl): {e}"));
                assert!(
                    out.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=lock-test-ca",
            ]);
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ]);
            std::fs::write(
                dir.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            )
            .unwrap();
            run(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ]);
            Self { dir }
        }

        fn path(&self, file: &str) -> String {
            self.dir.join(file).display().to_string()
        }
    }

    impl Drop for Certs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn tls_server(certs: &Certs) -> (RedisServer, u16) {
        let port = support::free_port();
        let args: Vec<String> = [
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &certs.path("server.crt"),
            "--tls-key-file",
            &certs.path("server.key"),
            "--tls-ca-cert-file",
            &certs.path("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        (RedisServer::start_with(&args), port)
    }

    #[test]
    fn locks_work_over_tls_with_a_trusted_ca() {
        let certs = Certs::make();
        assert!(certs.dir.join("server.crt").exists());
        let (server, port) = tls_server(&certs);
        let url = format!("rediss://127.0.0.1:{port}?tls_ca={}", certs.path("ca.crt"));
        registry::add("tls-on", AliasConfig::from_url(&url).unwrap()).unwrap();

        let guard = Lock::new("k").alias("tls-on").acquire().unwrap();
        assert!(
            server.exists("lock:k"),
            "the lock went to the server, over TLS"
        );
        assert!(
            Lock::new("k")
                .alias("tls-on")
                .try_acquire()
                .unwrap()
                .is_none()
        );
        guard.release().unwrap();
        assert!(!server.exists("lock:k"));

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let g = Lock::new("k")
                .alias("tls-on")
                .acquire_async()
                .await
                .unwrap();
            g.release_async().await.unwrap();
        });
    }

    #[test]
    fn an_untrusted_certificate_is_refused() {
        let certs = Certs::make();
        let (_server, port) = tls_server(&certs);
        let cfg = AliasConfig::from_url(&format!("rediss://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2));
        registry::add("tls-untrusted", cfg).unwrap();
        match Lock::new("k").alias("tls-untrusted").acquire().unwrap_err() {
            LockError::Backend {
                op: Operation::Acquire,
                source,
                ..
            } => {
                assert!(source.is_connection(), "{source}");
            }
            other => panic!("expected a refused connection, got {other:?}"),
        }
    }
}
