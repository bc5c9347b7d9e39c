//! Idempotency keys: a POST with `Idempotency-Key` has one effect however often it is
//! sent. Scoped per workspace (admin calls: one global scope) and key, kept 24 h. The
//! first request claims the key with a conditional put; a replay returns the first
//! status and body; the same key with another request is 422; a concurrent duplicate
//! while the first is still running is 409. The stored response is encrypted, since it
//! may hold a newly created API key. A 5xx answer releases the key so a retry can run.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AppState, MAX_BODY_BYTES};
use crate::error::AppError;
use crate::keys;
use crate::ports::store::{Cond, Key, Store, StoreError, Update, Value, val};
use crate::usecases::workspaces::Principal;
use crate::usecases::{from_item, to_item};

pub const HEADER: &str = "idempotency-key";
/// How long a key is remembered.
const KEEP_SECS: i64 = 24 * 3600;
/// How long a claimed key waits for its request before another may take over (the
/// first one crashed).
const LOCK_SECS: i64 = 60;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    state: String,
    request_hash: String,
    locked_until: i64,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

/// The parsed header: 1 to 255 printable ASCII characters.
fn key_of(req: &Request) -> Result<Option<String>, AppError> {
    let Some(v) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default();
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(AppError::bad_request(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(Some(s.to_string()))
}

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let key = match key_of(&req) {
        Ok(Some(k)) => k,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    let scope_pk = match req.extensions().get::<Principal>() {
        Some(p) => keys::ws(&p.workspace_id, keys::IDEMPOTENCY),
        None => keys::ADMIN_IDEMPOTENCY.to_string(),
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return AppError::PayloadTooLarge("the request body is larger than 4 MB".into())
                .into_response();
        }
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default(),
    );
    h.update([0]);
    h.update(&bytes);
    let request_hash = hex::encode(h.finalize());
    let record_key = Key::new(scope_pk, hex::encode(Sha256::digest(key.as_bytes())));

    let store = state.store();
    match claim(store, &record_key, &request_hash).await {
        Ok(()) => {}
        Err(StoreError::ConditionFailed) => {
            return replay(&state, &record_key, &request_hash).await;
        }
        Err(e) => return AppError::Store(e).into_response(),
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if response.status().is_server_error() {
        // Nothing was promised: let a retry run the request again.
        if let Err(e) = store.delete(&record_key, None).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        return response;
    }
    let (mut res_parts, res_body) = response.into_parts();
    let Ok(res_bytes) = to_bytes(res_body, usize::MAX).await else {
        return AppError::internal("response body could not be buffered").into_response();
    };
    let header_str = |name| {
        res_parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(|s| Value::S(s.to_string()))
    };
    let mut update = Update::new()
        .set("state", val::s("done"))
        .set("status", val::n(res_parts.status.as_u16() as i64))
        .set("body", Value::S(state.config.sealer.seal(&res_bytes)));
    if let Some(ct) = header_str(header::CONTENT_TYPE) {
        update = update.set("content_type", ct);
    }
    if let Some(loc) = header_str(header::LOCATION) {
        update = update.set("location", loc);
    }
    if let Err(e) = store
        .update(
            &record_key,
            update,
            Some(Cond::eq("request_hash", Value::S(request_hash))),
        )
        .await
    {
        tracing::warn!(error = %e, "could not store an idempotent response");
    }
    res_parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(res_parts, Body::from(res_bytes))
}

async fn claim(store: &dyn Store, key: &Key, request_hash: &str) -> Result<(), StoreError> {
    let now = Utc::now().timestamp();
    let record = Record {
        state: "in_progress".into(),
        request_hash: request_hash.into(),
        locked_until: now + LOCK_SECS,
        status: None,
        content_type: None,
        location: None,
        body: None,
    };
    let mut item =
        to_item(&key.pk, &key.sk, &record).map_err(|e| StoreError::unavailable(e.to_string()))?;
    item.insert("ttl".into(), val::n(now + KEEP_SECS));
    let cond = Cond::Or(vec![
        Cond::ItemNotExists,
        Cond::lt("ttl", val::n(now)),
        // The first request claimed it and then died: take over after the lock expires.
        Cond::And(vec![
            Cond::eq("state", val::s("in_progress")),
            Cond::eq("request_hash", val::s(request_hash)),
            Cond::lt("locked_until", val::n(now)),
        ]),
    ]);
    store.put(item, Some(cond)).await
}

async fn replay(state: &AppState, key: &Key, request_hash: &str) -> Response {
    let item = match state.store().get(key).await {
        Ok(Some(item)) => item,
        // Expired or released between our claim and this read: ask for a retry.
        Ok(None) => return AppError::IdempotencyInProgress.into_response(),
        Err(e) => return AppError::Store(e).into_response(),
    };
    let record: Record = match from_item(item) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if record.request_hash != request_hash {
        return AppError::IdempotencyMismatch.into_response();
    }
    let (Some(status), Some(body)) = (record.status, record.body.as_deref()) else {
        return AppError::IdempotencyInProgress.into_response();
    };
    let Ok(bytes) = state.config.sealer.open(body) else {
        return AppError::internal("stored idempotent response does not decrypt").into_response();
    };
    let mut res = Response::new(Body::from(bytes));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    for (name, value) in [
        (header::CONTENT_TYPE, record.content_type),
        (header::LOCATION, record.location),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            res.headers_mut().insert(name, v);
        }
    }
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}
