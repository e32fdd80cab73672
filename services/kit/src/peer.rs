//! A server's connections: the mutual-TLS handshake, and the caller named by its certificate,
//! read once per connection rather than once per call.
//!
//! [`incoming`] accepts TCP connections (with `TCP_NODELAY`: without it small responses wait
//! for Nagle's algorithm), runs each TLS handshake in a task of its own (a slow or silent client
//! holds up nobody else, and is dropped after ten seconds), reads the client certificate's
//! service name once, and hands tonic the connection with its [`Peer`]. Every request on the
//! connection then carries the `Peer` in its extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::revocation::{ClientVerifier, Revalidated};
use crate::tls::ServerTls;
use tonic::transport::server::Connected;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections handshaken but not yet taken by the server.
const BACKLOG: usize = 128;

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    caller: Option<Arc<str>>,
    certificates: Option<Arc<[CertificateDer<'static>]>>,
    remote: Option<SocketAddr>,
}

impl Peer {
    /// A caller in the same process, named by the code that calls rather than by a certificate
    /// (see [`crate::in_process`]).
    pub(crate) fn in_process(caller: Arc<str>) -> Self {
        Self {
            caller: Some(caller),
            certificates: None,
            remote: None,
        }
    }

    /// The calling service as its client certificate names it (`None` without TLS).
    pub fn caller(&self) -> Option<&Arc<str>> {
        self.caller.as_ref()
    }

    /// The client's certificate chain, leaf first.
    pub fn certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.certificates.as_deref()
    }

    /// The client's address.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// The peer of the connection `request` came by, if it came through [`incoming`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }
}

/// A connection with its peer.
#[derive(Debug)]
pub struct PeerStream {
    transport: Transport,
    peer: Peer,
}

#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<Revalidated<TlsStream<TcpStream>>>),
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections `listener` accepts, handshaken with `tls` when given, for
/// `Server::serve_with_incoming`. Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> impl Stream<Item = io::Result<PeerStream>> + Send + 'static {
    let (connections, accepted) = mpsc::channel(BACKLOG);
    let tls = tls.map(|tls| (TlsAcceptor::from(tls.config), tls.clients));
    tokio::spawn(accept(listener, tls, connections));
    futures_util::stream::unfold(accepted, |mut accepted| async move {
        accepted
            .recv()
            .await
            .map(|connection| (Ok(connection), accepted))
    })
}

async fn accept(
    listener: TcpListener,
    acceptor: Option<(TlsAcceptor, ClientVerifier)>,
    connections: mpsc::Sender<PeerStream>,
) {
    loop {
        let accepted = tokio::select! {
            () = connections.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // The listener itself failed (out of file descriptors): pause rather than spin.
                tracing::warn!(message = "Cannot accept a connection.", %error);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match &acceptor {
            None => {
                let connection = PeerStream {
                    transport: Transport::Plain(stream),
                    peer: Peer {
                        remote: Some(remote),
                        ..Peer::default()
                    },
                };
                if connections.send(connection).await.is_err() {
                    return;
                }
            }
            Some((acceptor, clients)) => {
                tokio::spawn(handshake(
                    acceptor.clone(),
                    clients.clone(),
                    stream,
                    remote,
                    connections.clone(),
                ));
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    clients: ClientVerifier,
    stream: TcpStream,
    remote: SocketAddr,
    connections: mpsc::Sender<PeerStream>,
) {
    // Before the handshake: a list reloaded while it runs is then checked at the first read.
    let generation = clients.generation();
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            metrics::counter!("govbus_tls_handshake_failures_total").increment(1);
            tracing::warn!(message = "TLS handshake refused.", %remote, %error);
            return;
        }
        Err(_) => {
            metrics::counter!("govbus_tls_handshake_failures_total").increment(1);
            tracing::warn!(message = "TLS handshake timed out.", %remote);
            return;
        }
    };
    let certificates: Option<Arc<[CertificateDer<'static>]>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.iter().map(|der| der.clone().into_owned()).collect());
    let caller = certificates
        .as_deref()
        .and_then(<[CertificateDer<'static>]>::first)
        .and_then(|leaf| crate::tls::service_of_certificate(leaf.as_ref()))
        .map(Arc::from);
    let stream = Revalidated::new(
        stream,
        Some((clients, generation)),
        certificates.clone(),
        caller.clone(),
    );
    let connection = PeerStream {
        transport: Transport::Tls(Box::new(stream)),
        peer: Peer {
            caller,
            certificates,
            remote: Some(remote),
        },
    };
    let _ = connections.send(connection).await;
}

/// The calling service named by the client certificate of `request`'s connection, if it
/// presented one (read once, when the connection was made).
pub fn caller_of_request<T>(request: &tonic::Request<T>) -> Option<&Arc<str>> {
    Peer::of(request)?.caller()
}
