//! `zygote doctor`: checks this host (and the daemon) against what zygote needs,
//! each check `pass`, `warn`, `fail` or `skip` with a hint saying what to do.
//! Exits 1 when any check fails; warnings are things zygote works without
//! (hardware virtualisation, hugepages, KSM, ...).
//!
//! `host` has the platform, accelerator, QEMU, image and disk checks; `kernel`
//! the kernel features (hugepages, memfd, pagemap, userfaultfd, cgroups, tun,
//! namespaces, KSM); `daemon` the daemon and its token. This module only runs
//! them in order and prints the report; it never changes the host.

mod daemon;
mod host;
mod kernel;
mod network;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::output::{Align, Table};
use crate::{env, Conn};

/// The check names, in report order (also the JSON `name`s).
pub(crate) const CHECKS: &[&str] = &[
    "platform",
    "hardware_virtualisation",
    "accelerator",
    "qemu",
    "qemu_img",
    "guest_kernel",
    "image",
    "home_space",
    "hugepages",
    "memfd",
    "memfd_hugetlb",
    "pagemap",
    "process_vm_readv",
    "userfaultfd",
    "cgroups",
    "dev_net_tun",
    "net_namespaces",
    "ksm",
    "net_tools",
    "ip_forward",
    "net_dns",
    "daemon",
    "token",
];

#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    conn: Conn,
    /// Home directory to check (images, free space).
    #[arg(long, env = env::HOME, default_value = env::DEFAULT_HOME)]
    home: PathBuf,
    /// Image whose presence is checked.
    #[arg(long, default_value = zygote_engine::DEFAULT_IMAGE)]
    image: String,
    /// Accelerator the daemon would be started with: auto, kvm or tcg.
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Print one JSON document: {ok, summary, checks: [{name, status, detail, hint}]}.
    #[arg(long)]
    json: bool,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    /// What was found.
    pub(crate) detail: String,
    /// What to do about it (warn/fail, sometimes skip).
    pub(crate) hint: Option<String>,
}

impl Check {
    pub(crate) fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
            hint: None,
        }
    }
    pub(crate) fn warn(
        name: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
    pub(crate) fn fail(
        name: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
    pub(crate) fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Skip,
            detail: detail.into(),
            hint: None,
        }
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    pass: usize,
    warn: usize,
    fail: usize,
    skip: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    /// No check failed.
    ok: bool,
    summary: Summary,
    checks: Vec<Check>,
}

/// Runs every check (blocking ones off the async runtime) and prints the report.
pub(crate) async fn run(a: DoctorArgs) -> Result<u8> {
    let (home, image, accel) = (a.home.clone(), a.image.clone(), a.accel.clone());
    let mut checks = tokio::task::spawn_blocking(move || {
        let mut v = host::checks(&home, &image, &accel);
        v.extend(kernel::checks());
        v.extend(network::checks());
        v
    })
    .await?;
    checks.extend(daemon::checks(&a.conn).await);
    debug_assert_eq!(
        checks.iter().map(|c| c.name).collect::<Vec<_>>(),
        CHECKS.to_vec()
    );
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let summary = Summary {
        pass: count(Status::Pass),
        warn: count(Status::Warn),
        fail: count(Status::Fail),
        skip: count(Status::Skip),
    };
    let report = Report {
        ok: summary.fail == 0,
        summary,
        checks,
    };
    if a.json {
        crate::output::print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.ok { 0 } else { 1 })
}

fn render(r: &Report) -> String {
    let mut t = Table::new(&[
        ("CHECK", Align::Left),
        ("STATUS", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for c in &r.checks {
        t.row(vec![
            c.name.into(),
            c.status.as_str().into(),
            c.detail.clone(),
        ]);
        if let Some(h) = &c.hint {
            t.row(vec![String::new(), String::new(), format!("hint: {h}")]);
        }
    }
    format!(
        "{}\n{} pass, {} warn, {} fail, {} skip\n",
        t.render(),
        r.summary.pass,
        r.summary.warn,
        r.summary.fail,
        r.summary.skip
    )
}
