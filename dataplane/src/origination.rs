//! DestinationRule TLS origination (spec §10.2): one rustls client configuration per cluster
//! that asks for `SIMPLE` or `MUTUAL`, built when a configuration is loaded (on the main or
//! control thread: certificate files and the system trust store are read there, never on a
//! worker) and published with the route table.
//!
//! Server names are verified as Istio programs Envoy:
//! - `insecureSkipVerify`: nothing is verified (handshake signatures still are);
//! - `subjectAltNames` from the DestinationRule, else the ServiceEntry's: the chain, and one of
//!   those names;
//! - an explicit `sni` and no SANs: the chain only (Istio's quirk: no name check);
//! - otherwise the SNI is the request's Host and the certificate must be valid for it
//!   (auto SNI and auto SAN validation).
//!
//! A cluster whose files are missing or unreadable keeps the reason; its requests fail with
//! 503 and that reason in the access log (Decisions 15), and the rest of the table serves.

use std::sync::{Arc, OnceLock};

use dataplane_config::spec::{ClientTls, TlsMode};
use dataplane_config::table::{ClusterId, RouteTable};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// How the server name to send (SNI) is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// The DestinationRule's `sni`.
    Fixed(String),
    /// The request's Host, port removed (auto SNI).
    FromHost,
}

/// What a cluster needs to originate TLS.
#[derive(Debug, Clone)]
pub struct Origination {
    /// The client configuration, or why there is none (the cluster's requests fail).
    pub config: Result<Arc<ClientConfig>, String>,
    /// The server name to send.
    pub sni: Sni,
}

/// TLS origination per cluster, indexed like [`RouteTable::clusters`].
#[derive(Debug, Clone, Default)]
pub struct Contexts {
    by_cluster: Vec<Option<Origination>>,
}

impl Contexts {
    /// Build the contexts of every cluster of `table` that originates TLS.
    pub fn build(table: &RouteTable) -> Self {
        let by_cluster = table
            .clusters
            .iter()
            .map(|c| {
                let tls = c.policy.tls.as_ref()?;
                if tls.mode == TlsMode::Disable {
                    return None;
                }
                Some(Origination {
                    config: client_config(tls, &c.service.subject_alt_names).map(Arc::new),
                    sni: tls
                        .sni
                        .clone()
                        .map_or(Sni::FromHost, |s| Sni::Fixed(s.to_ascii_lowercase())),
                })
            })
            .collect();
        Self { by_cluster }
    }

    /// The origination settings of `cluster`; `None`: plaintext.
    pub fn get(&self, cluster: ClusterId) -> Option<&Origination> {
        self.by_cluster.get(cluster.0 as usize)?.as_ref()
    }

    /// How many clusters originate TLS and how many of those cannot (for logs).
    pub fn counts(&self) -> (usize, usize) {
        let all = self.by_cluster.iter().flatten();
        let failed = all.clone().filter(|o| o.config.is_err()).count();
        (all.count(), failed)
    }

    /// The reasons clusters cannot originate TLS, by cluster index.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &str)> {
        self.by_cluster.iter().enumerate().filter_map(|(i, o)| {
            o.as_ref()
                .and_then(|o| o.config.as_ref().err())
                .map(|e| (i, e.as_str()))
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The operating system's trust store, read once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no certificate in the system trust store ({} errors)",
                    found.errors.len()
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

fn roots_from(path: &str) -> Result<Arc<RootCertStore>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("caCertificates {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("caCertificates {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("caCertificates {path}: no usable certificate"));
    }
    Ok(Arc::new(roots))
}

/// The rustls configuration for `tls`; `service_sans` are the ServiceEntry's
/// `subjectAltNames`, used when the DestinationRule gives none.
pub fn client_config(tls: &ClientTls, service_sans: &[String]) -> Result<ClientConfig, String> {
    match tls.mode {
        TlsMode::Simple | TlsMode::Mutual => {}
        TlsMode::IstioMutual => {
            return Err(
                "ISTIO_MUTUAL needs the mesh CA, which an egress node does not have".into(),
            );
        }
        TlsMode::Disable => return Err("TLS origination is disabled".into()),
    }
    if let Some(name) = &tls.credential_name {
        return Err(format!(
            "credentialName {name}: Kubernetes secrets are not available to this proxy"
        ));
    }
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(SkipVerify(provider.signature_verification_algorithms))
    } else {
        let roots = match &tls.ca_certificates {
            Some(path) => roots_from(path)?,
            None => system_roots()?,
        };
        let mut builder = WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
        if let Some(path) = &tls.ca_crl {
            let crls: Vec<CertificateRevocationListDer<'static>> =
                CertificateRevocationListDer::pem_file_iter(path)
                    .map_err(|e| format!("caCrl {path}: {e}"))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("caCrl {path}: {e}"))?;
            builder = builder.with_crls(crls);
        }
        let chain = builder.build().map_err(|e| format!("verifier: {e}"))?;
        let sans = if tls.subject_alt_names.is_empty() {
            service_sans
        } else {
            &tls.subject_alt_names
        };
        let names = if !sans.is_empty() {
            let names = sans
                .iter()
                .filter_map(|s| ServerName::try_from(s.clone()).ok())
                .collect::<Vec<_>>();
            if names.is_empty() {
                return Err(format!("subjectAltNames {sans:?}: no usable name"));
            }
            Names::Any(names)
        } else if tls.sni.is_some() {
            Names::ChainOnly
        } else {
            Names::ServerName
        };
        Arc::new(Verifier { chain, names })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = if tls.mode == TlsMode::Mutual {
        let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) else {
            return Err("MUTUAL needs clientCertificate and privateKey".into());
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("clientCertificate {cert}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("clientCertificate {cert}: {e}"))?;
        if chain.is_empty() {
            return Err(format!("clientCertificate {cert}: no certificate"));
        }
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("privateKey {key}: {e}"))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?
    } else {
        builder.with_no_client_auth()
    };
    config.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Ok(config)
}

/// Which names the server certificate must be valid for.
#[derive(Debug)]
enum Names {
    /// The name the handshake was started with (the SNI).
    ServerName,
    /// Any of these (`subjectAltNames`).
    Any(Vec<ServerName<'static>>),
    /// None: the chain alone.
    ChainOnly,
}

#[derive(Debug)]
struct Verifier {
    chain: Arc<WebPkiServerVerifier>,
    names: Names,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |name: &ServerName<'_>| {
            self.chain
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        };
        match &self.names {
            Names::ServerName => verify(server_name),
            Names::Any(names) => {
                let mut last = Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ));
                for name in names {
                    last = verify(name);
                    if last.is_ok() {
                        break;
                    }
                }
                last
            }
            Names::ChainOnly => match verify(server_name) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// `insecureSkipVerify`: any certificate is accepted; the handshake's signatures are still
/// checked against the certificate presented.
#[derive(Debug)]
struct SkipVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: TlsMode) -> ClientTls {
        ClientTls {
            mode,
            client_certificate: None,
            private_key: None,
            ca_certificates: None,
            ca_crl: None,
            subject_alt_names: Vec::new(),
            sni: None,
            insecure_skip_verify: false,
            credential_name: None,
        }
    }

    #[test]
    fn unusable_settings_give_a_reason_not_a_panic() {
        let cases: Vec<(ClientTls, &str)> = vec![
            (tls(TlsMode::IstioMutual), "ISTIO_MUTUAL"),
            (
                ClientTls {
                    ca_certificates: Some("/nonexistent/ca.pem".into()),
                    ..tls(TlsMode::Simple)
                },
                "caCertificates /nonexistent/ca.pem",
            ),
            (
                ClientTls {
                    insecure_skip_verify: true,
                    ..tls(TlsMode::Mutual)
                },
                "MUTUAL needs clientCertificate",
            ),
            (
                ClientTls {
                    credential_name: Some("secret".into()),
                    ..tls(TlsMode::Simple)
                },
                "credentialName secret",
            ),
        ];
        for (settings, want) in cases {
            let err = client_config(&settings, &[]).expect_err("refused");
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn skip_verify_needs_no_files() {
        let settings = ClientTls {
            insecure_skip_verify: true,
            ..tls(TlsMode::Simple)
        };
        assert!(client_config(&settings, &[]).is_ok());
    }
}
