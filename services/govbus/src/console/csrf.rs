//! Refusing requests another site makes an operator's browser send (cross-site request
//! forgery): a page open in the same browser could otherwise replay every dead letter with one
//! hidden form.
//!
//! A request that changes something (any method but `GET`, `HEAD`, `OPTIONS`) is refused with
//! 403 unless it carries [`CSRF_HEADER`] (the console's pages and the `govbus` commands send
//! it; a form cannot, and a script of another origin cannot without a CORS permission the
//! console never gives), and unless what the browser says of its origin (`Sec-Fetch-Site`,
//! `Origin`) is the console itself.

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::error::ApiError;
use crate::api::CSRF_HEADER;

pub(super) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    match cross_site(&request) {
        None => next.run(request).await,
        Some((reason, label)) => {
            tracing::warn!(
                message = "Request refused as cross-site.",
                method = %request.method(),
                path = request.uri().path(),
                %reason,
            );
            metrics::counter!("govbus_console_refused_total", "reason" => label).increment(1);
            ApiError::new(StatusCode::FORBIDDEN, reason).into_response()
        }
    }
}

/// Why `request` is taken for another site's, if it is: the reason and a metric label.
fn cross_site(request: &Request) -> Option<(String, &'static str)> {
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Some((
            format!("refused: the browser says this request comes from another site ({site})"),
            "cross_site",
        ));
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let own = text(header::HOST.as_str()).unwrap_or_default();
        let from = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if own.is_empty() || !from.eq_ignore_ascii_case(own) {
            return Some((
                format!("refused: a request from {origin}, not from the console at {own}"),
                "foreign_origin",
            ));
        }
    }
    if !headers.contains_key(CSRF_HEADER) {
        return Some((
            format!(
                "refused: a request that changes something must carry the {CSRF_HEADER} header, \
                 as the console's pages and the govbus commands do"
            ),
            "no_header",
        ));
    }
    None
}
