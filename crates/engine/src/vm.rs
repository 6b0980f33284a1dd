//! Starting VMs. Every way a sandbox's QEMU starts ends in one value that owns
//! everything the VM holds: [`Vm`] (QEMU process, QMP connection, guest memory,
//! disk, runtime directory) and, once the guest agent answered, [`Running`]
//! (plus the agent link). A sandbox is registered with a `Running` whole; until
//! then dropping the value kills QEMU and removes its directory, so a start that
//! fails half-way leaves nothing behind.
//!
//! - boot: [`Engine::boot_vm`] (a kernel boot on a fresh memfd and overlay);
//! - a previous daemon's QEMU: [`Engine::adopt_vm`] (its process by pidfd, its
//!   guest RAM memfd taken back with `pidfd_getfd`, QMP and the agent link
//!   reconnected);
//! - children of a snapshot: [`Engine::load_child`] (QEMU with `-incoming defer
//!   -S` over copy-on-write or private memory, the RAM-less vmstate loaded,
//!   paused; the pool keeps these) then [`Engine::resume_child`] (the handshake
//!   and `Resumed` queued, `cont`, the clock corrected).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde_json::json;
use tracing::{debug, info, warn};
use zygote_mem::{CopyOptions, Region};
use zygote_proto::agent::Msg;
use zygote_qemu::{QemuProcess, Qmp};

use crate::agent_link::{AgentLink, LinkError};
use crate::branch::wait_migration;
use crate::error::{EngineError, Result};
use crate::lifecycle::console_tail;
use crate::machine::{vm_config, Attached, Machine, PageSize, Start};
use crate::model::ChildMemory;
use crate::rundir::RuntimeDir;
use crate::sandbox::{DiskState, SandboxMemory};
use crate::snapshot::Snapshot;
use crate::volumes::VolumeLease;
use crate::Engine;

/// Bytes of fresh entropy each child gets.
const ENTROPY_BYTES: usize = 64;

/// A started QEMU and what it owns. Field order is drop order: QEMU is killed
/// before its directory goes.
pub(crate) struct Vm {
    pub(crate) id: String,
    pub(crate) process: QemuProcess,
    /// Its cgroup (removed once QEMU is gone).
    pub(crate) cgroup: Option<crate::cgroup::Cgroup>,
    /// Its network namespace (QEMU runs inside; removed after QEMU is killed).
    pub(crate) net: Option<Arc<zygote_net::SandboxNet>>,
    pub(crate) qmp: Arc<Qmp>,
    pub(crate) memory: SandboxMemory,
    pub(crate) disk: DiskState,
    pub(crate) machine: Machine,
    /// Its volumes (let go if the start fails).
    pub(crate) volumes: VolumeLease,
    pub(crate) dir: RuntimeDir,
}

/// A VM whose guest agent answered.
pub(crate) struct Running {
    pub(crate) vm: Vm,
    pub(crate) link: AgentLink,
    /// Milliseconds from the start (or the spawn request) to the agent's answer.
    pub(crate) ready_ms: f64,
}

impl Vm {
    /// A boot error carrying the console's tail.
    fn boot_error(&self, e: LinkError, timeout: Duration) -> EngineError {
        let timed_out = matches!(e, LinkError::HandshakeTimeout(_));
        EngineError::Boot {
            reason: if timed_out {
                format!("the guest agent did not answer within {timeout:?} (raise the boot timeout on slow hosts)")
            } else {
                e.to_string()
            },
            console_tail: console_tail(&self.dir.console_log()),
            timed_out,
        }
    }

    /// Wait for an agent handshake `fut`, failing early (with the console's
    /// tail) if QEMU dies first.
    async fn agent_or_death<F>(&mut self, fut: F, timeout: Duration) -> Result<AgentLink>
    where
        F: std::future::Future<Output = std::result::Result<AgentLink, LinkError>>,
    {
        let r = tokio::select! {
            r = fut => r,
            exit = self.process.wait() => Err(LinkError::Closed(match exit {
                Ok(x) => format!("QEMU exited ({x})"),
                Err(e) => format!("QEMU could not be waited for: {e}"),
            })),
        };
        r.map_err(|e| self.boot_error(e, timeout))
    }
}

/// Start QEMU and connect its QMP socket, failing with QEMU's own words if it
/// exits first.
async fn start_qemu(
    engine: &Engine,
    cfg: &zygote_qemu::VmConfig,
) -> Result<(QemuProcess, Option<crate::cgroup::Cgroup>, Qmp)> {
    let mut cgroup = engine.qemu_cgroup(&cfg.name, cfg.memory_mib, cfg.vcpus)?;
    let join = cgroup.as_ref().map(|c| c.join_fds()).unwrap_or_default();
    let mut process = QemuProcess::spawn(&engine.qemu, cfg, &join)?;
    if let Some(c) = &mut cgroup {
        c.joined();
    }
    let timeout = engine.cfg.boot_timeout;
    let qmp = tokio::select! {
        q = Qmp::connect(&cfg.qmp_socket, timeout) => q,
        exit = process.wait() => Err(match exit {
            Ok(x) => process.exited_error(x),
            Err(e) => e,
        }),
    }?;
    Ok((process, cgroup, qmp))
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Engine {
    /// A new runtime directory for sandbox `id`, with its transfer disk (boots
    /// and children carry the same devices, or a child cannot load its
    /// parent's state).
    fn runtime_dir(&self, id: &str) -> Result<RuntimeDir> {
        let dir = RuntimeDir::create(&self.sandboxes_root(), id)?;
        crate::ops::xfer::prepare(dir.path())?;
        Ok(dir)
    }

    /// The machine this engine boots `image` as.
    pub(crate) fn machine_for(
        &self,
        image: &zygote_image::ImageInfo,
        memory_mib: u64,
        vcpus: u32,
        nic: bool,
    ) -> Machine {
        Machine {
            accel: self.accel.accel,
            cpu: crate::machine::Cpu::for_accel(self.accel.accel),
            memory_mib,
            vcpus,
            pages: PageSize::Small,
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            append: self.append.clone(),
            volume_slots: crate::volumes::SLOTS,
            nic,
        }
    }

    /// A new network namespace with `policy`, for a VM with a network card.
    pub(crate) async fn sandbox_net(
        &self,
        policy: zygote_net::Policy,
    ) -> Result<Arc<zygote_net::SandboxNet>> {
        let host = self.net.clone().ok_or_else(|| {
            EngineError::BadRequest(
                "this daemon runs with --network none: start it with --network nat to give sandboxes a network".into(),
            )
        })?;
        let net = tokio::task::spawn_blocking(move || host.create(policy))
            .await
            .map_err(|e| {
                EngineError::Conflict(format!("creating a network namespace failed: {e}"))
            })??;
        Ok(Arc::new(net))
    }

    /// Boot `machine` from `image` as sandbox `id` with `volumes` mounted, up
    /// to its agent answering.
    pub(crate) async fn boot_vm(
        &self,
        id: &str,
        machine: Machine,
        image: &zygote_image::ImageInfo,
        volumes: VolumeLease,
        policy: Option<zygote_net::Policy>,
    ) -> Result<Running> {
        let t0 = Instant::now();
        let net = match machine.nic {
            true => Some(self.sandbox_net(policy.unwrap_or_default()).await?),
            false => None,
        };
        let dir = self.runtime_dir(id)?;
        let memory = SandboxMemory::Own(Arc::new(Region::create(
            &format!("zygote-{id}"),
            machine.memory_bytes(),
            machine.pages.is_huge(),
        )?));
        let overlay = dir.overlay(1);
        zygote_qemu::create_overlay(&image.rootfs, "raw", &overlay).await?;
        let cfg = vm_config(
            &format!("zygote-{id}"),
            &machine,
            &dir,
            &memory,
            Attached {
                disk: &overlay,
                volumes: volumes.list(),
                net: net.as_deref(),
            },
            Start::Boot,
        );
        let (process, cgroup, qmp) = start_qemu(self, &cfg).await?;
        let mut vm = Vm {
            id: id.to_string(),
            process,
            cgroup,
            net,
            qmp: Arc::new(qmp),
            memory,
            disk: DiskState {
                top: overlay,
                chain: self.snapshots.hold(Vec::new()),
                virtual_size: image.rootfs_bytes,
                generation: 1,
            },
            machine,
            volumes,
            dir,
        };
        info!(pid = vm.process.pid(), "QEMU started");
        let timeout = self.cfg.boot_timeout;
        let socket = vm.dir.agent_socket();
        let agent = AgentLink::connect(&socket, timeout);
        let link = vm.agent_or_death(agent, timeout).await?;
        crate::volumes::mount_booted(&link, vm.volumes.list()).await?;
        let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
        info!(
            boot_ms = ready_ms as u64,
            agent = %link.hello().agent_version,
            "agent ready"
        );
        Ok(Running { vm, link, ready_ms })
    }

    /// Start a child's QEMU as `id` over the snapshot's memory with `volumes`
    /// in its slots and load its vmstate; the VM stays paused (the guest sees
    /// its volumes once told, see `volumes::mount`).
    pub(crate) async fn load_child(
        &self,
        id: &str,
        snap: &Arc<Snapshot>,
        snap_mem: Arc<Region>,
        memory: ChildMemory,
        volumes: VolumeLease,
        policy: Option<zygote_net::Policy>,
    ) -> Result<Vm> {
        let t = Instant::now();
        let m = &snap.meta;
        // Taken before anything uses them: a delete of the snapshot meanwhile
        // fails this child rather than pulling its disk or vmstate away.
        let claim = self.snapshots.claim(snap)?;
        let dir = self.runtime_dir(id)?;
        let overlay = dir.overlay(1);
        // A child has its snapshot's devices: a card if the parent had one,
        // in a namespace of its own (made while qemu-img makes the overlay),
        // with the snapshot's policy unless the caller gives one.
        let net = async {
            match m.machine.nic {
                true => {
                    let p = policy.or_else(|| m.network.clone()).unwrap_or_default();
                    self.sandbox_net(p).await.map(Some)
                }
                false => Ok(None),
            }
        };
        let (net, made) =
            tokio::join!(net, zygote_qemu::create_overlay(&m.disk, "qcow2", &overlay));
        let net = net?;
        made?;
        let disk = DiskState {
            top: overlay.clone(),
            chain: claim.chain,
            virtual_size: m.disk_bytes,
            generation: 1,
        };
        let (memory, pages) = match memory {
            ChildMemory::Private { hugepages } => {
                let name = format!("zygote-{id}");
                let src = snap_mem.clone();
                let own = tokio::task::spawn_blocking(move || -> Result<Region> {
                    let r = Region::create(&name, src.size(), hugepages)?;
                    r.copy_from(src.memfd(), &CopyOptions::default())?;
                    Ok(r)
                })
                .await
                .map_err(|e| {
                    EngineError::Conflict(format!("filling private memory failed: {e}"))
                })??;
                let pages = PageSize::of(own.kind());
                (SandboxMemory::Own(Arc::new(own)), pages)
            }
            ChildMemory::CopyOnWrite => {
                let pages = PageSize::of(snap_mem.kind());
                (SandboxMemory::Cow(snap_mem), pages)
            }
        };
        let machine = m.machine.with_pages(pages);
        let cfg = vm_config(
            &format!("zygote-{id}"),
            &machine,
            &dir,
            &memory,
            Attached {
                disk: &overlay,
                volumes: volumes.list(),
                net: net.as_deref(),
            },
            Start::Restore,
        );
        let prep_ms = t.elapsed().as_secs_f64() * 1e3;
        let (mut process, cgroup, qmp) = start_qemu(self, &cfg).await?;
        let qmp_ms = t.elapsed().as_secs_f64() * 1e3;
        let load = async {
            qmp.execute(
                "migrate-set-capabilities",
                json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
            )
            .await?;
            // The daemon's open file, so the load never depends on the path;
            // QEMU reads it itself (its seccomp filter forbids a shell).
            let uri = format!(
                "file:/proc/{}/fd/{}",
                std::process::id(),
                claim.vmstate.as_raw_fd()
            );
            qmp.execute("migrate-incoming", json!({ "uri": uri }))
                .await?;
            wait_migration(&qmp, Duration::from_secs(60)).await?;
            Ok::<_, EngineError>(())
        };
        if let Err(e) = load.await {
            // Say why QEMU went away if it did.
            if let Ok(Some(x)) = process.try_wait().await {
                return Err(process.exited_error(x).into());
            }
            return Err(e);
        }
        debug!(
            prep_ms,
            qmp_ms,
            loaded_ms = t.elapsed().as_secs_f64() * 1e3,
            "child loaded (paused)"
        );
        Ok(Vm {
            id: id.to_string(),
            process,
            cgroup,
            net,
            qmp: Arc::new(qmp),
            memory,
            disk,
            machine,
            volumes,
            dir,
        })
    }

    /// Resume a loaded child and tell its agent it was restored (fresh entropy,
    /// the host's clock, a new hostname and id). Returns the running VM and the
    /// milliseconds from `t0` to `cont`.
    pub(crate) async fn resume_child(&self, mut vm: Vm, t0: Instant) -> Result<(Running, f64)> {
        // The handshake and `Resumed` are queued before `cont`, so the guest
        // finds both waiting and answers them in one pass.
        let timeout = self.cfg.boot_timeout;
        let pending = AgentLink::begin(&vm.dir.agent_socket(), timeout)
            .await
            .map_err(|e| vm.boot_error(e, timeout))?;
        let mut entropy = vec![0u8; ENTROPY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut entropy);
        let hostname = format!("zygote-{}", &vm.id[..12.min(vm.id.len())]);
        let resumed = Msg::Resumed {
            sandbox_id: vm.id.clone(),
            hostname,
            unix_nanos: unix_nanos(),
            entropy_bytes: ENTROPY_BYTES as u32,
        };
        let mut req = pending
            .start(&resumed, &entropy)
            .await
            .map_err(|e| vm.boot_error(e, timeout))?;
        vm.qmp.execute("cont", json!(null)).await?;
        let running_ms = t0.elapsed().as_secs_f64() * 1e3;
        let link = vm.agent_or_death(pending.finish(), timeout).await?;
        let linked_ms = t0.elapsed().as_secs_f64() * 1e3;
        await_resumed(&mut req).await;
        drop(req);
        // The clock above was read before `cont` and reached the guest a cold
        // pass later (tens to hundreds of ms under TCG): set it again now that
        // the path is warm, before anyone is told the child is ready.
        set_clock(&link).await;
        let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
        info!(running_ms, linked_ms, ready_ms, "child running");
        Ok((Running { vm, link, ready_ms }, running_ms))
    }

    /// Wake a warm child the pool stopped (see `pool.rs`): `cont`, then set
    /// its clock, which stood still while it waited. Returns it and the
    /// milliseconds from `t0` to `cont`.
    pub(crate) async fn wake_child(
        &self,
        mut running: Running,
        t0: Instant,
    ) -> Result<(Running, f64)> {
        running.vm.qmp.execute("cont", json!(null)).await?;
        let running_ms = t0.elapsed().as_secs_f64() * 1e3;
        set_clock(&running.link).await;
        running.ready_ms = t0.elapsed().as_secs_f64() * 1e3;
        info!(
            running_ms,
            ready_ms = running.ready_ms,
            "warm child running"
        );
        Ok((running, running_ms))
    }
}

impl Engine {
    /// Take back the running sandbox of `row`, whose QEMU (`pid`, checked by
    /// the caller to be ours) outlived the daemon that started it.
    pub(crate) async fn adopt_vm(
        &self,
        row: &crate::store::SandboxRow,
        pid: u32,
        facts: &crate::store::RuntimeFacts,
    ) -> Result<Running> {
        let t0 = Instant::now();
        let process = QemuProcess::adopt(pid, &format!("zygote-{}", row.id))?;
        let fd = crate::stale::memfd_of(pid, &facts.memfd).ok_or_else(|| {
            EngineError::Conflict(format!(
                "QEMU {pid} holds no memfd called `{}`: its guest RAM cannot be taken back",
                facts.memfd
            ))
        })?;
        let taken = process
            .pidfd()?
            .take_fd(fd)
            .map_err(|source| EngineError::Io {
                what: format!("cannot take QEMU {pid}'s guest RAM (fd {fd})"),
                source,
            })?;
        let region = Arc::new(Region::from_memfd(
            zygote_mem::MemFd::from_fd(taken, &facts.memfd)?,
            row.machine.memory_bytes(),
        )?);
        let memory = match facts.memory {
            crate::store::MemoryKindCol::Own => SandboxMemory::Own(region),
            crate::store::MemoryKindCol::Cow => SandboxMemory::Cow(region),
        };
        let net = match (&facts.network, &self.net) {
            (Some(n), Some(host)) => Some(Arc::new(host.adopt(&n.netns, n.policy.clone())?)),
            (Some(n), None) => {
                return Err(EngineError::Conflict(format!(
                    "it runs in network namespace `{}` and this daemon runs with --network none",
                    n.netns
                )))
            }
            (None, _) => None,
        };
        let dir = RuntimeDir::existing(row.dir.clone());
        let timeout = Duration::from_secs(10);
        let qmp = Qmp::connect(&dir.qmp_socket(), timeout).await?;
        let mut vm = Vm {
            id: row.id.clone(),
            cgroup: self.cgroup_of(pid),
            process,
            net,
            qmp: Arc::new(qmp),
            memory,
            disk: DiskState {
                top: facts.disk_top.clone(),
                chain: self.snapshots.hold(facts.disk_chain.clone()),
                virtual_size: facts.disk_bytes,
                generation: facts.disk_generation,
            },
            machine: row.machine.clone(),
            volumes: VolumeLease::existing(facts.volumes.clone()),
            dir,
        };
        let socket = vm.dir.agent_socket();
        let link = vm
            .agent_or_death(AgentLink::connect(&socket, timeout), timeout)
            .await?;
        info!(
            pid,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "re-adopted a running sandbox"
        );
        let ready_ms = facts.boot_ms.unwrap_or(0) as f64;
        Ok(Running { vm, link, ready_ms })
    }
}

/// Set a child's wall clock to the host's (a clock-only `Resumed`).
async fn set_clock(link: &AgentLink) {
    let clock = Msg::Resumed {
        sandbox_id: String::new(),
        hostname: String::new(),
        unix_nanos: unix_nanos(),
        entropy_bytes: 0,
    };
    match link.start(&clock, &[]).await {
        Ok(mut r) => await_resumed(&mut r).await,
        Err(e) => warn!(error = %e, "could not correct the child's clock"),
    }
}

/// Wait for the agent's answer to a `Resumed`; a problem is logged, not fatal
/// (the child runs; what it could not apply is in the log).
async fn await_resumed(req: &mut crate::agent_link::Request) {
    match tokio::time::timeout(Duration::from_secs(10), req.next()).await {
        Ok(Ok(f)) if f.msg == Msg::Ok => {}
        Ok(Ok(f)) => warn!(reply = ?f.msg, "unexpected answer to Resumed"),
        Ok(Err(e)) => warn!(error = %e, "the agent could not apply Resumed"),
        Err(_) => warn!("the agent did not answer Resumed within 10 s"),
    }
}
