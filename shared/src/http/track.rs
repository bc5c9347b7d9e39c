//! The recipient-facing routes: the open pixel `GET /t/o/{token}`, clicks
//! `GET /t/c/{token}` and unsubscribe `GET|POST /u/{token}`. Not part of the API (no key,
//! not in /openapi.json). Served by functions/track in Lambda and by the runner.
//!
//! Opens and clicks never read the database: the token is verified with the link keys,
//! the event gets an id and goes to the recorder through an [`EventSink`], and the answer
//! is the pixel (for every open request, bad tokens included: nothing leaks) or a 302 to
//! the URL inside a verified click token (a bad click token gets a plain 404 page). HEAD
//! requests are answered the same way and never counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;

use crate::model::Id;
use crate::model::links::{LinkKeys, LinkToken};
use crate::model::tracking::{MAX_USER_AGENT, TrackEvent, TrackKind};
use crate::ports::events::EventSink;
use crate::ports::store::Store;
use crate::usecases::tracking::{self, UnsubscribeScope, UnsubscribeTarget};

/// The 1×1 transparent GIF (43 bytes).
pub const PIXEL: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Longest unsubscribe form body read.
const MAX_FORM: usize = 4 * 1024;

#[derive(Clone)]
pub struct TrackState {
    pub keys: Arc<LinkKeys>,
    pub sink: Arc<dyn EventSink>,
    /// For unsubscribe (opens and clicks never use it).
    pub store: Arc<dyn Store>,
}

/// The tracking and unsubscribe routes.
pub fn router(state: TrackState) -> Router {
    Router::new()
        .route("/t/o/{token}", get(open))
        .route("/t/c/{token}", get(click))
        .route("/u/{token}", get(unsubscribe_page).post(unsubscribe_post))
        .with_state(state)
}

fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0, private"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn pixel() -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"))],
        Bytes::from_static(&PIXEL),
    )
        .into_response();
    no_cache(r.headers_mut());
    r
}

/// The client's address: API Gateway appends the caller's address to
/// `X-Forwarded-For` (the last entry is the one it saw); else the TCP peer.
fn client_ip(req: &Request) -> Option<IpAddr> {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .next_back();
    forwarded.or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

fn user_agent(req: &Request) -> Option<String> {
    let ua = req.headers().get(header::USER_AGENT)?.to_str().ok()?;
    let mut end = ua.len().min(MAX_USER_AGENT);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    Some(ua[..end].to_string())
}

fn event(req: &Request, ws: String, msg: String, kind: TrackKind) -> TrackEvent {
    TrackEvent {
        id: Id::generate("evt"),
        workspace_id: ws,
        message_id: msg,
        at: Utc::now(),
        kind,
        ip: client_ip(req),
        user_agent: user_agent(req),
    }
}

async fn emit(s: &TrackState, event: TrackEvent) {
    let id = event.id.clone();
    if let Err(e) = s.sink.emit(event).await {
        tracing::warn!(error = %e, event = %id, "handing a tracking event to the recorder failed");
    }
}

/// `GET /t/o/{token}`: the pixel, always.
async fn open(State(s): State<TrackState>, Path(token): Path<String>, req: Request) -> Response {
    if req.method() == Method::GET
        && let Ok(LinkToken::Open {
            workspace_id,
            message_id,
        }) = s.keys.verify(&token)
    {
        let e = event(&req, workspace_id, message_id, TrackKind::Open);
        emit(&s, e).await;
    }
    pixel()
}

/// `GET /t/c/{token}`: a 302 to the verified token's URL, or a plain 404 page.
async fn click(State(s): State<TrackState>, Path(token): Path<String>, req: Request) -> Response {
    let Ok(LinkToken::Click {
        workspace_id,
        message_id,
        link_index,
        url,
    }) = s.keys.verify(&token)
    else {
        return not_found();
    };
    // The URL comes only from the verified token; one a header cannot carry is refused.
    let Ok(location) = HeaderValue::from_str(&url) else {
        return not_found();
    };
    if req.method() == Method::GET {
        let kind = TrackKind::Click {
            link: link_index,
            url,
        };
        let e = event(&req, workspace_id, message_id, kind);
        emit(&s, e).await;
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut().insert(header::LOCATION, location);
    no_cache(r.headers_mut());
    r
}

// ---- pages ---------------------------------------------------------------------------------

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A plain, accessible page (system fonts, one column, no scripts, no external loads).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;\
line-height:1.5;color:#111;background:#fff}}button{{font:inherit;padding:.5rem 1rem;margin-top:1rem}}\
fieldset{{border:1px solid #888;padding:.5rem 1rem}}label{{display:block;margin:.25rem 0}}</style>\
</head><body><main>{body}</main></body></html>\n",
        title = escape(title),
    );
    let mut r = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response();
    no_cache(r.headers_mut());
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    r
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not found",
        "<h1>Link not found</h1><p>This link is not valid or no longer works.</p>",
    )
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<h1>Please try again</h1><p>We could not handle this just now. Please try again in a minute.</p>",
    )
}

async fn target(s: &TrackState, token: &str) -> Result<UnsubscribeTarget, Response> {
    let Ok(LinkToken::Unsubscribe {
        workspace_id,
        message_id,
    }) = s.keys.verify(token)
    else {
        return Err(not_found());
    };
    match tracking::unsubscribe_target(s.store.as_ref(), &workspace_id, &message_id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(not_found()),
        Err(e) => {
            tracing::warn!(error = %e, "loading an unsubscribe target failed");
            Err(unavailable())
        }
    }
}

/// `GET /u/{token}`: the confirmation page (a GET never unsubscribes: scanners fetch links).
async fn unsubscribe_page(State(s): State<TrackState>, Path(token): Path<String>) -> Response {
    let t = match target(&s, &token).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let name = escape(&t.workspace_name);
    let choices = if t.has_lists {
        format!(
            "<fieldset><legend>Which emails?</legend>\
<label><input type=\"radio\" name=\"scope\" value=\"lists\" checked> Only emails like this one</label>\
<label><input type=\"radio\" name=\"scope\" value=\"all\"> All emails from {name}</label></fieldset>"
        )
    } else {
        "<input type=\"hidden\" name=\"scope\" value=\"all\">".to_string()
    };
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<h1>Unsubscribe</h1><p>Stop receiving emails from {name}?</p>\
<form method=\"post\">{choices}<button type=\"submit\">Unsubscribe</button></form>"
        ),
    )
}

/// The scope a form body asks for: RFC 8058's `List-Unsubscribe=One-Click` (and anything
/// without a scope) is everything; the page's form sends `scope=lists|all`.
pub fn scope_of(body: &[u8]) -> UnsubscribeScope {
    let body = String::from_utf8_lossy(body);
    for pair in body.split('&') {
        if let Some(("scope", "lists")) = pair.split_once('=') {
            return UnsubscribeScope::Lists;
        }
    }
    UnsubscribeScope::All
}

/// `POST /u/{token}`: unsubscribes (RFC 8058 one-click, and the page's form). No auth,
/// idempotent: a repeated POST answers 200 again and changes nothing.
async fn unsubscribe_post(
    State(s): State<TrackState>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    let body = match axum::body::to_bytes(req.into_body(), MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                "<h1>Request too large</h1>",
            );
        }
    };
    let t = match target(&s, &token).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let scope = scope_of(&body);
    match tracking::unsubscribe(s.store.as_ref(), &t, scope, Utc::now()).await {
        Ok(()) => {
            let what = match scope {
                UnsubscribeScope::Lists if t.has_lists => "emails like this one".to_string(),
                _ => format!("emails from {}", escape(&t.workspace_name)),
            };
            page(
                StatusCode::OK,
                "Unsubscribed",
                &format!("<h1>You are unsubscribed</h1><p>You will no longer receive {what}.</p>"),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "unsubscribing failed");
            unavailable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_is_a_43_byte_gif() {
        assert_eq!(PIXEL.len(), 43);
        assert_eq!(&PIXEL[..6], b"GIF89a");
        assert_eq!(PIXEL[42], 0x3b);
    }

    #[test]
    fn scopes_and_escaping() {
        assert_eq!(
            scope_of(b"List-Unsubscribe=One-Click"),
            UnsubscribeScope::All
        );
        assert_eq!(scope_of(b"scope=lists"), UnsubscribeScope::Lists);
        assert_eq!(scope_of(b"scope=all"), UnsubscribeScope::All);
        assert_eq!(scope_of(b"\xff\xfe"), UnsubscribeScope::All);
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
