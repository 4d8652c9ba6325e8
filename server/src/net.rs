//! Listening sockets.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` with SO_REUSEADDR (a restart rebinds at once, whatever connections of the
/// previous process linger) and an accept queue of `backlog`.
pub fn bind_reusable(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
