//! zygote-image: builds bootable guest images from Debian packages.
//!
//! An image is three files plus metadata, cached by content under
//! `<home>/images/<name>/<id>/`:
//!
//! - `vmlinuz`: Debian's cloud kernel (`linux-image-cloud-amd64`);
//! - `initrd.img`: busybox, the virtio modules and an `/init` that mounts
//!   `/dev/vda` and `switch_root`s to the agent at [`AGENT_PATH`];
//! - `rootfs.ext4`: `debootstrap --variant=minbase` plus the recipe's packages
//!   and files, trimmed, packed with `mkfs.ext4 -d` (label [`ROOT_LABEL`]).
//!
//! Boot it with `-append` [`KERNEL_CMDLINE`] and the root disk as the first
//! `virtio-blk-device`. The code is blocking; call it from `spawn_blocking`.
//!
//! Module map: `recipe` (TOML recipes), `build` (orchestration), `debootstrap`
//! (cached base tree), `kernel` (cloud kernel), `modules` (module selection),
//! `initramfs` (cpio + `/init`), `rootfs` (overlays + mkfs), `cache` (store
//! layout, ids, list/resolve), `host` (commands, apt sources), `error`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod build;
mod cache;
mod debootstrap;
mod error;
mod host;
mod initramfs;
mod kernel;
mod layers;
mod modules;
mod oci;
mod recipe;
mod rootfs;

pub use build::{build, import};
pub use cache::{list, resolve, FORMAT_VERSION};
pub use error::ImageError;
pub use oci::{open_docker_archive, open_layout, suggest_name, OciImage, REF_NAME};
pub use recipe::{
    builtin_names, load_recipe, parse_recipe, validate_name, Recipe, RecipeFile, DEFAULT_RECIPE,
};
pub use rootfs::{AGENT_PATH, ROOT_LABEL};

/// The kernel command line images are built for. `console=ttyS0` is where
/// `/init` reports failures; `rdinit=/init` runs the initramfs init;
/// `panic=-1` turns a kernel panic into a reboot (QEMU exits with `-no-reboot`).
/// The engine boots with `zygote_qemu::default_append`, which is this plus, under
/// TCG, `tsc_early_khz=` (without it many microvm boots hang before `/init`).
pub const KERNEL_CMDLINE: &str = "console=ttyS0 rdinit=/init quiet panic=-1";

/// Where `build` looks for busybox-static (installed by scripts/install-deps.sh).
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Inputs of a build besides the recipe.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions<'a> {
    /// The zygote home (e.g. `/var/lib/zygote`); images and caches live below it.
    pub home: &'a Path,
    /// The static agent binary installed as [`AGENT_PATH`].
    pub agent_bin: &'a Path,
}

/// Progress of a build, for the CLI to render.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A step started.
    Step { name: String, detail: String },
    /// A step finished.
    Done { step: String, secs: f64 },
}

/// The result of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub image: ImageInfo,
    /// True when an identical image already existed and nothing was built.
    pub cached: bool,
}

/// One built image generation (also stored as its `image.json`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ImageInfo {
    pub name: String,
    /// Content hash: the generation's directory name.
    pub id: String,
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    /// Size of `rootfs.ext4` in bytes (apparent; the file is sparse).
    pub rootfs_bytes: u64,
    /// `uname -r` of the guest kernel, e.g. `6.1.0-57-cloud-amd64`.
    pub kernel_version: String,
    pub release: String,
    pub packages: Vec<String>,
    pub warmup: Option<String>,
    /// Defaults of every exec in the guest (from an OCI image's config).
    #[serde(default)]
    pub exec: ExecDefaults,
    /// The OCI image it was made from (`reference@digest`), if any.
    #[serde(default)]
    pub from: Option<String>,
    pub created_unix: u64,
}

/// What an exec gets when its request does not say: the image config's `Env`
/// (under the request's own variables), `WorkingDir` and `User`. The guest
/// agent reads them from `/etc/zygote/image.json` (key `exec`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecDefaults {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}
