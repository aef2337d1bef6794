//! The trust store: read once per instance and shared by both HTTPS clients,
//! the AWS SDK's and the Prediction One client's.
//!
//! Left to themselves, each client reads the host's roots on its own (the
//! SDK through `rustls-native-certs`, reqwest through its platform
//! verifier): the bundle twice and, on hosts with a certificate directory,
//! some 290 files twice, all inside the cold start. Here the host's roots
//! are read once and handed to both. `SSL_CERT_FILE` and `SSL_CERT_DIR`
//! are honoured, and they *replace* the system's roots: to trust a private
//! CA as well as the public roots, point `SSL_CERT_FILE` at one bundle of
//! both (the system bundle with the CA appended; docs/security.md).
//!
//! They still follow the system's updates: nothing is compiled in.
//!
//! Read on first use ([`SharedTrust`]), not at init: a `fresh` request
//! needs only Secrets Manager, and work at init is work before the first
//! `/next`. [`LazySdkHttpClient`] builds the SDK's HTTP client on its first
//! connection; the Prediction One client builds reqwest on its first call.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

pub struct TrustStore {
    /// The host's roots that parse as trust anchors.
    roots: Vec<CertificateDer<'static>>,
}

impl TrustStore {
    /// The host's roots. A root that does not parse is left out (as the
    /// clients themselves would); none at all is logged, since every TLS
    /// connection will then fail.
    pub fn from_host() -> Self {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::debug!(
                errors = found.errors.len(),
                "some trust-store files could not be read"
            );
        }
        let mut probe = RootCertStore::empty();
        let roots: Vec<_> = found
            .certs
            .into_iter()
            .filter(|cert| probe.add(cert.clone()).is_ok())
            .collect();
        if roots.is_empty() {
            tracing::warn!(
                "the host's trust store holds no usable root certificate; TLS connections will fail"
            );
        }
        NO_ROOTS.store(roots.is_empty(), Ordering::Relaxed);
        TrustStore { roots }
    }

    /// A rustls configuration on these roots, with aws-lc-rs, for reqwest.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(self.roots.iter().cloned());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// The same roots as PEM, the form the AWS SDK's HTTP client takes.
    pub fn pem(&self) -> Vec<u8> {
        use base64::Engine;
        let mut pem = Vec::with_capacity(self.roots.len() * 2048);
        for root in &self.roots {
            let text = base64::engine::general_purpose::STANDARD.encode(root.as_ref());
            pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            for line in text.as_bytes().chunks(64) {
                pem.extend_from_slice(line);
                pem.push(b'\n');
            }
            pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
        pem
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// Set when the host's trust store was read and held no usable root.
static NO_ROOTS: AtomicBool = AtomicBool::new(false);

/// Why a connection failed in TLS, when it did: found in the error's chain
/// of causes (rustls' own error, wherever the HTTP clients wrapped it), in
/// words an operator can act on. Without it a missing root only ever shows
/// as "connection failed".
pub fn failure_of(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // io::Error's source() skips the error it wraps.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = failure_of(inner)
        {
            return Some(found);
        }
        cause = e.source();
    }
    None
}

fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let certificate = match error {
        rustls::Error::InvalidCertificate(c) => c,
        other => return format!("TLS failed: {other}"),
    };
    let what = match certificate {
        C::UnknownIssuer if NO_ROOTS.load(Ordering::Relaxed) => {
            return "TLS failed: this host trusts no root certificate at all (SSL_CERT_FILE / SSL_CERT_DIR name no readable CA certificates, or the system has none), so no server can be verified".into();
        }
        C::UnknownIssuer => {
            "is not issued by a root this host trusts (unknown issuer; a private CA must be in SSL_CERT_FILE or SSL_CERT_DIR, which replace the system's roots)"
        }
        C::Expired | C::ExpiredContext { .. } => "has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet",
        C::NotValidForName | C::NotValidForNameContext { .. } => "is not valid for the host name",
        C::Revoked => "is revoked",
        _ => return format!("TLS failed: the server's certificate was refused ({error})"),
    };
    format!("TLS failed: the server's certificate {what}")
}

/// The instance's trust store, read by whichever client needs it first.
#[derive(Clone, Default)]
pub struct SharedTrust(Arc<OnceLock<TrustStore>>);

impl SharedTrust {
    pub fn get(&self) -> &TrustStore {
        self.0.get_or_init(TrustStore::from_host)
    }
}

impl fmt::Debug for SharedTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots = self.0.get().map(TrustStore::len);
        f.debug_struct("SharedTrust")
            .field("roots", &roots)
            .finish()
    }
}

/// The AWS SDK's HTTP client (hyper and rustls with aws-lc, as the SDK's
/// default), built on its first connection with the shared trust store.
#[derive(Debug)]
pub struct LazySdkHttpClient {
    trust: SharedTrust,
    inner: OnceLock<SharedHttpClient>,
}

impl LazySdkHttpClient {
    pub fn new(trust: SharedTrust) -> Self {
        LazySdkHttpClient {
            trust,
            inner: OnceLock::new(),
        }
    }

    fn build(&self) -> SharedHttpClient {
        let store = tls::TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(self.trust.get().pem());
        let context = tls::TlsContext::builder()
            .with_trust_store(store)
            .build()
            .unwrap_or_else(|e| {
                // Not expected with rustls; the SDK's own default still
                // reads the host's roots.
                tracing::warn!(
                    "TLS set-up with the shared roots failed ({e}); using the SDK's own"
                );
                tls::TlsContext::default()
            });
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https()
    }
}

impl HttpClient for LazySdkHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.inner
            .get_or_init(|| self.build())
            .http_connector(settings, components)
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn the_pem_form_holds_the_same_roots() {
        let store = TrustStore::from_host();
        assert!(!store.is_empty(), "this host has a trust store");
        let back: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&store.pem())
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(back, store.roots);
        assert!(store.client_config().is_ok());
    }
}
