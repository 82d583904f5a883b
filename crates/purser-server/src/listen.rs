//! The member's listening sockets: the peer port, the client port and the HTTP port are bound
//! the same way, and fail to start the same way.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::StartError;

/// Binds `addr` (port 0: any free port) and returns the listener with the address it got.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// Accepted connections with Nagle's algorithm off. tonic ignores `Server::tcp_nodelay` for
/// a listener we bound ourselves; left on, a response split over two segments waited for the
/// peer's delayed ACK, 40 ms, which set every p99 of the write path.
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
