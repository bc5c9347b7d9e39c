//! Lists: create, rename, delete; optional double opt-in; bulk membership changes (up to
//! 1,000 per call, a result per item); members paged; member counts kept by a counter
//! updated in the same transaction as the memberships it counts.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Paged, contacts, from_item, page_of, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::model::Id;
use crate::ports::store::{
    BatchOp, Cond, ItemExt, Key, Query, Store, StoreError, TxAction, Update, Value, limits,
};

/// Most contacts one bulk membership call takes.
pub const MAX_BULK: usize = 1000;
/// Memberships per transaction: 2 items each plus the list's counter, under 100 actions.
const PER_TX: usize = 49;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct List {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// New members start `pending` until they confirm.
    pub double_opt_in: bool,
    /// Kept by a counter, not by a scan.
    #[serde(default)]
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateList {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub description: Option<String>,
    #[serde(default)]
    pub double_opt_in: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ListPatch {
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 2000, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub double_opt_in: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Subscribed,
    /// Waiting for double opt-in confirmation.
    Pending,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub contact_id: String,
    pub status: MemberStatus,
    pub added_at: DateTime<Utc>,
}

/// `POST /v1/lists/{id}/members` and `.../members/remove` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MembersChange {
    /// 1 to 1,000 contact ids.
    #[schema(min_items = 1, max_items = 1000)]
    pub contact_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberOutcome {
    Added,
    AlreadyMember,
    Removed,
    NotMember,
    ContactNotFound,
    Duplicate,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberResult {
    pub contact_id: String,
    pub result: MemberOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembersChanged {
    pub data: Vec<MemberResult>,
    /// How many memberships this call added or removed.
    pub changed: usize,
}

fn lists_pk(ws: &str) -> String {
    keys::ws(ws, keys::LISTS)
}

pub(crate) fn list_key(ws: &str, id: &str) -> Key {
    Key::new(lists_pk(ws), id)
}

fn check_text(field: &str, v: &str, max: usize, errors: &mut Vec<FieldError>) {
    if let Err(reason) = crate::model::parse_text(v, max) {
        errors.push(FieldError::new(field, reason));
    }
}

pub async fn create(store: &dyn Store, ws: &str, input: CreateList) -> AppResult<List> {
    let mut errors = vec![];
    check_text("/name", &input.name, 200, &mut errors);
    if let Some(d) = &input.description {
        check_text("/description", d, 2000, &mut errors);
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let now = Utc::now();
    let list = List {
        id: Id::generate(Id::LIST),
        name: input.name.trim().into(),
        description: input.description.map(|d| d.trim().to_string()),
        double_opt_in: input.double_opt_in,
        member_count: 0,
        created_at: now,
        updated_at: now,
    };
    store
        .put(
            to_item(&lists_pk(ws), &list.id, &list)?,
            Some(Cond::ItemNotExists),
        )
        .await?;
    Ok(list)
}

pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<List> {
    if !Id::is_valid(Id::LIST, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&list_key(ws, id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<List>> {
    page_of(store, &lists_pk(ws), limit, cursor).await
}

pub async fn patch(store: &dyn Store, ws: &str, id: &str, patch: ListPatch) -> AppResult<List> {
    get(store, ws, id).await?;
    let mut errors = vec![];
    let mut update = Update::new().set("updated_at", Value::S(Utc::now().to_rfc3339()));
    if let Some(name) = &patch.name {
        check_text("/name", name, 200, &mut errors);
        update = update.set("name", Value::S(name.trim().into()));
    }
    match &patch.description {
        Some(Some(d)) => {
            check_text("/description", d, 2000, &mut errors);
            update = update.set("description", Value::S(d.trim().into()));
        }
        Some(None) => update = update.remove("description"),
        None => {}
    }
    if let Some(d) = patch.double_opt_in {
        update = update.set("double_opt_in", Value::Bool(d));
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let item = store
        .update(&list_key(ws, id), update, Some(Cond::ItemExists))
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

/// Deletes a list and then its memberships, in batches.
pub async fn delete(store: &dyn Store, ws: &str, id: &str) -> AppResult<()> {
    get(store, ws, id).await?;
    match store
        .delete(&list_key(ws, id), Some(Cond::ItemExists))
        .await
    {
        Ok(_) => {}
        Err(StoreError::ConditionFailed) => return Err(AppError::NotFound),
        Err(e) => return Err(e.into()),
    }
    purge_members(store, ws, id).await
}

/// Removes every membership item of a list (both sides). Used by list deletion and by
/// the delete-workspace job.
pub async fn purge_members(store: &dyn Store, ws: &str, list_id: &str) -> AppResult<()> {
    loop {
        let page = store
            .query(Query::partition(keys::list_members(ws, list_id)).limit(200))
            .await?;
        if page.items.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        for item in &page.items {
            let Some(contact_id) = item.str_attr("sk") else {
                continue;
            };
            ops.push(BatchOp::Delete(Key::new(
                keys::list_members(ws, list_id),
                contact_id,
            )));
            ops.push(BatchOp::Delete(Key::new(
                keys::contact_lists(ws, contact_id),
                list_id,
            )));
        }
        for chunk in ops.chunks(limits::MAX_BATCH_WRITE - 1) {
            store.batch_write(chunk.to_vec()).await?;
        }
    }
}

fn validate_ids(change: &MembersChange) -> AppResult<()> {
    if change.contact_ids.is_empty() || change.contact_ids.len() > MAX_BULK {
        return Err(AppError::invalid(
            "/contact_ids",
            "must hold 1 to 1000 contact ids",
        ));
    }
    Ok(())
}

/// Sorts the request's ids into first occurrences and duplicates, keeping the order.
fn first_occurrences(ids: &[String]) -> (Vec<String>, HashSet<usize>) {
    let mut seen = HashSet::new();
    let mut dups = HashSet::new();
    let mut firsts = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if seen.insert(id.clone()) {
            firsts.push(id.clone());
        } else {
            dups.insert(i);
        }
    }
    (firsts, dups)
}

async fn existing_members(
    store: &dyn Store,
    ws: &str,
    list_id: &str,
    ids: &[String],
) -> AppResult<HashSet<String>> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(limits::MAX_BATCH_GET) {
        let keys: Vec<Key> = chunk
            .iter()
            .map(|c| Key::new(keys::list_members(ws, list_id), c))
            .collect();
        for item in store.batch_get(&keys).await? {
            if let Some(sk) = item.str_attr("sk") {
                out.insert(sk.to_string());
            }
        }
    }
    Ok(out)
}

fn results(
    ids: &[String],
    dups: &HashSet<usize>,
    outcome: &HashMap<String, MemberOutcome>,
) -> Vec<MemberResult> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| MemberResult {
            contact_id: id.clone(),
            result: if dups.contains(&i) {
                MemberOutcome::Duplicate
            } else {
                outcome
                    .get(id)
                    .copied()
                    .unwrap_or(MemberOutcome::ContactNotFound)
            },
        })
        .collect()
}

/// Adds contacts to a list. Each membership is written once (conditional put) in the
/// same transaction as the counter change, so the count is exact under concurrency.
pub async fn add_members(
    store: &dyn Store,
    ws: &str,
    list_id: &str,
    change: MembersChange,
) -> AppResult<MembersChanged> {
    validate_ids(&change)?;
    let list = get(store, ws, list_id).await?;
    let (ids, dups) = first_occurrences(&change.contact_ids);
    let valid: Vec<String> = ids
        .iter()
        .filter(|id| Id::is_valid(Id::CONTACT, id))
        .cloned()
        .collect();
    let found: HashSet<String> = contacts::records_by_ids(store, ws, &valid)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let status = if list.double_opt_in {
        MemberStatus::Pending
    } else {
        MemberStatus::Subscribed
    };
    let candidates: Vec<String> = valid.into_iter().filter(|id| found.contains(id)).collect();
    let mut outcome = HashMap::new();
    let changed = apply(
        store,
        ws,
        list_id,
        &candidates,
        Change::Add(status),
        &mut outcome,
    )
    .await?;
    Ok(MembersChanged {
        data: results(&change.contact_ids, &dups, &outcome),
        changed,
    })
}

/// Removes contacts from a list; the counter moves in the same transaction.
pub async fn remove_members(
    store: &dyn Store,
    ws: &str,
    list_id: &str,
    change: MembersChange,
) -> AppResult<MembersChanged> {
    validate_ids(&change)?;
    get(store, ws, list_id).await?;
    let (ids, dups) = first_occurrences(&change.contact_ids);
    let mut outcome: HashMap<String, MemberOutcome> = ids
        .iter()
        .map(|id| (id.clone(), MemberOutcome::NotMember))
        .collect();
    let valid: Vec<String> = ids
        .into_iter()
        .filter(|id| Id::is_valid(Id::CONTACT, id))
        .collect();
    let changed = apply(store, ws, list_id, &valid, Change::Remove, &mut outcome).await?;
    Ok(MembersChanged {
        data: results(&change.contact_ids, &dups, &outcome),
        changed,
    })
}

/// One direction of a bulk membership change.
#[derive(Debug, Clone, Copy)]
enum Change {
    Add(MemberStatus),
    Remove,
}

/// Applies a change to `candidates`, `PER_TX` contacts per transaction: both membership
/// items of each contact and the list's counter move together. A transaction that a
/// concurrent call made stale (a condition failed) is classified again and retried, so
/// each membership is counted exactly once. Returns how many memberships changed.
async fn apply(
    store: &dyn Store,
    ws: &str,
    list_id: &str,
    candidates: &[String],
    change: Change,
    outcome: &mut HashMap<String, MemberOutcome>,
) -> AppResult<usize> {
    let mut changed = 0;
    for chunk in candidates.chunks(PER_TX) {
        let mut pending: Vec<String> = chunk.to_vec();
        for _attempt in 0..4 {
            let existing = existing_members(store, ws, list_id, &pending).await?;
            match change {
                Change::Add(_) => {
                    for id in &existing {
                        outcome.insert(id.clone(), MemberOutcome::AlreadyMember);
                    }
                    pending.retain(|id| !existing.contains(id));
                }
                Change::Remove => pending.retain(|id| existing.contains(id)),
            }
            if pending.is_empty() {
                break;
            }
            let now = Utc::now();
            let mut actions = Vec::with_capacity(pending.len() * 2 + 1);
            for id in &pending {
                let member_key = Key::new(keys::list_members(ws, list_id), id);
                let reverse_key = Key::new(keys::contact_lists(ws, id), list_id);
                match change {
                    Change::Add(status) => {
                        let member = Member {
                            contact_id: id.clone(),
                            status,
                            added_at: now,
                        };
                        actions.push(TxAction::Put {
                            item: to_item(&member_key.pk, &member_key.sk, &member)?,
                            cond: Some(Cond::ItemNotExists),
                        });
                        actions.push(TxAction::Put {
                            item: to_item(&reverse_key.pk, &reverse_key.sk, &member)?,
                            cond: None,
                        });
                    }
                    Change::Remove => {
                        actions.push(TxAction::Delete {
                            key: member_key,
                            cond: Some(Cond::ItemExists),
                        });
                        actions.push(TxAction::Delete {
                            key: reverse_key,
                            cond: None,
                        });
                    }
                }
            }
            let n = pending.len() as i64;
            let (delta, done) = match change {
                Change::Add(_) => (n, MemberOutcome::Added),
                Change::Remove => (-n, MemberOutcome::Removed),
            };
            actions.push(TxAction::Update {
                key: list_key(ws, list_id),
                update: Update::new().add("member_count", delta),
                cond: Some(Cond::ItemExists),
            });
            match store.transact(actions).await {
                Ok(()) => {
                    changed += pending.len();
                    for id in pending.drain(..) {
                        outcome.insert(id, done);
                    }
                    break;
                }
                // The list itself is gone.
                Err(StoreError::TransactionCanceled { failed }) if failed.last() == Some(&true) => {
                    return Err(AppError::NotFound);
                }
                // A concurrent call changed some of them, or a conflict: classify again.
                Err(e) if e.is_condition_failed() || e.is_retryable() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !pending.is_empty() {
            return Err(AppError::Store(StoreError::Throttled));
        }
    }
    Ok(changed)
}

pub async fn members(
    store: &dyn Store,
    ws: &str,
    list_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<Member>> {
    get(store, ws, list_id).await?;
    page_of(store, &keys::list_members(ws, list_id), limit, cursor).await
}

/// Takes a contact out of every list it is in (before the contact is deleted).
pub async fn remove_contact_from_all_lists(
    store: &dyn Store,
    ws: &str,
    contact_id: &str,
) -> AppResult<()> {
    loop {
        let page = store
            .query(Query::partition(keys::contact_lists(ws, contact_id)).limit(100))
            .await?;
        if page.items.is_empty() {
            return Ok(());
        }
        for item in page.items {
            let Some(list_id) = item.str_attr("sk").map(str::to_string) else {
                continue;
            };
            let member = Key::new(keys::list_members(ws, &list_id), contact_id);
            let reverse = Key::new(keys::contact_lists(ws, contact_id), &list_id);
            let tx = store
                .transact(vec![
                    TxAction::Delete {
                        key: member.clone(),
                        cond: Some(Cond::ItemExists),
                    },
                    TxAction::Delete {
                        key: reverse.clone(),
                        cond: None,
                    },
                    TxAction::Update {
                        key: list_key(ws, &list_id),
                        update: Update::new().add("member_count", -1),
                        cond: Some(Cond::ItemExists),
                    },
                ])
                .await;
            match tx {
                Ok(()) => {}
                // The list is gone or the membership already went: just drop the items.
                Err(e) if e.is_condition_failed() => {
                    store
                        .batch_write(vec![BatchOp::Delete(member), BatchOp::Delete(reverse)])
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
