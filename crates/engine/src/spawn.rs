//! Children of a snapshot: each with its own overlay and sockets, memory either
//! copy-on-write (`MAP_PRIVATE` over the sealed snapshot memfd, share=off) or
//! private (its own share=on memfd filled from the snapshot). A child starts
//! with `-incoming defer -S`, loads the RAM-less vmstate with `x-ignore-shared`,
//! resumes, and its agent is told it was restored (fresh entropy, the host's
//! clock, a new hostname and id).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde_json::json;
use tracing::{debug, info, warn, Instrument};
use zygote_mem::{CopyOptions, Region};
use zygote_proto::agent::Msg;
use zygote_proto::api::{SandboxState, SpawnBody, SpawnResult};
use zygote_qemu::{QemuProcess, Qmp, VmConfig};

use crate::agent_link::AgentLink;
use crate::branch::wait_migration;
use crate::error::{EngineError, Result};
use crate::lifecycle::{agent_or_death, link_error};
use crate::pool::Prestarted;
use crate::sandbox::{DiskState, MachineFacts, Sandbox, SandboxMemory, Spec};
use crate::snapshot::Snapshot;
use crate::{paths, Engine};

/// Most children one request may ask for.
pub(crate) const MAX_CHILDREN: u32 = 64;
/// Bytes of fresh entropy each child gets.
const ENTROPY_BYTES: usize = 64;

impl Engine {
    /// Start `n` children of a snapshot; each child succeeds or fails alone.
    pub async fn spawn(self: &Arc<Self>, body: SpawnBody) -> Result<Vec<SpawnResult>> {
        self.check_open()?;
        let t0 = Instant::now();
        let snap = self.snapshots.get(&body.snapshot_tag)?;
        let m = &snap.meta;
        if let Some(mib) = body.memory_mib {
            if mib != m.memory_mib {
                return Err(EngineError::BadRequest(format!(
                    "memory_mib {mib} differs from snapshot `{}`'s {} MiB: a child must have exactly its parent's memory size (omit memory_mib)",
                    m.tag, m.memory_mib
                )));
            }
        }
        if let Some(v) = body.vcpus {
            if v != m.vcpus {
                return Err(EngineError::BadRequest(format!(
                    "vcpus {v} differs from snapshot `{}`'s {}: a child must have exactly its parent's vCPUs (omit vcpus)",
                    m.tag, m.vcpus
                )));
            }
        }
        if m.accel != self.accel.accel.to_string() {
            return Err(EngineError::BadRequest(format!(
                "snapshot `{}` was taken under {}, this daemon runs {}: children must use the same accelerator",
                m.tag, m.accel, self.accel.accel
            )));
        }
        let want_cpu = zygote_qemu::cpu_model(self.accel.accel);
        if m.cpu != want_cpu {
            return Err(EngineError::BadRequest(format!(
                "snapshot `{}` uses CPU model `{}`, this daemon starts `{want_cpu}`: a CPU mismatch hangs the guest silently, so it is refused",
                m.tag, m.cpu
            )));
        }
        if body.hugepages && !body.private_memory {
            return Err(EngineError::BadRequest(
                "hugepages applies to private_memory children: set private_memory too (copy-on-write children share the snapshot's pages)".into(),
            ));
        }
        let n = body.n.unwrap_or(1);
        if !(1..=MAX_CHILDREN).contains(&n) {
            return Err(EngineError::BadRequest(format!(
                "n {n} is out of range: pass 1..={MAX_CHILDREN}"
            )));
        }
        for k in body.env.keys() {
            paths::env_name(k)?;
        }
        let snap_mem = {
            let s = snap.clone();
            tokio::task::spawn_blocking(move || s.memory())
                .await
                .map_err(|e| {
                    EngineError::Conflict(format!("loading snapshot memory failed: {e}"))
                })??
        };
        // Copy-on-write children are served first from the snapshot's pool of
        // pre-started QEMUs (paused, vmstate loaded); the rest start fresh.
        let mut pooled = if body.private_memory {
            Vec::new()
        } else {
            self.pool.take(&snap, n as usize)
        };
        let children = (0..n).map(|_| {
            let e = self.clone();
            let snap = snap.clone();
            let mem = snap_mem.clone();
            let body = body.clone();
            let pre = pooled.pop();
            async move {
                match e.spawn_child(&snap, mem, &body, pre, t0).await {
                    Ok(r) => r,
                    Err(err) => SpawnResult::failed(crate::error_chain(&err)),
                }
            }
        });
        let results = futures::future::join_all(children).await;
        if !body.private_memory {
            self.refill_pool(&snap.meta.tag);
        }
        Ok(results)
    }

    async fn spawn_child(
        self: &Arc<Self>,
        snap: &Arc<Snapshot>,
        snap_mem: Arc<Region>,
        body: &SpawnBody,
        pre: Option<Prestarted>,
        t0: Instant,
    ) -> Result<SpawnResult> {
        let m = &snap.meta;
        let spec = Spec {
            image: m.image.clone(),
            memory_mib: m.memory_mib,
            vcpus: m.vcpus,
            env: body.env.clone(),
            accel: m.accel.clone(),
            expires_at_unix: None,
        };
        let (sb, loaded, prestarted) = match pre {
            Some(p) => {
                let (id, loaded) = p.into_parts();
                (
                    self.register_as(id, spec, Some(m.tag.clone()))?,
                    Some(loaded),
                    true,
                )
            }
            None => (self.register(spec, Some(m.tag.clone()))?, None, false),
        };
        let id = sb.id.clone();
        let span = sb.span.clone();
        let started = async {
            let loaded = match loaded {
                Some(l) => l,
                None => {
                    let dir = sb.dir.clone();
                    self.load_child(
                        &sb.id,
                        &dir,
                        snap,
                        snap_mem,
                        body.private_memory,
                        body.hugepages,
                    )
                    .await?
                }
            };
            self.resume_child(&sb, snap, loaded, t0).await
        }
        .instrument(span.clone())
        .await;
        match started {
            Ok((running_ms, ready_ms)) => Ok(SpawnResult {
                prestarted,
                ..SpawnResult::started(sb.info(), running_ms, ready_ms)
            }),
            Err(e) => {
                warn!(parent: &span, error = %e, "child failed; cleaning up");
                let _ = self.remove(&id).await;
                Err(e)
            }
        }
    }

    /// Start a child's QEMU in `dir` over the snapshot's memory and load its
    /// vmstate; the VM stays paused. Nothing is registered: on error everything
    /// started here is dropped (QEMU is killed with its process handle).
    pub(crate) async fn load_child(
        &self,
        id: &str,
        dir: &Path,
        snap: &Arc<Snapshot>,
        snap_mem: Arc<Region>,
        private_memory: bool,
        hugepages: bool,
    ) -> Result<Loaded> {
        let t = Instant::now();
        let m = &snap.meta;
        let overlay = dir.join("disk.qcow2");
        zygote_qemu::create_overlay(&m.disk, "qcow2", &overlay).await?;
        let mut chain = m.disk_chain.clone();
        chain.push(m.disk.clone());
        let disk = DiskState {
            top: overlay.clone(),
            chain,
            virtual_size: m.disk_bytes,
            generation: 1,
        };
        let machine = MachineFacts {
            kernel: m.kernel.clone(),
            initrd: m.initrd.clone(),
            append: m.append.clone(),
            cpu: m.cpu.clone(),
        };
        let (memory, mem_path, share) = if private_memory {
            let name = format!("zygote-{id}");
            let src = snap_mem.clone();
            let own = tokio::task::spawn_blocking(move || -> Result<Region> {
                let r = Region::create(&name, src.size(), hugepages)?;
                r.copy_from(src.memfd(), &CopyOptions::default())?;
                Ok(r)
            })
            .await
            .map_err(|e| EngineError::Conflict(format!("filling private memory failed: {e}")))??;
            let own = Arc::new(own);
            let p = own.backend_path();
            (SandboxMemory::Own(own), p, true)
        } else {
            let p = snap_mem.backend_path();
            (SandboxMemory::Cow(snap_mem), p, false)
        };
        let cfg = VmConfig {
            accel: self.accel.accel,
            cpu: m.cpu.clone(),
            memory_mib: m.memory_mib,
            vcpus: m.vcpus,
            mem_path,
            mem_share: share,
            kernel: m.kernel.clone(),
            initrd: m.initrd.clone(),
            append: m.append.clone(),
            disk: overlay,
            qmp_socket: dir.join("qmp.sock"),
            agent_socket: dir.join("agent.sock"),
            console_log: dir.join("console.log"),
            incoming_defer: true,
            start_paused: true,
            tb_size_mib: None,
            name: format!("zygote-{id}"),
            // Children carry the same devices as the parent (see crate::xfer).
            xfer_disk: crate::xfer_disk_for(dir)?,
        };
        let prep_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut proc = QemuProcess::spawn(&self.qemu, &cfg)?;
        let timeout = self.cfg.boot_timeout;
        let qmp = tokio::select! {
            q = Qmp::connect(&cfg.qmp_socket, timeout) => q.map(Arc::new),
            exit = proc.wait() => Err(match exit {
                Ok(x) => proc.exited_error(x),
                Err(e) => e,
            }),
        }?;
        let qmp_ms = t.elapsed().as_secs_f64() * 1e3;
        let load = async {
            qmp.execute(
                "migrate-set-capabilities",
                json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
            )
            .await?;
            let uri = format!("exec:cat {}", snap.vmstate().display());
            qmp.execute("migrate-incoming", json!({ "uri": uri }))
                .await?;
            wait_migration(&qmp, Duration::from_secs(60)).await?;
            Ok::<_, EngineError>(())
        };
        if let Err(e) = load.await {
            // Say why QEMU went away if it did.
            if let Ok(Some(x)) = proc.try_wait().await {
                return Err(proc.exited_error(x).into());
            }
            return Err(e);
        }
        debug!(
            prep_ms,
            qmp_ms,
            loaded_ms = t.elapsed().as_secs_f64() * 1e3,
            "child loaded (paused)"
        );
        Ok(Loaded {
            proc,
            qmp,
            memory,
            disk,
            machine,
        })
    }

    /// Hand a loaded child to its sandbox, resume it, and tell its agent it was
    /// restored (fresh entropy, the host's clock, a new hostname and id).
    async fn resume_child(
        self: &Arc<Self>,
        sb: &Arc<Sandbox>,
        snap: &Arc<Snapshot>,
        loaded: Loaded,
        t0: Instant,
    ) -> Result<(f64, f64)> {
        let Loaded {
            proc,
            qmp,
            memory,
            disk,
            machine,
        } = loaded;
        *sb.disk.lock().unwrap_or_else(|p| p.into_inner()) = Some(disk);
        let _ = sb.machine.set(machine);
        let _ = sb.qmp.set(qmp.clone());
        self.adopt(sb, proc, memory)?;
        // The handshake and `Resumed` are queued before `cont`, so the guest
        // finds both waiting and answers them in one pass.
        let timeout = self.cfg.boot_timeout;
        let pending = AgentLink::begin(&sb.dir.join("agent.sock"), timeout)
            .await
            .map_err(|e| link_error(sb, e, timeout))?;
        let mut entropy = vec![0u8; ENTROPY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut entropy);
        let unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let hostname = format!("zygote-{}", &sb.id[..12.min(sb.id.len())]);
        let mut req = pending
            .start(
                &Msg::Resumed {
                    sandbox_id: sb.id.clone(),
                    hostname,
                    unix_nanos,
                    entropy_bytes: ENTROPY_BYTES as u32,
                },
                &entropy,
            )
            .await
            .map_err(|e| link_error(sb, e, timeout))?;
        qmp.execute("cont", json!(null)).await?;
        let running_ms = t0.elapsed().as_secs_f64() * 1e3;
        let link = agent_or_death(sb, pending.finish(), timeout).await?;
        let linked_ms = t0.elapsed().as_secs_f64() * 1e3;
        await_resumed(&mut req).await;
        drop(req);
        // The clock above was read before `cont` and reached the guest a cold
        // pass later (tens to hundreds of ms under TCG): set it again now that
        // the path is warm, before anyone is told the child is ready.
        let unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let clock = Msg::Resumed {
            sandbox_id: String::new(),
            hostname: String::new(),
            unix_nanos,
            entropy_bytes: 0,
        };
        match link.start(&clock, &[]).await {
            Ok(mut r) => await_resumed(&mut r).await,
            Err(e) => warn!(error = %e, "could not correct the child's clock"),
        }
        let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
        let _ = sb.boot_ms.set(ready_ms as u64);
        let _ = sb.link.set(Arc::new(link));
        if sb.set_state(SandboxState::Running, None) {
            self.store.set_state(&sb.id, "running", None, None)?;
        }
        info!(snapshot = %snap.meta.tag, running_ms, linked_ms, ready_ms, "child running");
        Ok((running_ms, ready_ms))
    }
}

/// A child's QEMU up to the point of resuming: started over the snapshot's
/// memory with its overlay, vmstate loaded, paused.
pub(crate) struct Loaded {
    pub(crate) proc: QemuProcess,
    pub(crate) qmp: Arc<Qmp>,
    pub(crate) memory: SandboxMemory,
    pub(crate) disk: DiskState,
    pub(crate) machine: MachineFacts,
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
