//! Build orchestration: recipe in, image generation out.
//!
//! Owns the order of steps, the per-name build lock, the staging directory
//! (`<home>/images/<name>/.staging-<id>`, renamed into place only when complete,
//! so a crash never leaves a half image under a valid id) and pruning old
//! generations after success. The steps themselves live in their modules.

use std::fs;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::cache::{self, IdInputs, Manifest, INITRD_FILE, KERNEL_FILE, META_FILE, ROOTFS_FILE};
use crate::error::ImageError;
use crate::oci::{self, OciImage};
use crate::recipe::{validate_name, Recipe};
use crate::{debootstrap, host, initramfs, kernel, modules, rootfs};
use crate::{BuildOptions, BuildOutcome, ExecDefaults, ImageInfo, Progress, BUSYBOX_PATH};

/// Where an image's root tree comes from.
enum Base<'a> {
    /// `debootstrap` of the recipe's release and packages.
    Debian,
    /// The layers of an OCI image.
    Oci(&'a OciImage),
}

/// Builds (or finds already built) the image for `recipe`.
///
/// An unchanged recipe with the same agent, kernel and builder is a no-op that
/// returns `cached: true` without running any tool.
pub fn build(
    recipe: &Recipe,
    opts: &BuildOptions<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildOutcome, ImageError> {
    build_from(recipe, &Base::Debian, opts, progress)
}

/// Makes an image named `name` from an OCI image (see [`crate::open_layout`]
/// and [`crate::open_docker_archive`]): its layers are the root tree, zygote's
/// kernel, initramfs and agent are added, and its config's `Env`,
/// `WorkingDir` and `User` become the defaults of every exec.
pub fn import(
    img: &OciImage,
    name: &str,
    opts: &BuildOptions<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildOutcome, ImageError> {
    let recipe = Recipe {
        name: name.to_string(),
        release: "oci".into(),
        packages: Vec::new(),
        warmup: None,
        disk_mib: None,
        files: Vec::new(),
        source: img.reference.clone().into(),
    };
    build_from(&recipe, &Base::Oci(img), opts, progress)
}

fn build_from(
    recipe: &Recipe,
    base_of: &Base<'_>,
    opts: &BuildOptions<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildOutcome, ImageError> {
    validate_name(&recipe.name)?;
    let home = opts.home;
    let agent = fs::read(opts.agent_bin).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::AgentMissing {
            path: opts.agent_bin.to_path_buf(),
        },
        _ => ImageError::io("read agent binary", opts.agent_bin)(e),
    })?;
    let busybox = fs::read(BUSYBOX_PATH).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::ToolMissing {
            tool: "busybox",
            package: "busybox-static",
        },
        _ => ImageError::io("read", BUSYBOX_PATH)(e),
    })?;
    let kpkg = kernel::resolve(home)?;
    let (rootfs_key, exec, from) = match base_of {
        Base::Debian => (debootstrap::key(recipe), ExecDefaults::default(), None),
        Base::Oci(img) => (
            format!("oci:{}", img.digest),
            img.exec.clone(),
            Some(format!("{}@{}", img.reference, img.digest)),
        ),
    };
    let kernel_id = kpkg.id();
    let id = cache::image_id(
        recipe,
        &IdInputs {
            agent: &agent,
            busybox: &busybox,
            kernel_id: &kernel_id,
            init_template: initramfs::INIT_TEMPLATE,
            modules: modules::GUEST_MODULES,
            rootfs_key: &rootfs_key,
        },
    )?;
    let name_dir = cache::name_dir(home, &recipe.name);
    if let Some(info) = existing(home, recipe, &id)? {
        return Ok(BuildOutcome {
            image: info,
            cached: true,
        });
    }

    host::mkdir_p(&name_dir)?;
    let lock_path = name_dir.join(".lock");
    let lock = fs::File::create(&lock_path).map_err(ImageError::io("create lock", &lock_path))?;
    lock.lock().map_err(ImageError::io("lock", &lock_path))?;
    // Another builder may have finished while we waited.
    if let Some(info) = existing(home, recipe, &id)? {
        return Ok(BuildOutcome {
            image: info,
            cached: true,
        });
    }
    if !host::is_root() {
        return Err(ImageError::NotRoot);
    }
    let started = Instant::now();
    tracing::info!(name = %recipe.name, %id, "building image");

    // Kernel.
    let t = Instant::now();
    progress(Progress::Step {
        name: "kernel".into(),
        detail: format!("{} {}", kpkg.package, kpkg.version),
    });
    let unpacked = kernel::ensure(home, &kpkg)?;
    progress(Progress::Done {
        step: "kernel".into(),
        secs: t.elapsed().as_secs_f64(),
    });

    // Base tree (cached across agents and files).
    let base = match base_of {
        Base::Debian => debootstrap::ensure(home, recipe, progress)?,
        Base::Oci(img) => oci::apply_tree(home, &recipe.name, img, progress)?,
    };

    let staging = name_dir.join(format!(".staging-{id}"));
    host::remove_all(&staging)?;
    host::mkdir_p(&staging)?;

    // Initramfs.
    let t = Instant::now();
    progress(Progress::Step {
        name: "initramfs".into(),
        detail: format!("busybox + {}", modules::GUEST_MODULES.join(" ")),
    });
    let selection = modules::select(&unpacked.modules_dir, &kpkg.release, modules::GUEST_MODULES)?;
    tracing::info!(
        load = ?selection.load.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        builtin = ?selection.builtin,
        "initramfs modules"
    );
    initramfs::write(&staging.join(INITRD_FILE), &busybox, &selection.load)?;
    fs::copy(&unpacked.vmlinuz, staging.join(KERNEL_FILE))
        .map_err(ImageError::io("copy kernel", &unpacked.vmlinuz))?;
    progress(Progress::Done {
        step: "initramfs".into(),
        secs: t.elapsed().as_secs_f64(),
    });

    // Root filesystem.
    let t = Instant::now();
    progress(Progress::Step {
        name: "rootfs.ext4".into(),
        detail: "overlay agent and files, mkfs.ext4 -d".into(),
    });
    let tree = home
        .join("cache/staging-tree")
        .join(format!("{}-{id}", recipe.name));
    let guest_meta = serde_json::to_vec_pretty(&serde_json::json!({
        "name": recipe.name,
        "id": id,
        "warmup": recipe.warmup,
        "exec": exec,
    }))
    .unwrap_or_default();
    let assembled = rootfs::assemble(&base, &tree, recipe, opts.agent_bin, &guest_meta);
    if let Base::Oci(_) = base_of {
        // The layers' tree is scratch (the debootstrap tree is a cache).
        host::remove_all(&base)?;
    }
    assembled?;
    let size_mib = rootfs::disk_size_mib(recipe, host::tree_bytes(&tree)?)?;
    let rootfs_path = staging.join(ROOTFS_FILE);
    let packed = rootfs::mkfs(&tree, &rootfs_path, size_mib);
    host::remove_all(&tree)?;
    packed?;
    progress(Progress::Done {
        step: "rootfs.ext4".into(),
        secs: t.elapsed().as_secs_f64(),
    });

    // Metadata, then rename into place.
    let final_dir = name_dir.join(&id);
    let rootfs_bytes = fs::metadata(&rootfs_path)
        .map_err(ImageError::io("stat", &rootfs_path))?
        .len();
    let info = ImageInfo {
        name: recipe.name.clone(),
        id: id.clone(),
        dir: final_dir.clone(),
        kernel: final_dir.join(KERNEL_FILE),
        initrd: final_dir.join(INITRD_FILE),
        rootfs: final_dir.join(ROOTFS_FILE),
        rootfs_bytes,
        kernel_version: kpkg.release.clone(),
        release: recipe.release.clone(),
        packages: recipe.packages.clone(),
        warmup: recipe.warmup.clone(),
        exec,
        from,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let manifest = Manifest {
        format: cache::FORMAT_VERSION,
        info: info.clone(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Corrupt {
        name: recipe.name.clone(),
        path: staging.join(META_FILE),
        message: e.to_string(),
    })?;
    for f in [KERNEL_FILE, INITRD_FILE, ROOTFS_FILE] {
        let p = staging.join(f);
        fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(ImageError::io("sync", &p))?;
    }
    host::write_atomic(&staging.join(META_FILE), &json)?;
    host::remove_all(&final_dir)?;
    fs::rename(&staging, &final_dir).map_err(ImageError::io("rename into place", &final_dir))?;
    let previous = cache::current_id(home, &recipe.name);
    cache::set_current(home, &recipe.name, &id)?;
    let mut keep = vec![id.as_str()];
    if let Some(p) = previous.as_deref() {
        keep.push(p);
    }
    cache::prune(home, &recipe.name, &keep)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(name = %recipe.name, %id, secs, rootfs_bytes, "image built");
    progress(Progress::Done {
        step: "build".into(),
        secs,
    });
    Ok(BuildOutcome {
        image: info,
        cached: false,
    })
}

/// A complete generation `id` of the recipe's name, made current.
fn existing(home: &Path, recipe: &Recipe, id: &str) -> Result<Option<ImageInfo>, ImageError> {
    match cache::load(home, &recipe.name, id) {
        Ok(info) => {
            if cache::current_id(home, &recipe.name).as_deref() != Some(id) {
                cache::set_current(home, &recipe.name, id)?;
            }
            Ok(Some(info))
        }
        Err(ImageError::NotFound { .. } | ImageError::Corrupt { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
