//! TLS to a real PostgreSQL (`ssl=on`, a certificate made with the
//! `openssl` CLI in the test's temp dir, signed by a CA of the test's own):
//! libpq's `sslmode` meanings hold. `require` encrypts without checking the
//! certificate; `verify-full` with the CA (`sslrootcert`) checks chain and
//! host name, and refuses a server its CA did not sign or a host name its
//! certificate does not carry; `verify-ca` checks the chain only. Whether
//! a session is encrypted is read from the server (`pg_stat_ssl`).

use cairn_snapshot::{SnapshotDb, SnapshotRepo};
use cairn_testsupport::postgres_server::PostgresServer;
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` (`NAME.crt`, `NAME.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// A server certificate for 127.0.0.1 only (no `localhost`), signed by `ca`.
fn make_server_cert(dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        ],
    );
    (dir.join("server.crt"), dir.join("server.key"))
}

/// Whether the server sees session `app` (its application_name) encrypted.
fn encrypted(server: &PostgresServer, app: &str) -> bool {
    let out = server.psql(
        "postgres",
        &format!(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = '{app}'"
        ),
    );
    match out.trim() {
        "t" => true,
        "f" => false,
        other => panic!("session {app}: pg_stat_ssl says {other:?}"),
    }
}

fn connect(url: &str) -> Result<SnapshotRepo, cairn_snapshot::SnapshotError> {
    SnapshotRepo::connect(&SnapshotDb::parse(url)?, Path::new("/nonexistent"))
}

#[test]
fn sslmodes_mean_what_they_mean_in_libpq() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = make_ca(dir, "ca");
    let other_ca = make_ca(dir, "other-ca");
    let (cert, key) = make_server_cert(dir, "ca");
    let server = PostgresServer::start_tls(&cert, &key);
    server.create_database("tls");
    let port = server.port();
    let url = |host: &str, app: &str, params: &str| {
        format!("postgres://cairn@{host}:{port}/tls?application_name={app}&{params}")
    };

    // Plain when asked: the encrypted cases below are not the server's default.
    let _plain = connect(&url("127.0.0.1", "plain", "sslmode=disable")).expect("disable");
    assert!(!encrypted(&server, "plain"));

    // require: encrypted, the self-signed chain not checked (libpq's require).
    let _req = connect(&url("127.0.0.1", "req", "sslmode=require")).expect("require");
    assert!(encrypted(&server, "req"));

    // verify-full with the CA: chain and the IP in the certificate.
    let full = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let _full = connect(&url("127.0.0.1", "full", &full)).expect("verify-full");
    assert!(encrypted(&server, "full"));

    // Another CA: refused, whatever the host.
    let wrong = format!("sslmode=verify-full&sslrootcert={}", other_ca.display());
    let err = connect(&url("127.0.0.1", "wrong", &wrong))
        .err()
        .expect("a server another CA signed must be refused");
    assert!(!err.is_bad_input(), "{err}");
    let wrong_ca = format!("sslmode=verify-ca&sslrootcert={}", other_ca.display());
    assert!(connect(&url("127.0.0.1", "wrong-ca", &wrong_ca)).is_err());

    // `localhost` is not in the certificate: verify-full refuses it,
    // verify-ca (chain only) takes it.
    assert!(
        connect(&url("localhost", "name", &full)).is_err(),
        "a host name the certificate does not carry must be refused"
    );
    let chain = format!("sslmode=verify-ca&sslrootcert={}", ca.display());
    let _ca = connect(&url("localhost", "chain", &chain)).expect("verify-ca");
    assert!(encrypted(&server, "chain"));

    // A root file that is not there: a clear error naming it.
    let missing = "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let err = connect(&url("127.0.0.1", "missing", missing))
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
