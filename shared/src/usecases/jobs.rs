//! Jobs: long work answered with `202` and a job to poll. The first kind is "delete
//! workspace data": it removes every item of a workspace except the workspace record,
//! its API keys and the job itself, page by page, saving its progress after each page
//! so that it resumes where it stopped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Paged, from_item, lists, page_of, to_item};
use crate::error::{AppError, AppResult};
use crate::keys;
use crate::model::Id;
use crate::ports::store::{BatchOp, Cond, ItemExt, Key, Query, Store, Update, Value, limits};

/// Global partition of pointers to unfinished jobs (ids only), so a restarted runner
/// finds the jobs it has to resume without scanning.
const RUNNING: &str = "jobs#running";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    DeleteWorkspaceData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Completed,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    /// Items removed so far.
    pub deleted_items: i64,
    /// The partition family being worked on (`contacts`, `lists`, …), until done.
    #[serde(default)]
    pub phase: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

fn jobs_pk(ws: &str) -> String {
    keys::ws(ws, keys::JOBS)
}

/// Starts deleting a workspace's data; the caller drives it with [`advance`].
pub async fn start_delete_workspace_data(store: &dyn Store, ws: &str) -> AppResult<Job> {
    let now = Utc::now();
    let job = Job {
        id: Id::generate(Id::JOB),
        kind: JobKind::DeleteWorkspaceData,
        status: JobStatus::Running,
        deleted_items: 0,
        phase: Some(keys::DELETABLE_FAMILIES[0].to_string()),
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    let pointer = std::collections::HashMap::from([
        ("pk".to_string(), Value::S(RUNNING.into())),
        ("sk".to_string(), Value::S(format!("{ws}#{}", job.id))),
    ]);
    store
        .transact(vec![
            crate::ports::store::TxAction::Put {
                item: to_item(&jobs_pk(ws), &job.id, &job)?,
                cond: Some(Cond::ItemNotExists),
            },
            crate::ports::store::TxAction::Put {
                item: pointer,
                cond: None,
            },
        ])
        .await?;
    Ok(job)
}

pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<Job> {
    if !Id::is_valid(Id::JOB, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&Key::new(jobs_pk(ws), id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<Job>> {
    page_of(store, &jobs_pk(ws), limit, cursor).await
}

/// Unfinished jobs of every workspace: (workspace id, job id).
pub async fn unfinished(store: &dyn Store) -> AppResult<Vec<(String, String)>> {
    let mut out = vec![];
    let mut cursor = None;
    loop {
        let page = store
            .query(Query::partition(RUNNING).limit(500).cursor(cursor))
            .await?;
        for item in &page.items {
            if let Some((ws, job)) = item.str_attr("sk").and_then(|s| s.split_once('#')) {
                out.push((ws.to_string(), job.to_string()));
            }
        }
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(out);
        }
    }
}

/// Runs up to `max_pages` pages of a job and saves its progress. Safe to call twice at
/// once or again after a crash: deleting is idempotent and progress is saved per page.
pub async fn advance(
    store: &dyn Store,
    ws: &str,
    job_id: &str,
    max_pages: usize,
) -> AppResult<Job> {
    let mut job = get(store, ws, job_id).await?;
    let mut pages = 0;
    while job.status == JobStatus::Running && pages < max_pages {
        let phase = job.phase.clone().unwrap_or_default();
        let deleted = delete_page(store, ws, &phase, job_id).await?;
        pages += 1;
        let mut update = Update::new()
            .add("deleted_items", deleted as i64)
            .set("updated_at", Value::S(Utc::now().to_rfc3339()));
        if deleted == 0 {
            let next = keys::DELETABLE_FAMILIES
                .iter()
                .skip_while(|f| **f != phase)
                .nth(1);
            match next {
                Some(next) => update = update.set("phase", Value::S(next.to_string())),
                None => {
                    update = update
                        .remove("phase")
                        .set("status", Value::S("completed".into()))
                        .set("finished_at", Value::S(Utc::now().to_rfc3339()));
                }
            }
        }
        let item = store
            .update(
                &Key::new(jobs_pk(ws), job_id),
                update,
                Some(Cond::ItemExists),
            )
            .await?;
        job = from_item(item)?;
        if job.status == JobStatus::Completed {
            store
                .delete(&Key::new(RUNNING, format!("{ws}#{job_id}")), None)
                .await?;
        }
    }
    Ok(job)
}

/// Deletes one page of a partition family; returns how many items went (0 = done).
async fn delete_page(store: &dyn Store, ws: &str, family: &str, job_id: &str) -> AppResult<usize> {
    let pk = keys::ws(ws, family);
    let page = store.query(Query::partition(&pk).limit(100)).await?;
    let mut ops = vec![];
    let mut deleted = 0;
    for item in &page.items {
        let Some(sk) = item.str_attr("sk") else {
            continue;
        };
        if family == keys::JOBS && sk == job_id {
            continue;
        }
        match family {
            keys::LISTS => lists::purge_members(store, ws, sk).await?,
            keys::TEMPLATES => {
                deleted += purge_partition(store, &keys::template_versions(ws, sk)).await?
            }
            keys::CONTACTS => {
                deleted += purge_partition(store, &keys::contact_lists(ws, sk)).await?
            }
            keys::IMPORTS => {
                deleted += purge_partition(store, &keys::import_errors(ws, sk)).await?;
                deleted += purge_partition(store, &keys::import_ledger(ws, sk)).await?;
                store
                    .delete(&Key::new(keys::IMPORTS_RUNNING, format!("{ws}#{sk}")), None)
                    .await?;
            }
            _ => {}
        }
        ops.push(BatchOp::Delete(Key::new(&pk, sk)));
    }
    deleted += ops.len();
    for chunk in ops.chunks(limits::MAX_BATCH_WRITE) {
        store.batch_write(chunk.to_vec()).await?;
    }
    Ok(deleted)
}

async fn purge_partition(store: &dyn Store, pk: &str) -> AppResult<usize> {
    let mut deleted = 0;
    loop {
        let page = store.query(Query::partition(pk).limit(100)).await?;
        if page.items.is_empty() {
            return Ok(deleted);
        }
        let ops: Vec<BatchOp> = page
            .items
            .iter()
            .filter_map(Key::of)
            .map(BatchOp::Delete)
            .collect();
        deleted += ops.len();
        for chunk in ops.chunks(limits::MAX_BATCH_WRITE) {
            store.batch_write(chunk.to_vec()).await?;
        }
    }
}
