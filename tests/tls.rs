//! etcd with TLS and client-certificate authentication, with test
//! certificates made by the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use shylock::testing::EtcdOptions;
use shylock::{ConnectOptions, EtcdConfig, TlsFiles};
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct App {
    port: u16,
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    fn new() -> Pki {
        let temp = tempfile::Builder::new()
            .prefix("shylock-tls-")
            .tempdir()
            .unwrap();
        let dir = temp.path();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        for (name, usage) in [
            ("server", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        }
        Pki { dir: temp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self) -> EtcdServer {
        let arg = |flag: &str, file: &str| format!("--{flag}={}", self.path(file).display());
        EtcdServer::start_with(
            EtcdOptions::new()
                .https()
                .arg(arg("cert-file", "server.pem"))
                .arg(arg("key-file", "server-key.pem"))
                .arg(arg("trusted-ca-file", "ca.pem"))
                .arg("--client-cert-auth"),
        )
    }
}

fn connect_options(endpoint: &str, tls: TlsFiles) -> ConnectOptions {
    ConnectOptions::new([endpoint])
        .with_tls(tls)
        .with_startup_timeout(Duration::from_secs(3))
}

async fn raw_writer(pki: &Pki, endpoint: &str) -> etcd_client::Client {
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem")))
        .identity(etcd_client::Identity::from_pem(
            read("client.pem"),
            read("client-key.pem"),
        ));
    let options = etcd_client::ConnectOptions::new().with_tls(tls);
    etcd_client::Client::connect([endpoint], Some(options))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_reach_a_tls_etcd() {
    init_logs();
    let pki = Pki::new();
    let server = pki.server();
    let endpoint = server.endpoint();
    assert!(endpoint.starts_with("https://"));
    let mut writer = raw_writer(&pki, &endpoint).await;
    put(&mut writer, "/tls/port", "443").await;

    let tls = TlsFiles::new()
        .with_ca(pki.path("ca.pem"))
        .with_identity(pki.path("client.pem"), pki.path("client-key.pem"));
    let client = shylock::Client::connect(connect_options(&endpoint, tls))
        .await
        .unwrap();
    let live = client
        .config::<App>("/tls")
        .await
        .expect("TLS with a client certificate");
    assert_eq!(live.load().port, 443);
    put(&mut writer, "/tls/port", "8443").await;
    wait_config(&live, "update over TLS", |a| a.port == 8443).await;

    // Without a client certificate, etcd refuses: a clear error, in time.
    let no_cert = TlsFiles::new().with_ca(pki.path("ca.pem"));
    let client = shylock::Client::connect(connect_options(&endpoint, no_cert))
        .await
        .unwrap();
    let error = client
        .config::<App>("/tls")
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains(&endpoint), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_certificate_file_is_named() {
    let missing: &Path = Path::new("/nonexistent/shylock/ca.pem");
    let error = shylock::Client::connect(connect_options(
        "https://127.0.0.1:1",
        TlsFiles::new().with_ca(missing),
    ))
    .await
    .err()
    .expect("no such file")
    .to_string();
    assert!(error.contains("/nonexistent/shylock/ca.pem"), "{error}");
    assert!(error.contains("CA certificate"), "{error}");

    let vars = [
        ("ETCDCTL_ENDPOINTS", "https://127.0.0.1:1"),
        ("ETCDCTL_CERT", "/nonexistent/c.pem"),
        ("ETCDCTL_KEY", "/nonexistent/k.pem"),
    ];
    let options = ConnectOptions::from_vars(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let error = shylock::Client::connect(options)
        .await
        .err()
        .expect("no such file")
        .to_string();
    assert!(error.contains("/nonexistent/c.pem"), "{error}");
}

/// Regression: a CA file that was not PEM was accepted until the first
/// request failed with an obscure TLS error.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_pem_is_refused_at_start_naming_it() {
    let pki = Pki::new();
    let not_pem = pki.path("not-a-certificate.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let connect =
        |tls: TlsFiles| shylock::Client::connect(connect_options("https://127.0.0.1:1", tls));
    let error = connect(TlsFiles::new().with_ca(&not_pem))
        .await
        .err()
        .expect("refused at once")
        .to_string();
    assert!(
        error.contains("not-a-certificate.pem") && error.contains("CA certificate"),
        "{error}"
    );
    assert!(error.contains("no PEM certificate"), "{error}");

    // A certificate given as the key, or a key as the certificate.
    let swapped = TlsFiles::new().with_identity(pki.path("client-key.pem"), pki.path("client.pem"));
    let error = connect(swapped)
        .await
        .err()
        .expect("refused at once")
        .to_string();
    assert!(
        error.contains("client-key.pem") && error.contains("client certificate"),
        "{error}"
    );
}
