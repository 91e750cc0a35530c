//! HTTPS: the server's certificate chain and private key, read from PEM
//! files once at start and checked there, so that a wrong path or a key
//! that does not match its certificate stops `rowsync serve` with a message
//! instead of failing every handshake later.
//!
//! rustls does the TLS, with the ring provider (the one the client uses
//! too, so the build carries one implementation of the primitives).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate and key ready to serve.
#[derive(Clone, Debug)]
pub struct Tls {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {detail}", path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("the certificate in {} and the key in {} cannot serve together: {detail}", cert.display(), key.display())]
    Rejected { cert: PathBuf, key: PathBuf, detail: String },
}

impl Tls {
    /// Reads the certificate chain (leaf first) from `cert` and its private
    /// key from `key`, both PEM.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Read { path: cert.to_path_buf(), detail: e.to_string() })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate { path: cert.to_path_buf() });
        }
        let private_key =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: key.to_path_buf() })?;
        let rejected = |detail: String| TlsError::Rejected { cert: cert.to_path_buf(), key: key.to_path_buf(), detail };
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| rejected(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
                .map_err(|e| rejected(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { config: Arc::new(config) })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read { path: path.to_path_buf(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fresh self-signed certificate for localhost and its key,
    /// returning their paths.
    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_certificate_and_its_own_key_serve() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "server");
        let tls = Tls::from_pem_files(&cert, &key).unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair(dir.path(), "one");
        let (_, other_key) = pair(dir.path(), "two");
        let err = Tls::from_pem_files(&cert, &other_key).unwrap_err();
        assert!(matches!(err, TlsError::Rejected { .. }), "{err}");
        assert!(err.to_string().contains("cannot serve together"), "{err}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair(dir.path(), "server");
        let missing = dir.path().join("nowhere.key");
        let err = Tls::from_pem_files(&cert, &missing).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nowhere.key"), "{err}");
    }

    #[test]
    fn files_without_pem_content_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "server");
        let junk = dir.path().join("junk.txt");
        std::fs::write(&junk, "not a pem file\n").unwrap();

        let err = Tls::from_pem_files(&junk, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        // A certificate where the key should be is no key either.
        let err = Tls::from_pem_files(&cert, &cert).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        let err = Tls::from_pem_files(&cert, &junk).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }
}
