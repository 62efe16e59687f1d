//! The TCP accept loop.

use crate::connection::{self, ConnContext};
use crate::error::ServerError;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// Binds the listening socket.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Accepts connections until the server stops, serving each in its own task.
pub(crate) async fn accept_loop(listener: TcpListener, ctx: ConnContext) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                let task = connection::serve(ctx.clone(), stream, peer.to_string());
                ctx.tracker.spawn(task);
            }
            Err(e) => {
                // Typically out of file descriptors: wait a little instead of spinning.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    tracing::debug!("listener stopped");
}
