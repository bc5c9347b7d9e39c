//! `hello`: the bare axum baseline for the HTTP benchmark. One route, the same path
//! shape as the runner's `GET /v1/contacts/{id}`, answering a small fixed JSON body;
//! same axum/tokio versions and features as the runner (`[workspace.dependencies]`),
//! default `#[tokio::main]` multi-thread runtime as the runner's `main`.
//!
//! For the tracking benchmark it also has the tracking routes' shapes with nothing
//! behind them: `GET /t/o/{token}` answers the runner's 43-byte GIF and
//! `GET /t/c/{token}` a 302 to a fixed URL, without looking at the token.
//!
//! `hello [ADDR]` (default `127.0.0.1:0`); prints `listening on http://ADDR` on stderr;
//! stops on Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use mailpilot_shared::http::track::PIXEL;
use serde_json::{Value, json};

async fn contact(Path(id): Path<String>) -> Json<Value> {
    Json(json!({ "id": id, "hello": "world" }))
}

async fn open(Path(_token): Path<String>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/gif")], &PIXEL[..])
}

async fn click(Path(_token): Path<String>) -> impl IntoResponse {
    (
        StatusCode::FOUND,
        [(header::LOCATION, "https://example.com/")],
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/v1/contacts/{id}", get(contact))
        .route("/t/o/{token}", get(open))
        .route("/t/c/{token}", get(click));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
