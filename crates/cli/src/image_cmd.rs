//! `zygote image build|pull|import|ls`: run locally against the home directory
//! (building needs root: debootstrap and OCI layers create root-owned files).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::env;

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Build an image from a recipe (default: the builtin `python`).
    Build {
        /// A builtin recipe name or a path to a recipe TOML file.
        recipe: Option<String>,
        /// Home directory.
        #[arg(long, env = env::HOME, default_value = env::DEFAULT_HOME)]
        home: PathBuf,
        /// The static guest agent binary to install.
        #[arg(long, env = env::AGENT_BIN)]
        agent: Option<PathBuf>,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Pull an OCI image from a registry and make a zygote image of it.
    ///
    /// Plain http is used with --insecure and for registries on loopback
    /// without --ca-file; https (system roots, plus --ca-file) otherwise. Layers are cached by
    /// digest under HOME/cache/oci; an interrupted pull resumes.
    Pull {
        /// REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST).
        reference: String,
        /// Image name (default: the reference's last component and tag, e.g. `python-3.12`).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        registry: crate::registry_args::RegistryArgs,
        #[command(flatten)]
        local: Local,
    },
    /// Make a zygote image of an OCI layout directory or a `docker save` tarball.
    Import {
        /// An OCI layout directory or a `docker save` tarball.
        path: PathBuf,
        /// Which image of the layout or tarball (default: the only one).
        #[arg(long)]
        tag: Option<String>,
        /// Image name (default: from the image's tag).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        local: Local,
    },
    /// List built images.
    Ls {
        /// Home directory.
        #[arg(long, env = env::HOME, default_value = env::DEFAULT_HOME)]
        home: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where and with what agent an image is made.
#[derive(clap::Args, Debug)]
pub(crate) struct Local {
    /// Home directory.
    #[arg(long, env = env::HOME, default_value = env::DEFAULT_HOME)]
    home: PathBuf,
    /// The static guest agent binary to install.
    #[arg(long, env = env::AGENT_BIN)]
    agent: Option<PathBuf>,
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

/// The agent binary: `--agent`, else beside this executable's target dir.
fn find_agent(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot locate the zygote binary")?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let profile = dir
        .file_name()
        .map(|s| s.to_os_string())
        .unwrap_or_default();
    let mut candidates = vec![dir.join("zygote-agent")];
    if let Some(target) = dir.parent() {
        candidates.insert(
            0,
            target
                .join("x86_64-unknown-linux-gnu")
                .join(&profile)
                .join("zygote-agent"),
        );
        candidates.push(
            target
                .join("x86_64-unknown-linux-gnu")
                .join("release")
                .join("zygote-agent"),
        );
    }
    candidates.push(PathBuf::from("/usr/local/lib/zygote/zygote-agent"));
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    anyhow::bail!(
        "the static guest agent was not found (looked in {}): build it with \
         `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p zygote-agent --target x86_64-unknown-linux-gnu` \
         or pass --agent PATH (env {})",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
        env::AGENT_BIN
    )
}

pub(crate) async fn run(cmd: ImageCmd) -> Result<u8> {
    match cmd {
        ImageCmd::Build {
            recipe,
            home,
            agent,
            json,
        } => {
            let local = Local { home, agent, json };
            let t0 = Instant::now();
            let outcome = make(&local, move |opts, progress| {
                let recipe = zygote_image::load_recipe(recipe.as_deref())?;
                Ok(zygote_image::build(&recipe, opts, progress)?)
            })
            .await?;
            report(&outcome, t0, local.json, None)
        }
        ImageCmd::Pull {
            reference,
            name,
            registry,
            local,
        } => {
            let t0 = Instant::now();
            let remote = registry.remote()?;
            let layout = crate::registry_args::layout(&local.home)?;
            eprintln!("  pull: {reference}");
            let pulled = zygote_registry::pull_image(&reference, &layout, &remote).await?;
            let reference_of = pulled.reference.clone();
            eprintln!(
                "  pull: {} blob(s) fetched ({:.1} MB), {} cached, in {:.1} s",
                pulled.fetched_blobs,
                pulled.fetched_bytes as f64 / 1e6,
                pulled.cached_blobs,
                t0.elapsed().as_secs_f64()
            );
            let dir = layout.dir().to_path_buf();
            let outcome = make(&local, move |opts, progress| {
                let mut img = zygote_image::open_layout(&dir, Some(&reference_of))?;
                img.reference = reference_of.clone();
                let name = name.unwrap_or_else(|| zygote_image::suggest_name(&reference_of));
                Ok(zygote_image::import(&img, &name, opts, progress)?)
            })
            .await?;
            let stats = serde_json::json!({
                "reference": pulled.reference,
                "digest": pulled.digest,
                "fetched_blobs": pulled.fetched_blobs,
                "fetched_bytes": pulled.fetched_bytes,
                "cached_blobs": pulled.cached_blobs,
            });
            report(&outcome, t0, local.json, Some(stats))
        }
        ImageCmd::Import {
            path,
            tag,
            name,
            local,
        } => {
            let t0 = Instant::now();
            let scratch = local
                .home
                .join(format!("cache/oci-import/{}", std::process::id()));
            let home = local.home.clone();
            let outcome = make(&local, move |opts, progress| {
                let img = if path.is_dir() {
                    zygote_image::open_layout(&path, tag.as_deref())
                } else {
                    zygote_image::open_docker_archive(&path, &scratch, tag.as_deref())
                };
                let made = img.and_then(|img| {
                    let name = name.unwrap_or_else(|| img.suggested_name.clone());
                    zygote_image::import(&img, &name, opts, progress)
                });
                let _ = std::fs::remove_dir_all(&scratch);
                let _ = std::fs::remove_dir(home.join("cache/oci-import"));
                Ok(made?)
            })
            .await?;
            report(&outcome, t0, local.json, None)
        }
        ImageCmd::Ls { home, json } => {
            let list = zygote_image::list(&home)?;
            if json {
                crate::output::print_json(&list)?;
            } else {
                use crate::output::{Align, Table};
                let mut t = Table::new(&[
                    ("NAME", Align::Left),
                    ("ID", Align::Left),
                    ("RELEASE", Align::Left),
                    ("ROOTFS_MB", Align::Right),
                    ("KERNEL", Align::Left),
                ]);
                for i in list {
                    t.row(vec![
                        i.name,
                        i.id[..12.min(i.id.len())].to_string(),
                        i.release,
                        (i.rootfs_bytes / 1_000_000).to_string(),
                        i.kernel_version,
                    ]);
                }
                print!("{}", t.render());
            }
            Ok(0)
        }
    }
}

/// Runs an image step on a blocking thread with progress on stderr: on a
/// terminal a spinner naming the step, finished steps above it; otherwise
/// (logs, CI) one line per step.
async fn make(
    local: &Local,
    step: impl FnOnce(
            &zygote_image::BuildOptions<'_>,
            &mut dyn FnMut(zygote_image::Progress),
        ) -> Result<zygote_image::BuildOutcome>
        + Send
        + 'static,
) -> Result<zygote_image::BuildOutcome> {
    let agent = find_agent(local.agent.clone())?;
    let home = local.home.clone();
    tokio::task::spawn_blocking(move || {
        let opts = zygote_image::BuildOptions {
            home: &home,
            agent_bin: &agent,
        };
        let spin = crate::output::Spinner::start("making image".to_string());
        let mut progress = |p: zygote_image::Progress| match p {
            zygote_image::Progress::Step { name, detail } => {
                if spin.active() {
                    spin.set(format!("{name}: {detail}"));
                } else {
                    eprintln!("  {name}: {detail}");
                }
            }
            zygote_image::Progress::Done { step, secs } => {
                spin.println(&format!("  {step}: done in {secs:.1} s"))
            }
        };
        step(&opts, &mut progress)
    })
    .await?
}

fn report(
    outcome: &zygote_image::BuildOutcome,
    t0: Instant,
    json: bool,
    pull: Option<serde_json::Value>,
) -> Result<u8> {
    if json {
        let mut v = serde_json::to_value(&outcome.image)?;
        v["cached"] = outcome.cached.into();
        if let Some(p) = pull {
            v["pull"] = p;
        }
        v["build_secs"] = t0.elapsed().as_secs_f64().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "image {} {} ({}; {:.1} s): {}",
            outcome.image.name,
            &outcome.image.id[..12.min(outcome.image.id.len())],
            if outcome.cached { "cached" } else { "built" },
            t0.elapsed().as_secs_f64(),
            outcome.image.dir.display()
        );
    }
    Ok(0)
}
