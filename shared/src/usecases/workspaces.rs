//! Workspaces and API keys: create a workspace with its first key, keep its sending
//! identity, issue, list and revoke scoped keys, and authenticate a request's key.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Paged, from_item, page_of, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::model::{Id, Scope};
use crate::ports::store::{Cond, Key, Store, TxAction, Update, Value};

/// A workspace: a tenant, with the identity its mail is sent under.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    /// Company name printed in every mail's footer (CAN-SPAM).
    #[serde(default)]
    pub company_name: Option<String>,
    /// Postal address printed in every mail's footer (CAN-SPAM).
    #[serde(default)]
    pub postal_address: Option<String>,
    /// Base URL for tracking and unsubscribe links; the platform's default when unset.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Most messages the whole workspace sends a UTC day, over all its senders; none =
    /// no workspace cap.
    #[serde(default)]
    pub daily_cap: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/workspaces` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateWorkspace {
    /// 1 to 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
}

/// `PATCH /v1/workspace` body: only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct WorkspacePatch {
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1000, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
    pub company_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1000, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
    pub postal_address: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, max_length = 2000, pattern = r"^https?://[^\s\x00-\x1f\x7f-\x9f/]+(/[^\s\x00-\x1f\x7f-\x9f]*)?$")]
    pub public_url: Option<Option<String>>,
    /// Most messages a UTC day over all senders; `null` removes the cap.
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000000000)]
    pub daily_cap: Option<Option<u64>>,
}

/// Answer to workspace creation: the only time the key is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedWorkspace {
    pub workspace_id: String,
    pub api_key: String,
}

/// An API key as stored (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    #[schema(ignore)]
    pub hash: String,
}

/// `POST /v1/api-keys` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateApiKey {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    pub scope: Scope,
}

/// A new API key: `key` is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub key: String,
}

/// Who is calling: resolved from the bearer key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub workspace_id: String,
    pub key_id: String,
    pub scope: Scope,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyPointer {
    workspace_id: String,
    key_id: String,
    scope: Scope,
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("mp_{}", hex::encode(bytes))
}

fn check_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    if let Err(reason) = crate::model::parse_text(name, 200) {
        errors.push(FieldError::new(field, reason));
    }
}

fn check_public_url(url: &str) -> Result<String, &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split('/').next().unwrap_or_default());
    let ok = host.is_some_and(|h| !h.is_empty())
        && url.chars().count() <= 2000
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    let url = url.trim_end_matches('/');
    if ok {
        Ok(url.to_string())
    } else {
        Err("must be an http(s) URL")
    }
}

fn key_record_actions(
    ws_id: &str,
    name: &str,
    scope: Scope,
) -> AppResult<(CreatedApiKey, Vec<TxAction>)> {
    let secret = new_secret();
    let hash = hash_key(&secret);
    let now = Utc::now();
    let key = ApiKey {
        id: Id::generate(Id::API_KEY),
        name: name.trim().to_string(),
        scope,
        prefix: secret.chars().take(10).collect(),
        created_at: now,
        hash: hash.clone(),
    };
    let (ppk, psk) = keys::api_key_pointer(&hash);
    let pointer = KeyPointer {
        workspace_id: ws_id.to_string(),
        key_id: key.id.clone(),
        scope,
    };
    let actions = vec![
        TxAction::Put {
            item: to_item(&keys::ws(ws_id, keys::API_KEYS), &key.id, &key)?,
            cond: Some(Cond::ItemNotExists),
        },
        TxAction::Put {
            item: to_item(&ppk, &psk, &pointer)?,
            cond: Some(Cond::ItemNotExists),
        },
    ];
    let created = CreatedApiKey {
        id: key.id,
        name: key.name,
        scope,
        prefix: key.prefix,
        created_at: now,
        key: secret,
    };
    Ok((created, actions))
}

/// Creates a workspace and its first `full` key, in one transaction.
pub async fn create_workspace(
    store: &dyn Store,
    input: CreateWorkspace,
) -> AppResult<CreatedWorkspace> {
    let mut errors = vec![];
    check_name("/name", &input.name, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let now = Utc::now();
    let ws = Workspace {
        id: Id::generate(Id::WORKSPACE),
        name: input.name.trim().to_string(),
        company_name: None,
        postal_address: None,
        public_url: None,
        daily_cap: None,
        created_at: now,
        updated_at: now,
    };
    let (pk, sk) = keys::workspace(&ws.id);
    let (key, mut actions) = key_record_actions(&ws.id, "default", Scope::Full)?;
    actions.push(TxAction::Put {
        item: to_item(&pk, &sk, &ws)?,
        cond: Some(Cond::ItemNotExists),
    });
    store.transact(actions).await?;
    // Starter components and templates. The workspace exists and its key works even if
    // this fails (the key is shown only in this answer), so a failure is logged, not
    // returned.
    if let Err(e) = super::templates::seed_starter_content(store, &ws.id).await {
        tracing::error!(error = %e, workspace_id = %ws.id, "seeding the starter templates failed");
    }
    Ok(CreatedWorkspace {
        workspace_id: ws.id,
        api_key: key.key,
    })
}

/// Largest workspace daily cap accepted.
pub const WORKSPACE_CAP_MAX: u64 = 1_000_000_000;

impl Workspace {
    /// The day the workspace's daily counter counts `now` in (UTC: a workspace has no zone).
    pub fn cap_day(now: DateTime<Utc>) -> chrono::NaiveDate {
        now.date_naive()
    }
}

pub async fn get_workspace(store: &dyn Store, ws_id: &str) -> AppResult<Workspace> {
    let (pk, sk) = keys::workspace(ws_id);
    let item = store
        .get(&Key::new(pk, sk))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn patch_workspace(
    store: &dyn Store,
    ws_id: &str,
    patch: WorkspacePatch,
) -> AppResult<Workspace> {
    let mut errors = vec![];
    let mut update = Update::new().set("updated_at", Value::S(Utc::now().to_rfc3339()));
    if let Some(name) = &patch.name {
        check_name("/name", name, &mut errors);
        update = update.set("name", Value::S(name.trim().to_string()));
    }
    for (field, value) in [
        ("company_name", &patch.company_name),
        ("postal_address", &patch.postal_address),
    ] {
        match value {
            Some(Some(v)) => match crate::model::parse_text(v, 1000) {
                Ok(t) => update = update.set(field, Value::S(t)),
                Err(reason) => errors.push(FieldError::new(format!("/{field}"), reason)),
            },
            Some(None) => update = update.remove(field),
            None => {}
        }
    }
    match &patch.public_url {
        Some(Some(url)) => match check_public_url(url) {
            Ok(url) => update = update.set("public_url", Value::S(url)),
            Err(reason) => errors.push(FieldError::new("/public_url", reason)),
        },
        Some(None) => update = update.remove("public_url"),
        None => {}
    }
    match patch.daily_cap {
        Some(Some(cap)) if (1..=WORKSPACE_CAP_MAX).contains(&cap) => {
            update = update.set("daily_cap", Value::N(cap.to_string()))
        }
        Some(Some(_)) => errors.push(FieldError::new(
            "/daily_cap",
            format!("must be 1 to {WORKSPACE_CAP_MAX} (null removes the cap)"),
        )),
        Some(None) => update = update.remove("daily_cap"),
        None => {}
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let (pk, sk) = keys::workspace(ws_id);
    let item = store
        .update(&Key::new(pk, sk), update, Some(Cond::ItemExists))
        .await
        .map_err(|e| {
            if e.is_condition_failed() {
                AppError::NotFound
            } else {
                e.into()
            }
        })?;
    from_item(item)
}

pub async fn create_api_key(
    store: &dyn Store,
    ws_id: &str,
    input: CreateApiKey,
) -> AppResult<CreatedApiKey> {
    let mut errors = vec![];
    check_name("/name", &input.name, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let (created, actions) = key_record_actions(ws_id, &input.name, input.scope)?;
    store.transact(actions).await?;
    Ok(created)
}

pub async fn list_api_keys(
    store: &dyn Store,
    ws_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<ApiKey>> {
    let page = page_of::<ApiKey>(store, &keys::ws(ws_id, keys::API_KEYS), limit, cursor).await?;
    Ok(Paged {
        data: page.data.into_iter().map(without_hash).collect(),
        next_cursor: page.next_cursor,
    })
}

fn without_hash(mut k: ApiKey) -> ApiKey {
    k.hash.clear();
    k
}

async fn get_key_record(store: &dyn Store, ws_id: &str, key_id: &str) -> AppResult<ApiKey> {
    if !Id::is_valid(Id::API_KEY, key_id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&Key::new(keys::ws(ws_id, keys::API_KEYS), key_id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn get_api_key(store: &dyn Store, ws_id: &str, key_id: &str) -> AppResult<ApiKey> {
    get_key_record(store, ws_id, key_id).await.map(without_hash)
}

/// Revokes a key: its record and its pointer go together, so it stops authenticating at
/// once and reads as 404 afterwards (a DELETE leaves nothing behind).
pub async fn revoke_api_key(store: &dyn Store, ws_id: &str, key_id: &str) -> AppResult<()> {
    let key = get_key_record(store, ws_id, key_id).await?;
    let (ppk, psk) = keys::api_key_pointer(&key.hash);
    let result = store
        .transact(vec![
            TxAction::Delete {
                key: Key::new(keys::ws(ws_id, keys::API_KEYS), key_id),
                cond: Some(Cond::ItemExists),
            },
            TxAction::Delete {
                key: Key::new(ppk, psk),
                cond: None,
            },
        ])
        .await;
    match result {
        Ok(()) => Ok(()),
        // Revoked by a concurrent call between our read and this write.
        Err(e) if e.is_condition_failed() => Err(AppError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// Resolves a bearer key to its workspace and scope; `None` when unknown or revoked.
pub async fn authenticate(store: &dyn Store, secret: &str) -> AppResult<Option<Principal>> {
    let (pk, sk) = keys::api_key_pointer(&hash_key(secret));
    let Some(item) = store.get(&Key::new(pk, sk)).await? else {
        return Ok(None);
    };
    let p: KeyPointer = from_item(item)?;
    Ok(Some(Principal {
        workspace_id: p.workspace_id,
        key_id: p.key_id,
        scope: p.scope,
    }))
}
