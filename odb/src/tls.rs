//! TLS for `odbs://` URLs: the client always verifies the server's certificate, against the
//! certificates of [`ClientBuilder::tls_ca_file`](crate::ClientBuilder::tls_ca_file) (a CA, or
//! the server's own self-signed certificate, pinned) or, when none is given, the operating
//! system's trusted roots. Failures become [`Error::Tls`] with the reason in plain words.

use crate::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, RootCertStore};
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Runs the TLS handshake on a connected socket, verifying the server's certificate for the
/// host part of `addr` (`host:port`).
pub(crate) async fn handshake(
    tcp: TcpStream,
    addr: &str,
    ca_file: Option<&Path>,
) -> Result<TlsStream<TcpStream>> {
    let host = host_of(addr);
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        Error::Tls(format!(
            "{host:?} is neither a valid host name nor an IP address, so the server's certificate cannot be checked against it"
        ))
    })?;
    let connector = TlsConnector::from(client_config(ca_file)?);
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Tls(describe(&e, host, ca_file)))
}

/// Opens a TLS session on a connected socket exactly as an `odbs://` client does, for tools
/// that speak the protocol themselves: the server's certificate is verified for the host part
/// of `addr` (`host:port`) against `ca_file` or, without one, the system's trusted roots.
///
/// Fails with [`Error::Tls`] when the certificate is not trusted or the handshake fails.
pub async fn connect_tls(
    tcp: TcpStream,
    addr: &str,
    ca_file: Option<&Path>,
) -> Result<TlsStream<TcpStream>> {
    handshake(tcp, addr, ca_file).await
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let roots = match ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots()?,
    };
    let provider = Arc::new(ring_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Trusts exactly the certificates in a PEM file.
fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("cannot read the CA file {}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Tls(format!(
            "the CA file {} holds no usable PEM certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// Trusts the operating system's root certificates.
fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(Error::Tls(format!(
            "no trusted root certificates found on this system{why}; pass the server's CA or \
             certificate with ClientBuilder::tls_ca_file"
        )));
    }
    Ok(roots)
}

/// Says in words why a handshake failed.
fn describe(e: &io::Error, host: &str, ca_file: Option<&Path>) -> String {
    let trusted = match ca_file {
        Some(path) => format!("the certificates in {}", path.display()),
        None => "the system's root certificates".to_string(),
    };
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
                "the server at {host} closed the connection during the TLS handshake; is it a \
                 TLS port? (use odb:// for a server without TLS)"
            ),
            _ => format!("the TLS handshake with {host} failed: {e}"),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => {
            let what = match cert {
                CertificateError::UnknownIssuer => format!(
                    "it was issued by an unknown issuer: nothing in {trusted} signed it; pass \
                     the CA, or the server's self-signed certificate, with tls_ca_file \
                     (ODB_TLS_CA in the examples)"
                ),
                CertificateError::NotValidForName => format!(
                    "it is not valid for the name {host:?} (name mismatch); connect with a \
                     host name or address the certificate lists"
                ),
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "it is not valid for the name {host:?} (name mismatch; it is valid for {}); \
                     connect with one of those names",
                    presented
                        .iter()
                        .map(|name| presented_name(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "it has expired; the server needs a new certificate".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "it is not valid yet; check the clocks of both machines".to_string()
                }
                CertificateError::Revoked => "it has been revoked".to_string(),
                CertificateError::BadSignature => format!(
                    "its signature does not verify against {trusted} (a different certificate \
                     than the one trusted, or a forged one)"
                ),
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => {
                    "it is not meant for a TLS server".to_string()
                }
                CertificateError::Other(other) => other.to_string(),
                other => in_words(&format!("{other:?}")),
            };
            format!("the server's certificate was refused: {what}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "the server at {host} did not answer with TLS ({tls}); is it a plaintext port? \
             (use odb:// for a server without TLS)"
        ),
        rustls::Error::AlertReceived(alert) => {
            format!(
                "the server at {host} refused the TLS handshake (alert: {})",
                in_words(&format!("{alert:?}"))
            )
        }
        other => format!("the TLS handshake with {host} failed: {other}"),
    }
}

/// A name a certificate presents, as rustls describes it (`DnsName("db.example.com")`,
/// `IpAddress(127.0.0.1)`), reduced to the name itself.
fn presented_name(described: &str) -> &str {
    match described.split_once('(') {
        Some((_, inner)) if inner.ends_with(')') => inner.trim_end_matches(')').trim_matches('"'),
        _ => described,
    }
}

/// A rustls enum variant's name in words (`HandshakeFailure` gives `handshake failure`), for
/// messages: its `Debug` form would show type names and nesting to the user.
fn in_words(debug: &str) -> String {
    let name = debug.split(['(', '{', ' ']).next().unwrap_or(debug);
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    words
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
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    #[test]
    fn presented_names_lose_their_wrapping() {
        assert_eq!(
            super::presented_name("DnsName(\"db.example.com\")"),
            "db.example.com"
        );
        assert_eq!(super::presented_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(super::presented_name("localhost"), "localhost");
    }

    #[test]
    fn variant_names_read_as_words() {
        assert_eq!(super::in_words("HandshakeFailure"), "handshake failure");
        assert_eq!(super::in_words("Expired"), "expired");
        assert_eq!(
            super::in_words("UnsupportedSignatureAlgorithmContext { x: 1 }"),
            "unsupported signature algorithm context"
        );
    }

    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("db.example:8000"), "db.example");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8000"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
