//! TLS to etcd: a custom CA, and a client certificate for etcd's
//! `--client-cert-auth`. Files are read when the client is made; a missing
//! or unreadable file, or one that holds no PEM certificate (or key), is an
//! error naming its path, rather than a failure at the first request.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The PEM files for TLS connections to etcd (endpoints `https://...`).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl TlsFiles {
    /// TLS with the system's defaults and no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA certificate in this PEM file (etcdctl's `--cacert`).
    pub fn with_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// Present this client certificate and key (etcdctl's `--cert`, `--key`).
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// The client certificate's file, if one is set.
    pub fn cert(&self) -> Option<&Path> {
        self.cert.as_deref()
    }

    pub(crate) fn set_ca(&mut self, ca: PathBuf) {
        self.ca = Some(ca);
    }

    pub(crate) fn set_cert(&mut self, cert: PathBuf) {
        self.cert = Some(cert);
    }

    pub(crate) fn set_key(&mut self, key: PathBuf) {
        self.key = Some(key);
    }

    /// Reads the files into etcd-client's TLS options.
    pub(crate) fn load(&self) -> Result<etcd_client::TlsOptions> {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca {
            let pem = read(ca, "CA certificate")?;
            certificates(&pem, ca, "CA certificate")?;
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        match (&self.cert, &self.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read(cert_path, "client certificate")?;
                certificates(&cert, cert_path, "client certificate")?;
                let key = read(key_path, "client key")?;
                use rustls_pki_types::pem::PemObject;
                rustls_pki_types::PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    not_pem(key_path, "client key", &format!("no PEM private key ({e})"))
                })?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Option {
                    name: "TLS client identity".into(),
                    reason: "needs both a certificate and a key".into(),
                })
            }
        }
        Ok(tls)
    }
}

/// Checks that a file holds PEM certificates, and only those.
fn certificates(pem: &[u8], path: &Path, what: &str) -> Result<()> {
    use rustls_pki_types::pem::PemObject;
    let mut found = 0;
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| not_pem(path, what, &format!("a broken PEM certificate ({e})")))?;
        found += 1;
    }
    if found == 0 {
        return Err(not_pem(
            path,
            what,
            "no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(())
}

fn not_pem(path: &Path, what: &str, problem: &str) -> Error {
    Error::Option {
        name: format!("TLS {what} {}", path.display()),
        reason: format!("holds {problem}"),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Option {
        name: format!("TLS {what} {}", path.display()),
        reason: format!("cannot be read: {e}"),
    })
}
