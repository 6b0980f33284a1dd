//! `zygote volume create|ls|rm`, and the `--volume` option of create, run and
//! spawn.

use anyhow::{bail, Result};
use clap::Subcommand;
use zygote_proto::volumes::VolumeMount;

use crate::connect::client;
use crate::output::{print_json, Align, Table};
use crate::Conn;

#[derive(Subcommand, Debug)]
pub(crate) enum VolumeCmd {
    /// Create a named volume (an empty ext4 disk that outlives sandboxes).
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Name: a-z 0-9 - _ . (up to 64).
        name: String,
        /// Size, e.g. 512M, 10G (MiB when no unit); the file is sparse.
        #[arg(long, value_parser = parse_size_mib)]
        size: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List named volumes and who holds them.
    Ls {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove named volumes (refused while a sandbox holds one).
    Rm {
        #[command(flatten)]
        conn: Conn,
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `512M`, `10G`, `1T` or a bare number of MiB.
pub(crate) fn parse_size_mib(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mul = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "M" => 1,
                "G" => 1024,
                "T" => 1024 * 1024,
                _ => return Err(format!("`{s}`: the unit is M, G or T (e.g. 10G)")),
            };
            (&t[..i], mul)
        }
        None => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a size: pass e.g. 512M or 10G"))
}

/// `NAME:/path[:ro]` (a named volume) or `/host/dir:/path:ro` (a host
/// directory; always read-only).
pub(crate) fn parse_volume(s: &str) -> Result<VolumeMount> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, path, ro) = match parts.as_slice() {
        [src, path] => (*src, *path, false),
        [src, path, "ro"] => (*src, *path, true),
        [src, path, "rw"] => (*src, *path, false),
        _ => bail!("--volume `{s}` is not NAME:/guest/path[:ro] or /host/dir:/guest/path:ro"),
    };
    if src.is_empty() || !path.starts_with('/') {
        bail!("--volume `{s}`: the source must be non-empty and the guest path absolute (e.g. data:/data)");
    }
    if src.starts_with('/') {
        if !ro {
            bail!("--volume `{s}`: a host directory is attached read-only: add :ro");
        }
        return Ok(VolumeMount {
            name: None,
            host_path: Some(src.to_string()),
            path: path.to_string(),
            read_only: true,
        });
    }
    Ok(VolumeMount {
        name: Some(src.to_string()),
        host_path: None,
        path: path.to_string(),
        read_only: ro,
    })
}

/// Every `--volume`.
pub(crate) fn parse_volumes(specs: &[String]) -> Result<Vec<VolumeMount>> {
    specs.iter().map(|s| parse_volume(s)).collect()
}

fn mib(bytes: u64) -> String {
    format!("{}", bytes >> 20)
}

pub(crate) async fn volume(cmd: VolumeCmd) -> Result<u8> {
    match cmd {
        VolumeCmd::Create {
            conn,
            name,
            size,
            json,
        } => {
            let v = client(&conn).await?.create_volume(&name, size).await?;
            if json {
                print_json(&v)?;
            } else {
                println!("{}", v.name);
            }
        }
        VolumeCmd::Ls { conn, json } => {
            let list = client(&conn).await?.volumes().await?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            let mut t = Table::new(&[
                ("NAME", Align::Left),
                ("SIZE_MIB", Align::Right),
                ("USED_MIB", Align::Right),
                ("HELD_BY", Align::Left),
            ]);
            for v in &list {
                let held: Vec<String> = v
                    .holders
                    .iter()
                    .map(|h| {
                        if h.read_only {
                            format!("{} (ro)", h.sandbox)
                        } else {
                            h.sandbox.clone()
                        }
                    })
                    .collect();
                t.row(vec![
                    v.name.clone(),
                    mib(v.size_bytes),
                    mib(v.allocated_bytes),
                    held.join(", "),
                ]);
            }
            print!("{}", t.render());
        }
        VolumeCmd::Rm { conn, names } => {
            let c = client(&conn).await?;
            let mut failed = false;
            for n in &names {
                if let Err(e) = c.delete_volume(n).await {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
            return Ok(u8::from(failed));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("512"), Ok(512));
        assert_eq!(parse_size_mib("512M"), Ok(512));
        assert_eq!(parse_size_mib("10G"), Ok(10240));
        assert_eq!(parse_size_mib("1gib"), Ok(1024));
        assert_eq!(parse_size_mib("1T"), Ok(1 << 20));
        assert!(parse_size_mib("0").is_err());
        assert!(parse_size_mib("10X").is_err());
        assert!(parse_size_mib("G").is_err());
    }

    #[test]
    fn volume_specs() {
        let v = parse_volume("data:/data").unwrap();
        assert_eq!(
            (v.name.as_deref(), v.path.as_str(), v.read_only),
            (Some("data"), "/data", false)
        );
        assert!(parse_volume("data:/data:ro").unwrap().read_only);
        let h = parse_volume("/srv/ref:/ref:ro").unwrap();
        assert_eq!(h.host_path.as_deref(), Some("/srv/ref"));
        assert!(parse_volume("/srv/ref:/ref")
            .unwrap_err()
            .to_string()
            .contains(":ro"));
        assert!(parse_volume("data").is_err());
        assert!(parse_volume("data:rel").is_err());
        assert!(parse_volume("data:/d:xx").is_err());
    }
}
