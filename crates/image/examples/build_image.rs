//! Manual driver: `cargo run -p zygote-image --example build_image -- [RECIPE] [HOME] [AGENT]`.
//!
//! Builds an image and prints its `ImageInfo` as JSON. HOME defaults to
//! /var/lib/zygote, AGENT to /bin/busybox (not a working init; for size and
//! timing only).

use std::path::PathBuf;
use std::time::Instant;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!("\n  caused by: {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let recipe = args.next().filter(|a| a != "-");
    let home = PathBuf::from(args.next().unwrap_or_else(|| "/var/lib/zygote".into()));
    let agent = PathBuf::from(args.next().unwrap_or_else(|| "/bin/busybox".into()));
    let recipe = zygote_image::load_recipe(recipe.as_deref())?;
    let started = Instant::now();
    let opts = zygote_image::BuildOptions {
        home: &home,
        agent_bin: &agent,
    };
    let outcome = zygote_image::build(&recipe, &opts, &mut |p| eprintln!("progress: {p:?}"))?;
    eprintln!(
        "cached={} in {:.3}s",
        outcome.cached,
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "cmdline (tcg): {}",
        zygote_qemu::default_append(zygote_qemu::Accel::Tcg).expect("host TSC rate")
    );
    println!("{}", serde_json::to_string_pretty(&outcome.image)?);
    Ok(())
}
