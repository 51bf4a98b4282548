//! TLS to PostgreSQL through rustls (the TLS stack the registry client
//! already links), checking what `sslmode`/`sslrootcert` ask with libpq's
//! meanings (`pg_url.rs`): the chain against the given roots (or the
//! system's), the host name only for `verify-full`; `require` without a
//! root encrypts but checks no certificate, as libpq does. The handshake's
//! signatures are always checked, so the session key belongs to the
//! certificate presented. Why rustls and not the system's OpenSSL:
//! docs/scale-out.md.

use super::{Result, SnapshotError, TlsOptions};
use postgres::Client;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Connect with TLS as `tls` asks.
pub fn connect(config: &postgres::Config, tls: &TlsOptions, target: &str) -> Result<Client> {
    let bad = |message: String| SnapshotError::Config {
        target: target.to_string(),
        message,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = verifier(tls, &provider).map_err(bad)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(client))
        .map_err(|source| SnapshotError::Postgres {
            target: target.to_string(),
            source,
        })
}

/// The certificate check `tls` asks for.
fn verifier(
    tls: &TlsOptions,
    provider: &Arc<CryptoProvider>,
) -> std::result::Result<Arc<dyn ServerCertVerifier>, String> {
    let algorithms = provider.signature_verification_algorithms;
    if !tls.verify_chain() {
        return Ok(Arc::new(AnyCertificate(algorithms)));
    }
    let roots = Arc::new(roots(tls)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    if tls.verify_host() {
        Ok(webpki)
    } else {
        Ok(Arc::new(ChainOnly(webpki)))
    }
}

/// Given a root file, libpq trusts it alone; otherwise the system's roots.
fn roots(tls: &TlsOptions) -> std::result::Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if let Some(path) = &tls.root_cert {
        let name = path.display();
        for cert in
            CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {name}: {e}"))?
        {
            let cert = cert.map_err(|e| format!("sslrootcert {name}: {e}"))?;
            store
                .add(cert)
                .map_err(|e| format!("sslrootcert {name}: {e}"))?;
        }
        if store.is_empty() {
            return Err(format!("sslrootcert {name}: no certificate in the file"));
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(found.certs);
        if store.is_empty() {
            return Err("no system root certificates found; give sslrootcert".into());
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not
/// checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`/`prefer` without a root: any certificate (libpq checks none
/// then), the handshake signed by its key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
