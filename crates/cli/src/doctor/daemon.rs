//! The daemon checks: does a daemon answer where the CLI would look
//! (`--socket`, `--url`, `ZYGOTE_SOCKET`, `ZYGOTE_URL`, else the default socket),
//! and does it accept our bearer token (TCP only). Never starts a daemon.

use std::path::PathBuf;

use zygote_client::{Client, Endpoint};

use super::Check;
use crate::{env, Conn};

pub(super) async fn checks(conn: &Conn) -> Vec<Check> {
    let (dn, tn) = ("daemon", "token");
    if let Some(url) = &conn.url {
        let sent = std::env::var(env::TOKEN).is_ok_and(|t| !t.is_empty());
        let c = match crate::connect::url_endpoint(conn, url) {
            Ok(e) => Client::new(e),
            Err(e) => {
                return vec![
                    Check::fail(
                        dn,
                        e.to_string(),
                        "pass --url http://HOST:PORT or https://HOST:PORT (env ZYGOTE_URL; ZYGOTE_CA for a private CA)",
                    ),
                    Check::skip(tn, "no usable URL"),
                ]
            }
        };
        return match c.version().await {
            Ok(v) => vec![
                Check::pass(
                    dn,
                    format!("zygote {} answers at {url} (accel {}, QEMU {})", v.version, v.accel, v.qemu),
                ),
                if sent {
                    Check::pass(tn, format!("the daemon accepted the token in {}", env::TOKEN))
                } else {
                    Check::warn(
                        tn,
                        format!("no token sent ({} unset) and the daemon asked for none", env::TOKEN),
                        "on TCP, start the daemon with --token-file and set ZYGOTE_TOKEN on clients",
                    )
                },
            ],
            Err(e) if e.status() == Some(401) => vec![
                Check::pass(dn, format!("a zygote daemon answers at {url}")),
                Check::fail(
                    tn,
                    if sent {
                        format!("the daemon refused the token in {}: {e}", env::TOKEN)
                    } else {
                        format!("the daemon wants a bearer token and {} is unset", env::TOKEN)
                    },
                    format!(
                        "set {} to the first line of the daemon's --token-file",
                        env::TOKEN
                    ),
                ),
            ],
            Err(e) => vec![
                Check::fail(
                    dn,
                    crate::output::chain(&e),
                    "start it: sudo zygote daemon --listen ADDR:PORT --token-file FILE, or fix --url",
                ),
                Check::skip(tn, "no daemon answered"),
            ],
        };
    }
    let explicit = conn.socket.is_some();
    let socket = conn
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(env::DEFAULT_SOCKET));
    let c = Client::new(Endpoint::Unix(socket.clone()));
    let no_token = Check::skip(tn, "Unix socket: access is by file permission, no token");
    match c.version().await {
        Ok(v) => vec![
            Check::pass(
                dn,
                format!(
                    "zygote {} answers at {} (accel {}, QEMU {})",
                    v.version,
                    socket.display(),
                    v.accel,
                    v.qemu
                ),
            ),
            no_token,
        ],
        Err(e) if e.is_connect() && !explicit => vec![
            Check::warn(
                dn,
                format!("no daemon answers at the default socket {}", socket.display()),
                "commands start one there when run as root; or start it yourself: sudo zygote daemon",
            ),
            no_token,
        ],
        Err(e) => vec![
            Check::fail(
                dn,
                crate::output::chain(&e),
                format!(
                    "start one: sudo zygote daemon --socket {}, or fix --socket (env {})",
                    socket.display(),
                    env::SOCKET
                ),
            ),
            no_token,
        ],
    }
}
