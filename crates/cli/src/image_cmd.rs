//! `zygote image build|ls`: run locally against the home directory (building
//! needs root: debootstrap creates device nodes and root-owned files).

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
            let agent = find_agent(agent)?;
            let t0 = Instant::now();
            let outcome = tokio::task::spawn_blocking(move || -> Result<_> {
                let recipe = zygote_image::load_recipe(recipe.as_deref())?;
                let opts = zygote_image::BuildOptions {
                    home: &home,
                    agent_bin: &agent,
                };
                // On a terminal: a spinner naming the step, finished steps above it.
                // Otherwise (logs, CI): one line per step as before.
                let spin = crate::output::Spinner::start(format!("building image {}", recipe.name));
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
                Ok(zygote_image::build(&recipe, &opts, &mut progress)?)
            })
            .await??;
            if json {
                let mut v = serde_json::to_value(&outcome.image)?;
                v["cached"] = outcome.cached.into();
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
