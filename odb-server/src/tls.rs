//! TLS for the TCP listener: a certificate and key read from PEM files, or a self-signed
//! certificate generated at start for clients to pin. The handshake itself runs in each
//! connection's task (see [`crate::listener`]), never in the accept loop.

use crate::error::ServerError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The server side of TLS: which certificate the server presents. Cheap to clone.
///
/// Build it with [`TlsConfig::from_pem_files`] (a certificate signed by a CA the clients trust)
/// or [`TlsConfig::self_signed`] (a fresh certificate whose PEM the clients pin), and put it in
/// [`ServerConfig::tls`](crate::ServerConfig::tls).
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
    /// The certificate (chain) in PEM form, for [`TlsConfig::certificate_pem`].
    certificate_pem: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1) from
    /// PEM files.
    ///
    /// Fails with [`ServerError::Tls`] when a file cannot be read, holds no certificate or no
    /// key, or the key does not match the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, ServerError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                ServerError::Tls(format!(
                    "cannot read the certificate file {}: {e}",
                    cert.display()
                ))
            })?;
        if chain.is_empty() {
            return Err(ServerError::Tls(format!(
                "the certificate file {} holds no PEM certificate",
                cert.display()
            )));
        }
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            ServerError::Tls(format!(
                "cannot read a private key from {}: {e}",
                key.display()
            ))
        })?;
        Self::build(chain, private_key, None)
    }

    /// Generates a self-signed certificate valid for `names` (host names or IP addresses) with
    /// a fresh key that never leaves memory. Clients trust it by pinning
    /// [`TlsConfig::certificate_pem`].
    ///
    /// Fails with [`ServerError::Tls`] if `names` is empty or holds a name that cannot go in a
    /// certificate.
    pub fn self_signed(names: &[String]) -> Result<TlsConfig, ServerError> {
        if names.is_empty() {
            return Err(ServerError::Tls(
                "a self-signed certificate needs at least one host name or address".into(),
            ));
        }
        let failed = |e: rcgen::Error| {
            ServerError::Tls(format!("cannot generate a self-signed certificate: {e}"))
        };
        let signing_key = rcgen::KeyPair::generate().map_err(failed)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(failed)?;
        // A subject unique to this key: a client pinning another server's certificate then
        // sees an unknown issuer rather than a certificate with the same name but a bad
        // signature.
        let fingerprint: String = signing_key
            .public_key_raw()
            .iter()
            .rev()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("odb-server self-signed {fingerprint}"),
        );
        let cert = params.self_signed(&signing_key).map_err(failed)?;
        let key = PrivateKeyDer::try_from(signing_key.serialize_der())
            .map_err(|e| ServerError::Tls(format!("cannot use the generated key: {e}")))?;
        Self::build(vec![cert.der().clone()], key, Some(cert.pem()))
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        certificate_pem: Option<String>,
    ) -> Result<TlsConfig, ServerError> {
        let provider = Arc::new(ring_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls(format!("cannot set up TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                ServerError::Tls(match e {
                    // Its Display would end in the variant's name (`KeyMismatch`).
                    rustls::Error::InconsistentKeys(_) => {
                        "the private key does not belong to the certificate (they are not a \
                         pair); give the key the certificate was issued for"
                            .to_string()
                    }
                    e => format!("the certificate or the private key cannot be used: {e}"),
                })
            })?;
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate_pem,
        })
    }

    /// The PEM of a generated self-signed certificate (what clients pin); `None` for
    /// certificates read from files.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The names a self-signed certificate for a server bound to `ip` should cover: `host` as given
/// on the command line, the address itself, and for a loopback address also `localhost` and
/// `127.0.0.1`. Duplicates are removed; an unspecified address (`0.0.0.0`, `::`) is left out,
/// since no client connects to it.
pub fn self_signed_names(host: &str, ip: IpAddr) -> Vec<String> {
    let mut names = vec![host.to_string()];
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    if ip.is_loopback() {
        names.push("localhost".into());
        names.push("127.0.0.1".into());
    }
    let mut unique = Vec::with_capacity(names.len());
    for name in names {
        let name = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !name.is_empty() && !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// The `ring` crypto provider of rustls.
///
/// rustls 0.23.48 deprecated `ring::default_provider` because *ring* has no post-quantum key
/// exchange, pointing to the `aws-lc-rs` provider instead. ODB keeps *ring* on purpose: it
/// builds with nothing but a Rust toolchain and a C compiler, while `aws-lc-rs` needs CMake (and
/// NASM on some targets). TLS 1.3 with *ring*'s X25519 and P-256 key exchange stays secure
/// against today's attackers; moving to a post-quantum provider is a dependency decision, not a
/// code change here.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_include_localhost() {
        let names = self_signed_names("127.0.0.1", "127.0.0.1".parse().unwrap());
        assert_eq!(
            names,
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        );
        let names = self_signed_names("db.example", "0.0.0.0".parse().unwrap());
        assert_eq!(names, vec!["db.example".to_string()]);
        let names = self_signed_names("::1", "::1".parse().unwrap());
        assert_eq!(names, vec!["::1", "localhost", "127.0.0.1"]);
    }

    #[test]
    fn self_signed_certificate_is_generated() {
        let tls = TlsConfig::self_signed(&["localhost".into()]).unwrap();
        assert!(tls
            .certificate_pem()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")));
        assert!(TlsConfig::self_signed(&[]).is_err());
    }
}
