//! End-to-end: the client crate and the CLI reach a daemon's TLS listener
//! (`https://`), trusting a private CA named by file (`ZYGOTE_CA`); a
//! certificate from another CA, or the system roots for a private CA, fail the
//! handshake with an error that says how to fix it.

use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use zygote_client::{Client, Endpoint};
use zygote_proto::api::ExecBody;
use zygote_tests::*;

const TOKEN: &str = "https-Token-For-Tests-0123456789abcdef";

/// A CA (certificate PEM) and a server certificate and key it signed for
/// localhost and 127.0.0.1.
fn private_ca() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "zygote test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn client_and_cli_over_https_with_a_private_ca() {
    if !require_e2e() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = private_ca();
    let p = |n: &str| tmp.path().join(n);
    std::fs::write(p("ca.pem"), &ca_pem).unwrap();
    std::fs::write(p("cert.pem"), &cert_pem).unwrap();
    std::fs::write(p("key.pem"), &key_pem).unwrap();
    std::fs::write(p("token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let d = Daemon::start_with(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--token-file",
        p("token").to_str().unwrap(),
        "--tls-cert",
        p("cert.pem").to_str().unwrap(),
        "--tls-key",
        p("key.pem").to_str().unwrap(),
        "--prestart",
        "0",
    ])
    .await;

    // The client crate: a sandbox made, used (a streamed exec, a file both
    // ways) and removed over TLS.
    let ep = Endpoint::from_url(&url, Some(TOKEN.into()), Some(&p("ca.pem"))).unwrap();
    assert_eq!(ep.to_string(), url);
    let c = Client::new(ep);
    let sb = c.create(&Default::default()).await.unwrap();
    let r = c
        .exec(
            &sb.id,
            &ExecBody {
                cmd: Some("echo over-tls; hostname".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.stdout.starts_with("over-tls\n"), "{r:?}");
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    c.upload(&sb.id, "/tmp/blob", blob.clone()).await.unwrap();
    assert_eq!(c.download(&sb.id, "/tmp/blob").await.unwrap(), blob);

    // The CLI, with ZYGOTE_URL and ZYGOTE_CA.
    let cli = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(zygote_bin());
        cmd.args(args)
            .env_remove("ZYGOTE_SOCKET")
            .env("ZYGOTE_URL", &url)
            .env("ZYGOTE_TOKEN", TOKEN);
        match ca {
            Some(ca) => cmd.env("ZYGOTE_CA", ca),
            None => cmd.env_remove("ZYGOTE_CA"),
        };
        cmd.output().unwrap()
    };
    let o = cli(
        &["exec", &sb.id, "--", "cat", "/etc/hostname"],
        Some(&p("ca.pem")),
    );
    assert!(o.status.success(), "{o:?}");
    assert!(!o.stdout.is_empty(), "{o:?}");
    let o = cli(&["ls"], Some(&p("ca.pem")));
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&sb.id), "{o:?}");

    // Another CA's certificate is refused, with the way out named.
    let (other_ca, _, _) = private_ca();
    std::fs::write(p("other.pem"), other_ca).unwrap();
    let o = cli(&["ls"], Some(&p("other.pem")));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("TLS handshake") && err.contains("ZYGOTE_CA"),
        "{err}"
    );
    // The system roots do not know a private CA.
    let o = cli(&["ls"], None);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("TLS handshake"),
        "{o:?}"
    );
    // A CA with plain http:// is a mistake, said so.
    let e = Endpoint::from_url(
        &format!("http://127.0.0.1:{port}"),
        None,
        Some(&p("ca.pem")),
    )
    .unwrap_err();
    assert!(e.to_string().contains("plain http://"), "{e}");

    c.remove(&sb.id).await.unwrap();
    assert!(c.list().await.unwrap().is_empty());
    drop(d);
}
