//! Authentication: `Authorization: Bearer <api key>` for the workspace API (with the
//! key's scope and rate limit), and the admin token for creating workspaces.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::AppError;
use crate::model::scope::Access;
use crate::ratelimit::Verdict;
use crate::usecases::workspaces::{self, Principal};

/// API keys already resolved, by the SHA-256 of the secret (see `Config::cache_keys`).
#[derive(Default)]
pub struct KeyCache(RwLock<HashMap<String, Principal>>);

/// Most keys remembered; past that the cache starts over.
const KEY_CACHE_MAX: usize = 10_000;

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Principal> {
        self.0.read().ok()?.get(hash).cloned()
    }

    fn insert(&self, hash: String, principal: Principal) {
        if let Ok(mut map) = self.0.write() {
            if map.len() >= KEY_CACHE_MAX {
                map.clear();
            }
            map.insert(hash, principal);
        }
    }

    /// Forgets every key (after a revocation).
    pub fn clear(&self) {
        if let Ok(mut map) = self.0.write() {
            map.clear();
        }
    }
}

async fn resolve(state: &AppState, secret: &str) -> Result<Option<Principal>, AppError> {
    if !state.config.cache_keys {
        return workspaces::authenticate(state.store(), secret).await;
    }
    let hash = workspaces::hash_key(secret);
    if let Some(p) = state.keys.get(&hash) {
        return Ok(Some(p));
    }
    let found = workspaces::authenticate(state.store(), secret).await?;
    if let Some(p) = &found {
        state.keys.insert(hash, p.clone());
    }
    Ok(found)
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// What a request needs from the key's scope: GETs need `read`, everything else
/// `full`; a `send` key may call only [`is_send_route`]s.
fn access_for(req: &Request) -> Access {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        Access::Read
    } else {
        Access::Write
    }
}

/// `POST /v1/send` and `GET /v1/messages/{id}`: what a `send` key may call.
fn is_send_route(req: &Request) -> bool {
    let path = req.uri().path();
    match *req.method() {
        Method::POST => path == "/v1/send",
        Method::GET | Method::HEAD => path
            .strip_prefix("/v1/messages/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/')),
        _ => false,
    }
}

pub async fn api_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(secret) = bearer(&req) else {
        return AppError::Unauthorized("an API key is required: Authorization: Bearer <key>")
            .into_response();
    };
    if secret.len() > 200 {
        return AppError::Unauthorized("the API key is not valid").into_response();
    }
    let principal = match resolve(&state, secret).await {
        Ok(Some(p)) => p,
        Ok(None) => return AppError::Unauthorized("the API key is not valid").into_response(),
        Err(e) => return e.into_response(),
    };
    let send_route = is_send_route(&req) && principal.scope == crate::model::Scope::Send;
    if !(send_route || principal.scope.allows(access_for(&req))) {
        return AppError::Forbidden(format!(
            "this key's scope ({}) does not allow this call",
            principal.scope.as_str()
        ))
        .into_response();
    }
    if let Verdict::RetryAfter(secs) = state
        .limiter
        .check(&principal.workspace_id, &principal.key_id)
        .await
    {
        return AppError::RateLimited {
            retry_after_secs: secs,
        }
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

pub async fn admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.config.admin_token.as_deref() else {
        return AppError::Forbidden(
            "creating workspaces over the API is disabled (no admin token is configured)".into(),
        )
        .into_response();
    };
    let ok = bearer(&req).is_some_and(|given| {
        // Compare digests so the comparison takes the same time wherever they differ.
        Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
    });
    if !ok {
        return AppError::Unauthorized(
            "the admin token is required: Authorization: Bearer <admin token>",
        )
        .into_response();
    }
    next.run(req).await
}
