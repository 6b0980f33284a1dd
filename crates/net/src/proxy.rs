//! Exposed ports: a listener on the host whose every connection is relayed
//! to the guest by a socket made inside the sandbox's namespace (the guest's
//! address is the same in every namespace, so only a socket created there
//! reaches the right one). Connections are capped; dropping the proxy closes
//! the listener and every relayed connection.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

use crate::error::{io, Result};
use crate::ns;

/// A host listener relaying to one guest port.
#[derive(Debug)]
pub(crate) struct PortProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl PortProxy {
    /// Listen on `bind` (any free port) and relay to `guest` inside `netns`,
    /// at most `max_conns` connections at once (more are closed at once).
    pub(crate) async fn open(
        bind: IpAddr,
        netns: PathBuf,
        guest: SocketAddr,
        max_conns: usize,
    ) -> Result<PortProxy> {
        let listener = TcpListener::bind((bind, 0))
            .await
            .map_err(io(format!("cannot listen on {bind} for an exposed port")))?;
        let addr = listener
            .local_addr()
            .map_err(io("cannot read a listener's address"))?;
        let task = tokio::spawn(serve(listener, netns, guest, max_conns));
        Ok(PortProxy { addr, task })
    }

    /// The host address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, netns: PathBuf, guest: SocketAddr, max_conns: usize) {
    let slots = Arc::new(Semaphore::new(max_conns));
    // Owned here: aborting this task drops the set, which aborts every relay.
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut client, peer)) = accepted else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "exposed port at its connection limit: closed");
                    continue;
                };
                let netns = netns.clone();
                relays.spawn(async move {
                    match connect_in(netns, guest).await {
                        Ok(mut up) => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                        }
                        Err(e) => debug!(%guest, error = %e, "cannot reach the guest port"),
                    }
                    drop(permit);
                });
            }
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

/// A TCP connection to `to` from inside namespace `netns`.
pub async fn connect_in(netns: PathBuf, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::task::spawn_blocking(move || {
        ns::run_in(&netns, || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .map_err(io("cannot create a socket"))?;
            s.set_nonblocking(true)
                .map_err(io("cannot make a socket non-blocking"))?;
            Ok(s)
        })
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(std::io::Error::other)?;
    let std: std::net::TcpStream = sock.into();
    TcpSocket::from_std_stream(std).connect(to).await
}
