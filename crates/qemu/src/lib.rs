//! zygote-qemu: the QEMU process and its QMP socket.
//!
//! * [`binary`]: find `qemu-system-x86_64`/`qemu-img`, check the version (>= 9.0).
//! * [`accel`]: KVM or TCG, and the matching `-cpu` model.
//! * [`config`]: [`VmConfig`] and the one function that writes the command line.
//! * [`process`]: spawn, wait for and kill QEMU; `qemu-img create` overlays.
//! * [`qmp`]: the async QMP client (commands from many tasks, events broadcast).
//! * [`timing`]: the host TSC rate and the boot command line (`tsc_early_khz=`)
//!   that keeps TCG boots from hanging.
//!
//! This crate runs QEMU and speaks QMP; it holds no VM state machine (that is the
//! engine's) and never touches guest memory (that is `zygote-mem`'s).

pub mod accel;
pub mod binary;
pub mod config;
mod error;
pub mod pidfd;
pub mod process;
pub mod qmp;
pub mod timing;

pub use accel::{choose_accel, cpu_model, parse_accel, Accel, AccelChoice};
pub use binary::{detect_qemu, qemu_img_path, QemuBinary};
pub use config::{volume_serial, Nic, VmConfig, VolumeDrive, DEFAULT_APPEND};
pub use error::QemuError;
pub use pidfd::PidFd;
pub use process::{
    backing_file, create_overlay, create_overlay_unchecked, read_tail, rebase_unchecked, QemuExit,
    QemuProcess,
};
pub use qmp::{wait_event, Qmp, QmpEvent};
pub use timing::{default_append, host_tsc_khz};
