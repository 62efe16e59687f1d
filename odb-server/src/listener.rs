//! The TCP accept loop. It only accepts: each connection's TLS handshake (if TLS is on),
//! authentication and service run in that connection's own task, so a slow or silent peer
//! never holds up the others.

use crate::admission::HelloSlot;
use crate::connection::{self, ConnContext, Peer};
use crate::error::ServerError;
use odb_wire::Refusal;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

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
                // An address at its cap of connections in their hello is refused before it
                // takes a slot under the connection limit, without reading anything from it.
                let hello_slot = ctx.admission.enter(peer.ip());
                let refusal = match (&hello_slot, ctx.connections.clone().try_acquire_owned()) {
                    (Some(_), Ok(permit)) => Ok(permit),
                    (None, _) => Err(Refusal::TooManyFromAddress {
                        limit: ctx.admission.cap() as u64,
                    }),
                    (Some(_), Err(_)) => Err(connection::server_full(&ctx)),
                };
                let slot = match refusal {
                    Ok(permit) => Slot::Serve(permit, hello_slot),
                    Err(reason) => match ctx.refusals.clone().try_acquire_owned() {
                        Ok(permit) => Slot::Refuse(permit, reason),
                        Err(_) => {
                            ctx.metrics
                                .connection_refused(crate::metrics::Refusal::of(&reason));
                            ctx.refusal_log.refused(&reason);
                            continue;
                        }
                    },
                };
                ctx.tracker
                    .spawn(connection_task(ctx.clone(), stream, peer, slot));
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

/// What a new connection gets.
enum Slot {
    /// Served, holding a place under the connection limit and one among its address's
    /// connections in their hello.
    Serve(OwnedSemaphorePermit, Option<HelloSlot>),
    /// Refused for being over a limit, holding a place among the refusals in progress.
    Refuse(OwnedSemaphorePermit, Refusal),
}

/// Runs the TLS handshake if TLS is on (bounded by the hello timeout), then serves or refuses.
async fn connection_task(ctx: ConnContext, stream: TcpStream, addr: SocketAddr, slot: Slot) {
    let peer = Peer {
        name: addr.to_string(),
        ip: Some(addr.ip()),
    };
    let Some(tls) = ctx.config.tls.clone() else {
        return dispatch(ctx, stream, peer, slot).await;
    };
    let limit = crate::admission::hello_timeout(
        ctx.config.hello_timeout,
        ctx.connections.available_permits(),
        ctx.config.max_connections,
    );
    let handshake = tokio::select! {
        _ = ctx.stop.cancelled() => return,
        handshake = tokio::time::timeout(limit, tls.acceptor().accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => dispatch(ctx, stream, peer, slot).await,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer.name, "closing connection: TLS handshake failed: {e}");
            ctx.refusal_log.refused(&Refusal::NotHello {
                detail: format!("TLS handshake failed: {e}"),
            });
        }
        Err(_) => {
            tracing::debug!(peer = %peer.name, "closing connection: no TLS handshake within {limit:?}");
            ctx.refusal_log.refused(&Refusal::HelloTimeout {
                after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
}

async fn dispatch<S>(ctx: ConnContext, stream: S, peer: Peer, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    match slot {
        Slot::Serve(permit, hello_slot) => {
            connection::serve(ctx, stream, peer, permit, hello_slot).await
        }
        Slot::Refuse(permit, reason) => {
            connection::refuse(ctx, stream, peer, reason).await;
            drop(permit);
        }
    }
}
