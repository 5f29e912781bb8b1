//! What the library logs. Regression: a config that stayed invalid logged
//! one WARN with its whole problem list per update (94 MB of stderr in 30 s
//! under a stream of updates); identical rejections are now logged at most
//! every 30 s, with a count.

use std::io::Write;
use std::sync::{Arc, Mutex};

use shylock::EtcdConfig;
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct Conf {
    port: u16,
    #[etcd(default)]
    other: u32,
}

/// Log output gathered in memory for the whole test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_stays_invalid_is_not_logged_on_every_update() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();
    let p = unique_prefix("logs");
    let server = shared_server();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{p}/port"), "80").await;
    let client = client(&[server.endpoint()]).await;
    let live = client.config::<Conf>(&p).await.unwrap();

    put(&mut etcd, &format!("{p}/port"), "not a number").await;
    let mut last = 0;
    for i in 0..200 {
        last = put(&mut etcd, &format!("{p}/other"), i.to_string()).await;
    }
    applied(&live, last).await;
    let rejected = live.status().rejected_updates;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings = text.matches("rejected a config update").count();
    assert!(rejected >= 10, "the updates were rejected: {rejected}");
    assert_eq!(
        warnings, 1,
        "one warning for {rejected} identical rejections:\n{text}"
    );

    // Another problem is logged at once.
    let r = put(&mut etcd, &format!("{p}/other"), "-1").await;
    applied(&live, r).await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("rejected a config update").count(),
        2,
        "{text}"
    );
    // One watch response can carry several puts: at least some were counted.
    let counted: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.rsplit("repeated=").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(counted >= 10, "the identical ones are counted: {text}");
    assert_eq!(live.load().port, 80, "the last good config serves");
}
