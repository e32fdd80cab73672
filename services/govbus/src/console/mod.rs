//! The web console and the operators' HTTP API, served by the stack.
//!
//! Pages are plain HTML, CSS and JavaScript compiled into the binary (no build step). They read
//! the JSON API under `/api/` (its documents are in [`crate::api`]), which the `govbus`
//! operator commands use too. `/metrics` serves Prometheus text; `/healthz` answers when the
//! console runs.
//!
//! # Layout
//!
//! - `state`: what the handlers share.
//! - `csrf`: refusing requests another site makes an operator's browser send.
//! - `error`: how a failure is answered.
//! - `pages`, `status`, `events`, `dead_letters`, `traces`, `spbe`, `complaints`, `audit`: the
//!   handlers, one module per part of the console.
//! - [`inspect`]: reading streams, consumers and events from JetStream, personal fields masked.

mod audit;
mod complaints;
mod csrf;
mod dead_letters;
mod error;
mod events;
pub mod inspect;
mod pages;
mod spbe;
mod state;
mod status;
mod traces;

pub use state::{AuditAccess, ConsoleState};

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::paths;

/// Why the console did not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Its address cannot be bound.
    #[error(
        "cannot listen on {listen}: {source} (set console.listen, e.g. --console-listen 127.0.0.1:8081)"
    )]
    Listen {
        /// The address asked for.
        listen: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bound address cannot be read.
    #[error("reading the console address: {0}")]
    Address(#[source] std::io::Error),
}

/// A running console.
#[derive(Debug)]
pub struct Console {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Console {
    /// Binds `listen` and serves the console.
    pub async fn start(listen: SocketAddr, state: ConsoleState) -> Result<Self, ConsoleError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ConsoleError::Listen { listen, source })?;
        let address = listener.local_addr().map_err(ConsoleError::Address)?;
        let stop = state.closing().clone();
        let router = router(state);
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(message = "Console server failed.", %error);
            }
        });
        tracing::info!(message = "Console listening.", %address);
        Ok(Self {
            address,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving; open event streams end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "Console task failed.", %error);
        }
    }
}

fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(pages::page))
        .route("/app.js", get(pages::script))
        .route("/style.css", get(pages::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(status::metrics))
        .route(paths::OVERVIEW, get(status::overview))
        .route(paths::SERVICES, get(status::services))
        .route(paths::STREAMS, get(events::streams))
        .route(paths::FLOW, get(events::flow))
        .route(paths::EVENTS, get(events::events))
        .route(paths::LIVE_EVENTS, get(events::live_events))
        .route(paths::DEAD_LETTERS, get(dead_letters::dead_letters))
        .route(paths::REPLAY_ALL, post(dead_letters::replay_all))
        .route(paths::DEAD_LETTER, get(dead_letters::dead_letter))
        .route(paths::REPLAY, post(dead_letters::replay))
        .route(paths::TRACES, get(traces::traces))
        .route(paths::TRACE, get(traces::trace))
        .route(paths::SPBE, get(spbe::spbe))
        .route(paths::COMPLAINTS, get(complaints::complaints))
        .route(paths::AUDIT_VERIFY, post(audit::verify))
        .route(paths::AUDIT_SUBJECT, post(audit::subject))
        .layer(axum::middleware::from_fn(csrf::refuse_cross_site))
        .with_state(state)
}
