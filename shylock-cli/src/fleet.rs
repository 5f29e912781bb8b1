//! What `status` and `wait` share: the instance reports on a prefix
//! (shylock::report), and the revision of the prefix's newest change.

use shylock::report::{report_range, Document};

use crate::exit::Error;

/// Where reports are read from.
#[derive(Clone, Debug, clap::Args)]
pub struct FleetArgs {
    /// The config prefix the instances follow.
    pub prefix: String,

    /// Where instances write their reports (their --report-root).
    #[arg(long, default_value = shylock::report::DEFAULT_ROOT, value_name = "ROOT")]
    pub report_root: String,

    /// Only instances with this label, as KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

/// The reports, and the revision of the prefix's newest change.
pub struct Fleet {
    pub reports: Vec<Document>,
    pub latest: i64,
}

impl FleetArgs {
    /// Reads every report on the prefix (those with all the labels), and
    /// the newest change of the prefix, at one revision.
    pub async fn read(&self, client: &shylock::Client) -> Result<Fleet, Error> {
        let labels = self
            .labels
            .iter()
            .map(|l| crate::reporting::parse_label(l))
            .collect::<Result<Vec<_>, _>>()?;
        let base = self.prefix.trim_end_matches('/').to_owned();
        let range = report_range(&self.report_root, &self.prefix);
        let newest = || {
            etcd_client::GetOptions::new()
                .with_keys_only()
                .with_sort(
                    etcd_client::SortTarget::Mod,
                    etcd_client::SortOrder::Descend,
                )
                .with_limit(1)
        };
        let txn = etcd_client::Txn::new().and_then([
            etcd_client::TxnOp::get(
                range.clone(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            ),
            etcd_client::TxnOp::get(format!("{base}/"), Some(newest().with_prefix())),
            etcd_client::TxnOp::get(if base.is_empty() { "/" } else { &base }, Some(newest())),
        ]);
        let response = client
            .request(&format!("read the reports under {range}"), |mut etcd| {
                let txn = txn.clone();
                async move { etcd.txn(txn).await }
            })
            .await?;
        let mut reports = Vec::new();
        let mut latest = 0;
        for (i, op) in response.op_responses().into_iter().enumerate() {
            let etcd_client::TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                if i > 0 {
                    latest = latest.max(kv.mod_revision());
                    continue;
                }
                match serde_json::from_slice::<Document>(kv.value()) {
                    Ok(report)
                        if labels.iter().all(|(k, v)| {
                            report.labels.get(*k).map(String::as_str) == Some(*v)
                        }) =>
                    {
                        reports.push(report)
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        %error,
                        "not a shylock report; skipped"
                    ),
                }
            }
        }
        Ok(Fleet { reports, latest })
    }
}
