//! Serving the gateway's router: HTTPS with the gateway's certificate, asking each caller for
//! a client certificate from the deployment's CA (optional: applications sign in with tokens,
//! but a certificate names its holder as mutual TLS does), or plain HTTP, which the stack allows
//! only on loopback addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use govbus_kit::revocation::{ClientVerifier, Revalidated};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in hand may take to finish once the gateway stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is at the other end of an HTTPS connection, by the certificate from the deployment's
/// CA it presented (`None`: no certificate, or plain HTTP). In every request's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate(pub Option<Arc<str>>);

/// The largest request body taken (as the services' largest gRPC request), on every route.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Why HTTPS cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("the gateway's HTTPS: {0}")]
pub struct HttpsError(String);

/// The gateway's HTTPS, made by [`https_config`].
pub type HttpsConfig = govbus_kit::tls::ServerTls;

/// The gateway's HTTPS: its certificate chain and key (PEM), and the CA whose client
/// certificates it accepts, less those its revocation list (`crl`, see
/// [`govbus_kit::revocation`]) revokes.
pub fn https_config(
    certificate_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    crl: Option<&std::path::Path>,
) -> Result<HttpsConfig, HttpsError> {
    // Optional: an application may sign in with a token instead.
    let clients = ClientVerifier::new(client_ca_pem, crl, true)
        .map_err(|error| HttpsError(error.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| HttpsError(format!("the certificate: {error}")))?;
    if chain.is_empty() {
        return Err(HttpsError(
            "the certificate file holds no certificate".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| HttpsError(format!("the key: {error}")))?;
    HttpsConfig::new(chain, key, clients, &[b"h2", b"http/1.1"])
        .map_err(|error| HttpsError(format!("the certificate and key: {error}")))
}

/// Serves `router` on `listener` until `stop`, then lets requests in hand finish (for up to
/// ten seconds). With `tls`, each connection's handshake runs in a task of its own, so that a
/// slow or silent client holds up nobody else.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<HttpsConfig>,
    stop: CancellationToken,
) {
    let Some(tls) = tls else {
        let stopping = stop.clone();
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .await;
        if let Err(error) = served {
            tracing::error!(message = "The gateway stopped serving.", %error);
        }
        return;
    };
    let clients = tls.clients;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(message = "Cannot accept a connection.", %error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without it, small answers wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let clients = clients.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Before the handshake: a list reloaded while it runs is checked at the first read.
            let generation = clients.generation();
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(message = "TLS handshake failed.", %remote, %error);
                    return;
                }
                Err(_) => return,
            };
            let chain: Option<Arc<[CertificateDer<'static>]>> =
                stream.get_ref().1.peer_certificates().map(|chain| {
                    chain
                        .iter()
                        .map(|certificate| certificate.clone().into_owned())
                        .collect()
                });
            let certificate = ClientCertificate(
                chain
                    .as_deref()
                    .and_then(<[CertificateDer<'static>]>::first)
                    .and_then(|leaf| govbus_kit::tls::service_of_certificate(leaf.as_ref()))
                    .map(Arc::from),
            );
            // A certificate revoked while the connection is open ends it.
            let stream = Revalidated::new(
                stream,
                Some((clients, generation)),
                chain,
                certificate.0.clone(),
            );
            let service =
                hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(certificate.clone());
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(remote));
                    router.clone().oneshot(request)
                });
            let connection = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(message = "Connection ended with an error.", %remote, %error);
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(message = "Requests still in hand when the gateway stopped were cut off.");
    }
}
