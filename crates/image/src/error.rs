//! The crate's error type. Every message names the bad value and says what to do.

use std::path::PathBuf;

/// Everything that can go wrong while loading a recipe or building, listing or
/// resolving an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The recipe argument is neither a builtin name nor an existing file.
    #[error(
        "recipe `{arg}` is neither a builtin image ({builtins}) nor a readable file: \
         pass a builtin name or a path to a .toml recipe"
    )]
    RecipeNotFound { arg: String, builtins: String },

    /// The recipe is not valid TOML or has a wrong or unknown key.
    #[error("recipe {}: {message}", path.display())]
    RecipeParse { path: PathBuf, message: String },

    /// A field of the recipe has a bad value.
    #[error("recipe {}: {message}", path.display())]
    RecipeInvalid { path: PathBuf, message: String },

    /// An image name does not match `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    #[error(
        "image name `{name}` is invalid: use 1-64 characters from A-Z a-z 0-9 . _ -, \
         starting with a letter or digit"
    )]
    BadName { name: String },

    /// A `[[files]]` entry names a host file that does not exist.
    #[error(
        "recipe {}: file `{}` (src of [[files]] entry for `{dst}`) does not exist: \
         fix the path (relative paths are relative to the recipe's directory)",
        recipe.display(),
        src.display()
    )]
    MissingFile {
        recipe: PathBuf,
        src: PathBuf,
        dst: String,
    },

    /// debootstrap could not find some requested packages.
    #[error(
        "package{} `{}` {} not in Debian {release}: check the spelling in recipe {}",
        if packages.len() == 1 { "" } else { "s" },
        packages.join("`, `"),
        if packages.len() == 1 { "is" } else { "are" },
        recipe.display()
    )]
    UnknownPackage {
        packages: Vec<String>,
        release: String,
        recipe: PathBuf,
    },

    /// A host tool the builder runs is not installed.
    #[error("`{tool}` is not installed: run `apt-get install -y {package}` (or scripts/install-deps.sh)")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    /// A host tool ran but failed.
    #[error("`{command}` failed ({status}){}", tail_block(log_tail))]
    CommandFailed {
        command: String,
        status: String,
        log_tail: String,
    },

    /// debootstrap failed for a reason other than unknown packages.
    #[error(
        "debootstrap of {release} failed (full log: {}){}",
        log.display(),
        tail_block(log_tail)
    )]
    Debootstrap {
        release: String,
        log: PathBuf,
        log_tail: String,
    },

    /// No Debian mirror could be read from the apt sources.
    #[error(
        "no Debian mirror for release `{release}` in the apt sources ({searched}): \
         add a `deb` source for it or fix the recipe's release"
    )]
    NoMirror { release: String, searched: String },

    /// The cloud kernel could not be resolved or unpacked.
    #[error("guest kernel: {message}")]
    Kernel { message: String },

    /// A kernel module the initramfs needs is neither a file nor built in.
    #[error(
        "kernel {kernel} has no module `{module}` (neither a .ko file nor in \
         modules.builtin): the guest cannot find its virtio devices; use a kernel \
         that provides it"
    )]
    ModuleMissing { module: String, kernel: String },

    /// The requested disk size cannot hold the root filesystem.
    #[error(
        "recipe {}: disk_mib = {disk_mib} is too small for {content_mib} MiB of content: \
         set disk_mib to at least {minimum_mib} or remove it",
        recipe.display()
    )]
    DiskTooSmall {
        recipe: PathBuf,
        disk_mib: u64,
        content_mib: u64,
        minimum_mib: u64,
    },

    /// The agent binary to install is missing.
    #[error("agent binary `{}` does not exist: build it (cargo build -p zygote-agent) or pass its path", path.display())]
    AgentMissing { path: PathBuf },

    /// No image of that name has been built.
    #[error("no image named `{name}` in {}: run `zygote image build {name}`", home.display())]
    NotFound { name: String, home: PathBuf },

    /// An image's metadata is unreadable or from an incompatible builder.
    #[error("image metadata {} is unusable ({message}): rebuild with `zygote image build {name}`", path.display())]
    Corrupt {
        name: String,
        path: PathBuf,
        message: String,
    },

    /// The builder must run as root (debootstrap, device nodes, file ownership).
    #[error("building an image needs root (debootstrap creates device nodes and root-owned files): run as root")]
    NotRoot,

    /// An OCI layer cannot be applied.
    #[error(
        "layer {layer}: entry `{entry}`: {message}: the image is malformed or hostile; rebuild it"
    )]
    Layer {
        layer: String,
        entry: String,
        message: String,
    },

    /// An OCI image (layout directory or `docker save` tarball) is unusable.
    #[error("OCI image {}: {message}", path.display())]
    Oci { path: PathBuf, message: String },
}

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", tail.trim_end())
    }
}

impl ImageError {
    /// Shorthand for [`ImageError::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}
