//! Suppression, one truth: one item per (workspace, email) with its reason and source.
//! Imports, sends and provider events read and write only this; a contact's status is
//! derived from it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Paged, from_item, to_item};
use crate::error::{AppError, AppResult};
use crate::keys;
use crate::model::{EmailAddress, SuppressionReason};
use crate::ports::store::{Cond, Key, Query, Store, StoreError, limits};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Suppression {
    pub email: String,
    pub reason: SuppressionReason,
    /// Who or what suppressed it (`api`, `import:<id>`, `ses`, …).
    pub source: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/suppressions` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddSuppression {
    #[schema(format = Email)]
    pub email: String,
    /// Defaults to `manual`.
    #[serde(default)]
    pub reason: Option<SuppressionReason>,
    /// Defaults to `api`.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub source: Option<String>,
}

fn pk(ws: &str) -> String {
    keys::ws(ws, keys::SUPPRESSIONS)
}

pub async fn reason_for(
    store: &dyn Store,
    ws: &str,
    email: &str,
) -> AppResult<Option<SuppressionReason>> {
    match store.get(&Key::new(pk(ws), email)).await? {
        Some(item) => Ok(Some(from_item::<Suppression>(item)?.reason)),
        None => Ok(None),
    }
}

/// Suppression reasons for many (normalised) emails at once, batched.
pub async fn reasons_for(
    store: &dyn Store,
    ws: &str,
    emails: &[String],
) -> AppResult<HashMap<String, SuppressionReason>> {
    let mut unique = emails.to_vec();
    unique.sort();
    unique.dedup();
    let mut out = HashMap::new();
    for chunk in unique.chunks(limits::MAX_BATCH_GET) {
        let keys: Vec<Key> = chunk.iter().map(|e| Key::new(pk(ws), e)).collect();
        for item in store.batch_get(&keys).await? {
            let s: Suppression = from_item(item)?;
            out.insert(s.email, s.reason);
        }
    }
    Ok(out)
}

/// Suppresses an address. An address already suppressed keeps its first reason (the
/// answer says so); returns whether a new suppression was written.
pub async fn add(
    store: &dyn Store,
    ws: &str,
    input: AddSuppression,
) -> AppResult<(Suppression, bool)> {
    let email = EmailAddress::parse(&input.email)
        .map_err(|reason| AppError::invalid("/email", format!("{:?} {reason}", input.email)))?;
    let source = crate::model::parse_text(input.source.as_deref().unwrap_or("api"), 200)
        .map_err(|reason| AppError::invalid("/source", reason))?;
    let s = Suppression {
        email: email.as_str().to_string(),
        reason: input.reason.unwrap_or(SuppressionReason::Manual),
        source,
        created_at: Utc::now(),
    };
    match store
        .put(to_item(&pk(ws), &s.email, &s)?, Some(Cond::ItemNotExists))
        .await
    {
        Ok(()) => Ok((s, true)),
        Err(StoreError::ConditionFailed) => Ok((get(store, ws, &s.email).await?, false)),
        Err(e) => Err(e.into()),
    }
}

pub async fn get(store: &dyn Store, ws: &str, email: &str) -> AppResult<Suppression> {
    let email = EmailAddress::parse(email).map_err(|_| AppError::NotFound)?;
    let item = store
        .get(&Key::new(pk(ws), email.as_str()))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn remove(store: &dyn Store, ws: &str, email: &str) -> AppResult<()> {
    let email = EmailAddress::parse(email).map_err(|_| AppError::NotFound)?;
    store
        .delete(&Key::new(pk(ws), email.as_str()), None)
        .await?
        .map(|_| ())
        .ok_or(AppError::NotFound)
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    reason: Option<SuppressionReason>,
    limit: usize,
    mut cursor: Option<String>,
) -> AppResult<Paged<Suppression>> {
    let mut data = Vec::new();
    for _ in 0..20 {
        let page = store
            .query(
                Query::partition(pk(ws))
                    .limit(limit - data.len())
                    .cursor(cursor.take()),
            )
            .await?;
        for item in page.items {
            let s: Suppression = from_item(item)?;
            if reason.is_none_or(|r| r == s.reason) {
                data.push(s);
            }
        }
        cursor = page.cursor;
        if data.len() >= limit || cursor.is_none() {
            break;
        }
    }
    Ok(Paged {
        data,
        next_cursor: cursor,
    })
}
