//! `zygote`: microVM sandboxes whose core primitive is fork.
//!
//! Every command but `daemon` and `image build` is a thin client of the daemon's
//! REST API. Data goes to stdout, logs to stderr; `--json` prints one JSON
//! document for scripts.

mod bundle_cmd;
mod connect;
mod daemon_config;
mod doctor;
mod env;
mod help;
mod image_cmd;
mod net_cmd;
mod output;
mod proc_cmd;
mod registry_args;
mod sandbox_cmd;
mod snapshot_cmd;
mod volume_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// zygote: boot a warm Linux microVM once, then fork it in milliseconds.
#[derive(Parser, Debug)]
#[command(
    name = "zygote",
    version,
    about = "Boot a warm Linux microVM once, then fork it in milliseconds.",
    long_about = help::long_about(),
    after_long_help = help::after_long_help(),
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How to reach the daemon.
#[derive(Args, Debug, Clone)]
pub(crate) struct Conn {
    /// Unix socket of the daemon.
    #[arg(long, env = env::SOCKET)]
    socket: Option<PathBuf>,
    /// Base URL of a daemon on TCP: http:// or https:// (token from ZYGOTE_TOKEN).
    #[arg(long, env = env::URL, conflicts_with = "socket")]
    url: Option<String>,
    /// PEM CA certificate(s) an https:// daemon's certificate must chain to
    /// (default: the system's roots).
    #[arg(long, env = env::CA, requires = "url")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground (as root).
    #[command(long_about = help::DAEMON)]
    Daemon(Box<DaemonArgs>),
    /// Build and list guest images.
    #[command(subcommand, long_about = help::IMAGE)]
    Image(image_cmd::ImageCmd),
    /// Create a sandbox, run a command in it with output streamed, remove it.
    #[command(long_about = help::RUN)]
    Run(sandbox_cmd::RunArgs),
    /// Create a sandbox and print its id.
    #[command(long_about = help::CREATE)]
    Create(sandbox_cmd::CreateArgs),
    /// Run a command in a sandbox; exits with the command's code.
    #[command(long_about = help::EXEC)]
    Exec(sandbox_cmd::ExecArgs),
    /// Evaluate Python in a sandbox's warm interpreter.
    #[command(long_about = help::EVAL)]
    Eval(sandbox_cmd::EvalArgs),
    /// List a sandbox's background processes.
    #[command(long_about = help::PS)]
    Ps(proc_cmd::PsArgs),
    /// Signal a background process (SIGKILL by default).
    #[command(long_about = help::KILL)]
    Kill(proc_cmd::KillArgs),
    /// Follow a background process's output (and forward input to it).
    #[command(long_about = help::ATTACH)]
    Attach(proc_cmd::AttachArgs),
    /// An interactive shell in a sandbox on this terminal.
    #[command(long_about = help::SHELL)]
    Shell(proc_cmd::ShellArgs),
    /// Pause a sandbox: store it, stop its VM, free its memory.
    #[command(long_about = help::PAUSE)]
    Pause(proc_cmd::IdArgs),
    /// Resume a paused sandbox under its id.
    #[command(long_about = help::RESUME)]
    Resume(proc_cmd::IdArgs),
    /// Give a sandbox a new lifetime, from now.
    #[command(long_about = help::TIMEOUT)]
    Timeout(proc_cmd::TimeoutArgs),
    /// Change a running sandbox's egress policy.
    #[command(long_about = help::NETWORK)]
    Network(net_cmd::NetworkArgs),
    /// Expose a guest TCP port on the host; prints the address that reaches it.
    #[command(long_about = help::PORT)]
    Port(net_cmd::PortArgs),
    /// Copy a file into or out of a sandbox (`ID:/path` on exactly one side).
    #[command(long_about = help::CP)]
    Cp(sandbox_cmd::CpArgs),
    /// List sandboxes.
    #[command(long_about = help::LS)]
    Ls(sandbox_cmd::LsArgs),
    /// Remove sandboxes.
    #[command(long_about = help::RM)]
    Rm(sandbox_cmd::RmArgs),
    /// Snapshots: create, list, inspect, remove.
    #[command(subcommand, long_about = help::SNAPSHOT)]
    Snapshot(snapshot_cmd::SnapshotCmd),
    /// Named volumes: create, list, remove.
    #[command(subcommand, long_about = help::VOLUME)]
    Volume(volume_cmd::VolumeCmd),
    /// Branch a running sandbox into a snapshot (the sandbox keeps running).
    #[command(long_about = help::BRANCH)]
    Branch(snapshot_cmd::BranchArgs),
    /// Start children of a snapshot.
    #[command(long_about = help::SPAWN)]
    Spawn(snapshot_cmd::ForkArgs),
    /// Start children from a snapshot tag, or from a sandbox id (branched first).
    #[command(long_about = help::FORK)]
    Fork(snapshot_cmd::ForkArgs),
    /// Check this host and the daemon: what works, what is missing, how to fix it.
    #[command(long_about = help::DOCTOR)]
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(long_about = help::COMPLETIONS)]
    Completions(help::CompletionsArgs),
    /// Print the manual page (roff) for `man -l -`.
    #[command(long_about = help::MAN)]
    Man,
    /// Benchmarks (not tests): tables of p50/p99/max, CSV and PNG charts.
    #[command(subcommand, long_about = zygote_bench::HELP)]
    Bench(zygote_bench::BenchCmd<Conn>),
}

#[derive(Args, Debug)]
#[command(after_long_help = DAEMON_HELP)]
struct DaemonArgs {
    /// Unix socket to serve on (no token: access is the socket's mode, 0600).
    #[arg(long, env = env::SOCKET, default_value = env::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Also serve on TCP at ADDR:PORT (a bearer token is required, loopback
    /// too; off loopback TLS is too, unless --insecure-http).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Allow plain HTTP (no TLS) on a --listen address off loopback: the token
    /// and every request then cross the network in clear (also for --e2b-listen).
    #[arg(long)]
    insecure_http: bool,
    /// Serve E2B's API at ADDR:PORT, so E2B's own SDKs run unmodified with
    /// E2B_API_URL and E2B_SANDBOX_URL set to http://ADDR:PORT (see docs/e2b.md).
    #[arg(long, requires = "e2b_api_keys", value_name = "ADDR:PORT")]
    e2b_listen: Option<SocketAddr>,
    /// The API keys the E2B listener accepts: one a line (`e2b_` and 40 hex
    /// digits suit every SDK version), as E2B_API_KEY.
    #[arg(long, requires = "e2b_listen", value_name = "FILE")]
    e2b_api_keys: Option<PathBuf>,
    /// A cgroup per QEMU capping its memory (guest RAM plus
    /// --cgroup-overhead-mib), CPU (its vCPUs plus one) and tasks: `on`
    /// (warns and runs without where the host has no usable cgroups) or `off`.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    cgroups: String,
    /// QEMU's own memory allowed in its cgroup on top of guest RAM, in MiB
    /// [default: 256, plus 1024 for the translation buffer under TCG].
    #[arg(long, value_name = "MIB")]
    cgroup_overhead_mib: Option<u64>,
    /// Most connections each listener keeps open at once; past it, new ones
    /// wait in the kernel's backlog until one closes.
    #[arg(long, default_value_t = zygote_daemon::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds a client may take to send a request's head before its
    /// connection is closed (slow clients cannot hold connections open).
    #[arg(long, default_value_t = zygote_daemon::DEFAULT_HEADER_TIMEOUT.as_secs())]
    header_timeout_secs: u64,
    /// Home directory (state, images, sandboxes).
    #[arg(long, env = env::HOME, default_value = env::DEFAULT_HOME)]
    home: PathBuf,
    /// File holding the bearer token for TCP (first line; at least 16 characters,
    /// not a placeholder such as `changeme`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve TCP over TLS with this PEM certificate chain (needs --listen and --tls-key).
    #[arg(long, requires_all = ["tls_key", "listen"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Audit log: one JSON line per API call, reopened on SIGHUP [default: <home>/audit.log].
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Accelerator: auto, kvm or tcg.
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Seconds a boot may take before it fails with the console's tail.
    #[arg(long, default_value_t = 60)]
    boot_timeout: u64,
    /// Pre-started copy-on-write children kept per hot snapshot (0 disables):
    /// paused QEMUs with the snapshot loaded, so a spawn only resumes them.
    #[arg(long, default_value_t = zygote_engine::DEFAULT_PRESTART)]
    prestart: usize,
    /// Most pre-started children kept over all snapshots.
    #[arg(long, default_value_t = zygote_engine::DEFAULT_PRESTART_MAX)]
    prestart_max: usize,
    /// On SIGTERM leave sandboxes running for the next daemon, as SIGUSR2
    /// does (for a service manager that only sends SIGTERM).
    #[arg(long)]
    keep_sandboxes: bool,
    /// Host directories under this one may be attached to sandboxes as
    /// read-only volumes (`--volume /host/dir:/guest/dir:ro`); without it none may.
    #[arg(long)]
    volume_host_root: Option<PathBuf>,
    /// Sandbox networking: `nat` (a namespace per sandbox, NAT out of the
    /// host's default route, internet on by default) or `none` (no network
    /// cards).
    #[arg(long, default_value = "nat", value_parser = ["nat", "none"])]
    network: String,
    /// Host-side addresses for sandboxes under --network nat (a /30 each).
    #[arg(long, default_value = "10.200.0.0/16")]
    network_pool: String,
    /// Most sandboxes with a VM at once; past it a create, spawn or resume
    /// gets a 429 naming the limit.
    #[arg(long)]
    max_sandboxes: Option<usize>,
    /// Most guest RAM of those sandboxes together, MiB.
    #[arg(long)]
    max_guest_memory_mib: Option<u64>,
    /// Most snapshots kept (paused sandboxes' own not counted).
    #[arg(long)]
    max_snapshots: Option<usize>,
    /// Most disk every snapshot takes together, in GiB (fractions allowed):
    /// a branch or snapshot that could pass it is refused (429).
    #[arg(long, value_name = "GIB", value_parser = positive_gib)]
    max_snapshot_gib: Option<f64>,
    /// Free space kept on the home's file system, in GiB: a start or
    /// snapshot beginning below it is refused (507).
    #[arg(long, value_name = "GIB", value_parser = positive_gib)]
    min_free_disk_gib: Option<f64>,
    /// Seconds a blocking exec that names no timeout may run before it is
    /// killed and answered `timed_out` (0: none) [default: 3600].
    #[arg(long, value_name = "SECS")]
    exec_timeout_secs: Option<u64>,
    /// A TOML file with the quotas above under `[limits]` (max_sandboxes,
    /// max_guest_memory_mib, max_snapshots, max_snapshot_gib,
    /// min_free_disk_gib, exec_timeout_secs); flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn positive_gib(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a size in GiB: pass a number such as 2 or 0.5"
        )),
    }
}

const DAEMON_HELP: &str = "\
Observability:
  GET /metrics      Prometheus text format (sandboxes by state, boot/spawn/branch/pause
                    histograms, memory bytes by kind, requests and errors by route);
                    behind the bearer token on TCP like every route.
  --audit-log PATH  One JSON line per call: time, caller (unix uid/pid or ip:port, and
                    whether a token was presented; never the token), method, path,
                    status, latency_ms, sandbox id. `kill -HUP <pid>` reopens the file
                    after a rotation renamed it.
TLS:
  --listen 0.0.0.0:8443 --token-file /etc/zygote/token --tls-cert cert.pem --tls-key key.pem
  serves https:// on TCP (rustls; TLS 1.2 and 1.3); plain http:// to that port gets a 400.
Signals: SIGTERM/SIGINT stop every sandbox and exit; SIGUSR2 (or SIGTERM with
  --keep-sandboxes) exits for an upgrade: sandboxes run on and the next daemon on the
  same home re-adopts them (memory, QMP, agent link, state); SIGHUP reopens the audit
  log. After a crash the next daemon re-adopts what still runs the same way.";

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let daemon = matches!(cli.cmd, Cmd::Daemon(_));
    let r = rt.block_on(dispatch(cli.cmd));
    if !daemon {
        // A blocking read of the terminal (attach, shell) must not hold the
        // exit. (The daemon waits for its blocking work, e.g. a snapshot being
        // written, as the runtime's drop does.)
        rt.shutdown_timeout(std::time::Duration::from_millis(200));
    }
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<u8> {
    match cmd {
        Cmd::Daemon(a) => daemon(*a).await.map(|_| 0),
        Cmd::Image(c) => image_cmd::run(c).await,
        Cmd::Run(a) => sandbox_cmd::run(a).await,
        Cmd::Create(a) => sandbox_cmd::create(a).await,
        Cmd::Exec(a) => sandbox_cmd::exec(a).await,
        Cmd::Eval(a) => sandbox_cmd::eval(a).await,
        Cmd::Cp(a) => sandbox_cmd::cp(a).await,
        Cmd::Ls(a) => sandbox_cmd::ls(a).await,
        Cmd::Rm(a) => sandbox_cmd::rm(a).await,
        Cmd::Bench(c) => zygote_bench::run(c).await,
        Cmd::Snapshot(c) => snapshot_cmd::snapshot(c).await,
        Cmd::Branch(a) => snapshot_cmd::branch(a).await,
        Cmd::Volume(c) => volume_cmd::volume(c).await,
        Cmd::Spawn(a) => snapshot_cmd::spawn(a).await,
        Cmd::Ps(a) => proc_cmd::ps(a).await,
        Cmd::Kill(a) => proc_cmd::kill(a).await,
        Cmd::Attach(a) => proc_cmd::attach(a).await,
        Cmd::Shell(a) => proc_cmd::shell(a).await,
        Cmd::Pause(a) => proc_cmd::pause(a).await,
        Cmd::Resume(a) => proc_cmd::resume(a).await,
        Cmd::Timeout(a) => proc_cmd::timeout(a).await,
        Cmd::Network(a) => net_cmd::network(a).await,
        Cmd::Port(a) => net_cmd::port(a).await,
        Cmd::Fork(a) => snapshot_cmd::fork(a).await,
        Cmd::Doctor(a) => doctor::run(a).await,
        Cmd::Completions(a) => help::completions(a),
        Cmd::Man => help::man(),
    }
}

async fn daemon(a: DaemonArgs) -> Result<()> {
    let accel = match a.accel.as_str() {
        "auto" => None,
        other => Some(
            other
                .parse::<zygote_qemu::Accel>()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
    };
    let token = match &a.token_file {
        Some(p) => Some(zygote_daemon::load_token(p)?),
        None => None,
    };
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(zygote_daemon::TlsFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together: pass both PEM files"),
    };
    let audit_log = a.audit_log.unwrap_or_else(|| a.home.join("audit.log"));
    let e2b = match (a.e2b_listen, &a.e2b_api_keys) {
        (Some(addr), Some(keys)) => Some(zygote_daemon::E2bListen {
            addr,
            keys: zygote_daemon::load_api_keys(keys)?,
        }),
        _ => None,
    };
    let mut engine = zygote_engine::EngineConfig::new(a.home.clone());
    engine.accel = accel;
    engine.boot_timeout = std::time::Duration::from_secs(a.boot_timeout);
    engine.prestart = a.prestart;
    engine.prestart_max = a.prestart_max;
    engine.volume_host_root = a.volume_host_root;
    engine.cgroups = a.cgroups == "on";
    engine.cgroup_overhead_mib = a.cgroup_overhead_mib;
    let file = match &a.config {
        Some(p) => daemon_config::load(p)?,
        None => daemon_config::LimitsFile::default(),
    };
    let flags = daemon_config::LimitsFile {
        max_sandboxes: a.max_sandboxes,
        max_guest_memory_mib: a.max_guest_memory_mib,
        max_snapshots: a.max_snapshots,
        max_snapshot_gib: a.max_snapshot_gib,
        min_free_disk_gib: a.min_free_disk_gib,
        exec_timeout_secs: a.exec_timeout_secs,
    };
    engine.limits = daemon_config::limits(&flags, &file);
    engine.network = match a.network.as_str() {
        "none" => zygote_engine::NetworkMode::None,
        _ => zygote_engine::NetworkMode::Nat {
            pool: zygote_engine::Cidr::parse(&a.network_pool)
                .map_err(|e| anyhow::anyhow!("--network-pool: {e}"))?,
        },
    };
    zygote_daemon::run(zygote_daemon::DaemonConfig {
        socket: a.socket,
        listen: a.listen,
        token,
        tls,
        audit_log,
        engine,
        keep_sandboxes: a.keep_sandboxes,
        insecure_http: a.insecure_http,
        e2b,
        conn_limits: zygote_daemon::ConnLimits {
            max_connections: a.max_connections,
            header_timeout: std::time::Duration::from_secs(a.header_timeout_secs.max(1)),
        },
    })
    .await
    .context("the daemon stopped with an error")
}
