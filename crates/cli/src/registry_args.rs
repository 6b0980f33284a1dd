//! The flags every registry command shares: transport, credentials, home.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::env;

/// How to reach a registry.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RegistryArgs {
    /// Use plain http even for a registry that is not on loopback (loopback
    /// registries use it unless --ca-file is given).
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Extra trusted CA certificates (PEM) for the registry's https (a
    /// loopback registry is then reached over https too).
    #[arg(long)]
    pub(crate) ca_file: Option<PathBuf>,
    /// Registry user (basic auth; the password comes from --password-stdin
    /// or ZYGOTE_REGISTRY_PASSWORD).
    #[arg(long)]
    pub(crate) username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    pub(crate) password_stdin: bool,
    /// Read a bearer token from standard input instead of a user and password.
    #[arg(long, conflicts_with = "username")]
    pub(crate) token_stdin: bool,
}

impl RegistryArgs {
    /// The registry connection the flags, standard input and the environment say.
    pub(crate) fn remote(&self) -> Result<zygote_registry::Remote> {
        Ok(zygote_registry::Remote {
            auth: self.auth()?,
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
        })
    }

    fn auth(&self) -> Result<zygote_registry::Auth> {
        let read_stdin = || -> Result<String> {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read standard input")?;
            Ok(s.trim_end_matches(['\r', '\n']).to_string())
        };
        if self.token_stdin {
            return Ok(zygote_registry::Auth::Bearer(read_stdin()?));
        }
        let Some(username) = self.username.clone() else {
            return Ok(zygote_registry::Auth::Anonymous);
        };
        let password = if self.password_stdin {
            read_stdin()?
        } else {
            std::env::var(env::REGISTRY_PASSWORD).map_err(|_| {
                anyhow::anyhow!(
                    "--username {username} needs a password: pass --password-stdin or set {}",
                    env::REGISTRY_PASSWORD
                )
            })?
        };
        Ok(zygote_registry::Auth::Basic { username, password })
    }
}

/// What `snapshot push|pull` take besides the reference.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ChunkArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Home directory (its cache/oci keeps the chunks).
    #[arg(long, env = env::HOME, default_value = env::DEFAULT_HOME)]
    pub(crate) home: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The local OCI layout registry commands keep blobs in: `<home>/cache/oci`.
pub(crate) fn layout(home: &std::path::Path) -> Result<zygote_registry::Layout> {
    Ok(zygote_registry::Layout::open(&home.join("cache/oci"))?)
}
