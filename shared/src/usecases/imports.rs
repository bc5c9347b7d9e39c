//! CSV imports: create an import (options, where to upload), the file lands, an
//! optional preview, then the streaming run: chunks of rows are deduplicated, checked
//! against suppressions and existing contacts, and written in conditional transactions
//! that carry the import's checkpoint, so a crash at any point resumes exactly; undo
//! walks the import's ledger. docs/imports.md tells the whole story.
//!
//! Write strategy, in one paragraph: for each chunk the runner reads what exists
//! (email pointers, suppressions, contacts, external ids, memberships: batch gets), then
//! splits the chunk into transactions of at most `tx_actions` actions. Each transaction
//! holds the writes of a run of consecutive rows (contact + email item + external-id
//! item + list memberships, all conditional), the list counters, one ledger item (what
//! it wrote, for undo), and the import's update: counters added and the checkpoint
//! (byte offset and line after its last row) set, on the condition that the checkpoint
//! is still the one this transaction starts from and this runner holds the lease. So a
//! transaction applies exactly once, and the checkpoint is always exactly what was
//! written: resume re-reads the file from the checkpoint's byte offset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use utoipa::ToSchema;

use super::contacts::{self, ContactRecord};
use super::lists::{self, Member, MemberStatus};
use super::{Paged, from_item, page_of, suppressions, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::model::csvfile::{self, CellError, Column, ContactRow, FileError, Format, Record};
use crate::model::{Consent, Id, SuppressionReason};
use crate::ports::blobs::{BlobBody, BlobError, Blobs, UploadForm};
use crate::ports::store::{
    BatchOp, Cond, ItemExt, Key, Query, Store, StoreError, TxAction, Update, Value, limits, val,
};

/// Most lists one import adds its contacts to (each costs two actions per row).
pub const MAX_LISTS: usize = 5;
/// Most tags one import adds.
pub const MAX_TAGS: usize = 20;
/// Rows a preview reads.
const PREVIEW_ROWS: usize = 20;

// ---- configuration ------------------------------------------------------------------

/// Tuning of the import runner.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// Most actions in one transaction: 100 on DynamoDB; the test command's emulator
    /// (moto) caps transactions at 25.
    pub tx_actions: usize,
    /// Rows read and decided together (one round of batch reads).
    pub chunk_rows: usize,
    /// A longer record fails alone.
    pub max_row_bytes: usize,
    /// Largest file accepted.
    pub max_file_bytes: u64,
    /// How long a runner's claim on an import lasts without progress.
    pub lease_secs: i64,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            tx_actions: limits::MAX_TRANSACTION_ACTIONS,
            chunk_rows: 1000,
            max_row_bytes: csvfile::DEFAULT_MAX_ROW_BYTES,
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            lease_secs: 120,
        }
    }
}

impl ImportSettings {
    /// The defaults, changed by `MAILPILOT_IMPORT_TX_ACTIONS`, `MAILPILOT_IMPORT_CHUNK_ROWS`,
    /// `MAILPILOT_IMPORT_MAX_ROW_BYTES` and `MAILPILOT_IMPORT_MAX_BYTES` when set.
    pub fn from_env() -> Self {
        fn var<T: std::str::FromStr>(k: &str) -> Option<T> {
            std::env::var(k).ok().and_then(|v| v.trim().parse().ok())
        }
        let d = Self::default();
        Self {
            tx_actions: var::<usize>("MAILPILOT_IMPORT_TX_ACTIONS")
                .map(|n| n.clamp(8, limits::MAX_TRANSACTION_ACTIONS))
                .unwrap_or(d.tx_actions),
            chunk_rows: var::<usize>("MAILPILOT_IMPORT_CHUNK_ROWS")
                .map(|n| n.clamp(1, 100_000))
                .unwrap_or(d.chunk_rows),
            max_row_bytes: var("MAILPILOT_IMPORT_MAX_ROW_BYTES").unwrap_or(d.max_row_bytes),
            max_file_bytes: var("MAILPILOT_IMPORT_MAX_BYTES").unwrap_or(d.max_file_bytes),
            lease_secs: d.lease_secs,
        }
    }
}

/// Starts (or continues) an import's run somewhere: a background task in the runner,
/// a message to the import function's queue in AWS.
#[async_trait]
pub trait ImportStarter: Send + Sync + 'static {
    async fn start(&self, env: &Arc<ImportEnv>, ws: &str, id: &str) -> AppResult<()>;
}

/// What the import use cases need.
pub struct ImportEnv {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn Blobs>,
    pub starter: Arc<dyn ImportStarter>,
    pub settings: ImportSettings,
}

impl ImportEnv {
    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }
}

/// The runner's starter: drives the import in a background task until it ends.
pub struct BackgroundStarter;

#[async_trait]
impl ImportStarter for BackgroundStarter {
    async fn start(&self, env: &Arc<ImportEnv>, ws: &str, id: &str) -> AppResult<()> {
        tokio::spawn(drive(env.clone(), ws.to_string(), id.to_string(), false));
        Ok(())
    }
}

/// Runs an import (or its undo) to its end, retrying after failures. `force` takes the
/// lease from a previous process (the runner at start: that process is gone).
pub async fn drive(env: Arc<ImportEnv>, ws: String, id: String, mut force: bool) {
    let mut pause = Duration::from_millis(100);
    let (started, writes) = (Instant::now(), env.store.writes());
    loop {
        match run(&env, &ws, &id, None, force).await {
            Ok(RunOutcome::Paused) => {}
            Ok(RunOutcome::Done | RunOutcome::Busy) => {
                // The store's own write count: what the benchmark reports per row.
                tracing::info!(
                    import_id = %id,
                    item_writes = env.store.writes() - writes,
                    secs = started.elapsed().as_secs_f64(),
                    "import run ended"
                );
                return;
            }
            Err(AppError::NotFound) => return,
            Err(e) => {
                tracing::warn!(error = %e, import_id = %id, "import step failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        force = false;
    }
}

/// Resumes every import a previous process left running or reverting.
pub async fn resume_all(env: &Arc<ImportEnv>) -> AppResult<usize> {
    let mut cursor = None;
    let mut n = 0;
    loop {
        let page = env
            .store()
            .query(
                Query::partition(keys::IMPORTS_RUNNING)
                    .limit(500)
                    .cursor(cursor),
            )
            .await?;
        for item in &page.items {
            if let Some((ws, id)) = item.str_attr("sk").and_then(|s| s.split_once('#')) {
                tokio::spawn(drive(env.clone(), ws.to_string(), id.to_string(), true));
                n += 1;
            }
        }
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(n);
        }
    }
}

// ---- the import resource ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    /// New contacts only; rows of existing contacts are skipped (`exists`).
    CreateOnly,
    /// Create new contacts and update existing ones.
    #[default]
    Upsert,
    /// Existing contacts only; rows of unknown emails are skipped (`not_found`).
    UpdateOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Waiting for the file, or for `commit` (`auto_commit: false`).
    Pending,
    /// Previewed; `commit` starts it.
    Previewed,
    Running,
    Completed,
    CompletedWithErrors,
    /// The file could not be imported at all (`error` says why).
    Failed,
    /// Undo is in progress.
    Reverting,
    Reverted,
}

impl ImportStatus {
    fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Pending => "pending",
            ImportStatus::Previewed => "previewed",
            ImportStatus::Running => "running",
            ImportStatus::Completed => "completed",
            ImportStatus::CompletedWithErrors => "completed_with_errors",
            ImportStatus::Failed => "failed",
            ImportStatus::Reverting => "reverting",
            ImportStatus::Reverted => "reverted",
        }
    }
}

/// Why a row was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Skip {
    Duplicate,
    Exists,
    NotFound,
    Unsubscribed,
    Bounced,
    Complained,
    Suppressed,
}

impl Skip {
    const ALL: [Skip; 7] = [
        Skip::Duplicate,
        Skip::Exists,
        Skip::NotFound,
        Skip::Unsubscribed,
        Skip::Bounced,
        Skip::Complained,
        Skip::Suppressed,
    ];
    fn name(self) -> &'static str {
        match self {
            Skip::Duplicate => "duplicate",
            Skip::Exists => "exists",
            Skip::NotFound => "not_found",
            Skip::Unsubscribed => "unsubscribed",
            Skip::Bounced => "bounced",
            Skip::Complained => "complained",
            Skip::Suppressed => "suppressed",
        }
    }
    fn attr(self) -> String {
        format!("skipped_{}", self.name())
    }
    fn of(reason: SuppressionReason) -> Skip {
        match reason {
            SuppressionReason::Unsubscribed => Skip::Unsubscribed,
            SuppressionReason::HardBounce => Skip::Bounced,
            SuppressionReason::Complaint => Skip::Complained,
            SuppressionReason::Manual => Skip::Suppressed,
        }
    }
}

/// An import as stored (flat counters, so each transaction can add to them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRecord {
    pub id: String,
    pub status: ImportStatus,
    pub mode: ImportMode,
    #[serde(default)]
    pub list_ids: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub mapping: HashMap<String, String>,
    pub auto_commit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Declared by the user (`None`: sniffed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_delimiter: Option<String>,
    /// The encoding the file is decoded with (declared, default UTF-8).
    pub encoding: String,
    /// Sniffed (or declared) when the run starts: `comma`, `semicolon`, `tab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<Column>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// The checkpoint: where the next unprocessed record starts.
    #[serde(default)]
    pub bytes_processed: u64,
    #[serde(default)]
    pub next_line: u64,
    #[serde(default)]
    pub rows_read: i64,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub updated: i64,
    #[serde(default)]
    pub failed: i64,
    #[serde(default)]
    pub skipped_duplicate: i64,
    #[serde(default)]
    pub skipped_exists: i64,
    #[serde(default)]
    pub skipped_not_found: i64,
    #[serde(default)]
    pub skipped_unsubscribed: i64,
    #[serde(default)]
    pub skipped_bounced: i64,
    #[serde(default)]
    pub skipped_complained: i64,
    #[serde(default)]
    pub skipped_suppressed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub reverted_contacts_deleted: i64,
    #[serde(default)]
    pub reverted_memberships_removed: i64,
    #[serde(default)]
    pub reverted_contacts_kept: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<DateTime<Utc>>,
}

impl ImportRecord {
    fn skipped(&self, s: Skip) -> i64 {
        match s {
            Skip::Duplicate => self.skipped_duplicate,
            Skip::Exists => self.skipped_exists,
            Skip::NotFound => self.skipped_not_found,
            Skip::Unsubscribed => self.skipped_unsubscribed,
            Skip::Bounced => self.skipped_bounced,
            Skip::Complained => self.skipped_complained,
            Skip::Suppressed => self.skipped_suppressed,
        }
    }
    fn format(&self) -> Format {
        Format {
            delimiter: self
                .delimiter
                .as_deref()
                .and_then(|d| csvfile::parse_delimiter(d).ok())
                .unwrap_or(b','),
            encoding: self.encoding.clone(),
            header_offset: 0,
        }
    }
}

/// Rows skipped, by reason.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SkippedCounts {
    /// An earlier row of the file with the same email (the last row wins).
    pub duplicate: i64,
    /// `create_only`: the contact exists.
    pub exists: i64,
    /// `update_only`: no contact has the email.
    pub not_found: i64,
    pub unsubscribed: i64,
    pub bounced: i64,
    pub complained: i64,
    /// Suppressed by hand.
    pub suppressed: i64,
}

/// What undo did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevertCounts {
    /// Contacts the import created, deleted.
    pub contacts_deleted: i64,
    /// Contacts the import updated: they keep their new values.
    pub contacts_kept: i64,
    /// List memberships the import added, removed.
    pub memberships_removed: i64,
}

/// An import as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Import {
    pub id: String,
    pub status: ImportStatus,
    pub mode: ImportMode,
    pub list_ids: Vec<String>,
    pub tags: Vec<String>,
    /// Header → target, as given.
    pub mapping: HashMap<String, String>,
    pub auto_commit: bool,
    pub file_name: Option<String>,
    /// `comma`, `semicolon` or `tab`, once known.
    pub delimiter: Option<String>,
    pub encoding: String,
    /// The file's columns and where each goes, once the run has read the header.
    pub columns: Option<Vec<Column>>,
    pub bytes_total: Option<u64>,
    pub bytes_processed: u64,
    /// Data rows read (blank lines are not rows).
    pub rows_read: i64,
    pub created: i64,
    pub updated: i64,
    pub skipped: SkippedCounts,
    pub failed: i64,
    /// Why the import failed as a whole.
    pub error: Option<String>,
    pub reverted: Option<RevertCounts>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub reverted_at: Option<DateTime<Utc>>,
}

impl From<ImportRecord> for Import {
    fn from(r: ImportRecord) -> Self {
        let skipped = SkippedCounts {
            duplicate: r.skipped(Skip::Duplicate),
            exists: r.skipped(Skip::Exists),
            not_found: r.skipped(Skip::NotFound),
            unsubscribed: r.skipped(Skip::Unsubscribed),
            bounced: r.skipped(Skip::Bounced),
            complained: r.skipped(Skip::Complained),
            suppressed: r.skipped(Skip::Suppressed),
        };
        let reverted = matches!(r.status, ImportStatus::Reverting | ImportStatus::Reverted)
            .then_some(RevertCounts {
                contacts_deleted: r.reverted_contacts_deleted,
                contacts_kept: r.reverted_contacts_kept,
                memberships_removed: r.reverted_memberships_removed,
            });
        Import {
            id: r.id,
            status: r.status,
            mode: r.mode,
            list_ids: r.list_ids,
            tags: r.tags,
            mapping: r.mapping,
            auto_commit: r.auto_commit,
            file_name: r.file_name,
            delimiter: r.delimiter.or(r.declared_delimiter),
            encoding: r.encoding,
            columns: r.columns,
            bytes_total: r.bytes_total,
            bytes_processed: r.bytes_processed,
            rows_read: r.rows_read,
            created: r.created,
            updated: r.updated,
            skipped,
            failed: r.failed,
            error: r.error,
            reverted,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            reverted_at: r.reverted_at,
        }
    }
}

/// `POST /v1/imports` options.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImport {
    /// Lists the imported contacts are added to (at most 5).
    #[serde(default)]
    #[schema(max_items = 5)]
    pub list_ids: Vec<String>,
    #[serde(default)]
    pub mode: Option<ImportMode>,
    /// Column header → `email`, `first_name`, `last_name`, `external_id`, `time_zone`,
    /// `locale`, `ignore` or `attributes.<name>`. Unmapped columns are detected by name;
    /// other columns become attributes.
    #[serde(default)]
    pub mapping: HashMap<String, String>,
    /// Added to each imported contact's `tags` attribute (at most 20).
    #[serde(default)]
    #[schema(max_items = 20)]
    pub tags: Vec<String>,
    /// Start as soon as the file lands (default). With `false`, `commit` starts it.
    #[serde(default)]
    pub auto_commit: Option<bool>,
    /// The file's encoding: `utf-8` (default), `latin1`, `windows-1252`, …
    #[serde(default)]
    pub encoding: Option<String>,
    /// `comma`, `semicolon` or `tab` (default: sniffed from the header).
    #[serde(default)]
    pub delimiter: Option<String>,
    #[serde(default)]
    #[schema(max_length = 255)]
    pub file_name: Option<String>,
}

/// Where to send the file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadTarget {
    /// `PUT` the file's bytes to `url` (the local runner), or `POST` a
    /// `multipart/form-data` form of `fields` plus the file as `file` (S3).
    pub method: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<UploadForm>,
    /// The largest file accepted.
    pub max_bytes: u64,
}

/// `POST /v1/imports` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedImport {
    #[serde(flatten)]
    pub import: Import,
    /// `null` when the file came inline with the request.
    pub upload: Option<UploadTarget>,
}

fn imports_pk(ws: &str) -> String {
    keys::ws(ws, keys::IMPORTS)
}
fn import_key(ws: &str, id: &str) -> Key {
    Key::new(imports_pk(ws), id)
}
fn running_key(ws: &str, id: &str) -> Key {
    Key::new(keys::IMPORTS_RUNNING, format!("{ws}#{id}"))
}
/// Where an import's file lives in the blob store. Its shape is what the import
/// function parses back out of an S3 event's key.
pub fn blob_key(ws: &str, id: &str) -> String {
    format!("imports/{ws}/{id}")
}
/// The (workspace, import) of a blob key, if it is one.
pub fn parse_blob_key(key: &str) -> Option<(String, String)> {
    let mut parts = key.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("imports"), Some(ws), Some(id), None)
            if Id::is_valid(Id::WORKSPACE, ws) && Id::is_valid(Id::IMPORT, id) =>
        {
            Some((ws.to_string(), id.to_string()))
        }
        _ => None,
    }
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

fn blob_err(e: BlobError) -> AppError {
    match e {
        BlobError::NotFound => AppError::conflict("/", "the file has not been uploaded"),
        BlobError::TooLarge(max) => {
            AppError::PayloadTooLarge(format!("the file is larger than {max} bytes"))
        }
        BlobError::Unavailable(e) => AppError::internal(format!("blob store: {e}")),
    }
}

/// Validates the options of a new import (every problem named by its JSON Pointer).
async fn validate(store: &dyn Store, ws: &str, input: &CreateImport) -> AppResult<()> {
    let mut errors = vec![];
    if input.list_ids.len() > MAX_LISTS {
        errors.push(FieldError::new("/list_ids", "at most 5 lists"));
    }
    let mut seen = HashSet::new();
    for (i, id) in input.list_ids.iter().enumerate() {
        if !seen.insert(id) {
            errors.push(FieldError::new(format!("/list_ids/{i}"), "is listed twice"));
        } else if lists::get(store, ws, id).await.is_err() {
            errors.push(FieldError::new(format!("/list_ids/{i}"), "no such list"));
        }
    }
    for (header, target) in &input.mapping {
        if let Err(reason) = csvfile::Target::parse(target) {
            errors.push(FieldError::new(
                format!("/mapping/{}", header.replace('~', "~0").replace('/', "~1")),
                reason,
            ));
        }
    }
    if input.tags.len() > MAX_TAGS {
        errors.push(FieldError::new("/tags", "at most 20 tags"));
    }
    for (i, t) in input.tags.iter().enumerate() {
        if let Err(reason) = crate::model::parse_text(t, 64) {
            errors.push(FieldError::new(format!("/tags/{i}"), reason));
        }
    }
    if let Some(e) = &input.encoding
        && let Err(reason) = csvfile::parse_encoding(e)
    {
        errors.push(FieldError::new("/encoding", reason));
    }
    if let Some(d) = &input.delimiter
        && let Err(reason) = csvfile::parse_delimiter(d)
    {
        errors.push(FieldError::new("/delimiter", reason));
    }
    if let Some(f) = &input.file_name
        && let Err(reason) = crate::model::parse_text(f, 255)
    {
        errors.push(FieldError::new("/file_name", reason));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Invalid(errors))
    }
}

/// Creates an import waiting for its file; returns it with where to upload.
pub async fn create(
    env: &ImportEnv,
    ws: &str,
    input: CreateImport,
    base_url: &str,
) -> AppResult<CreatedImport> {
    validate(env.store(), ws, &input).await?;
    let now = Utc::now();
    let rec = ImportRecord {
        id: Id::generate(Id::IMPORT),
        status: ImportStatus::Pending,
        mode: input.mode.unwrap_or_default(),
        list_ids: input.list_ids,
        tags: input.tags.iter().map(|t| t.trim().to_string()).collect(),
        mapping: input.mapping,
        auto_commit: input.auto_commit.unwrap_or(true),
        file_name: input.file_name.map(|f| f.trim().to_string()),
        declared_delimiter: input
            .delimiter
            .as_deref()
            .and_then(|d| csvfile::parse_delimiter(d).ok())
            .map(|d| delimiter_name(d).to_string()),
        encoding: match &input.encoding {
            Some(e) => csvfile::parse_encoding(e).map_err(|r| AppError::invalid("/encoding", r))?,
            None => "UTF-8".into(),
        },
        delimiter: None,
        columns: None,
        bytes_total: None,
        bytes_processed: 0,
        next_line: 1,
        rows_read: 0,
        created: 0,
        updated: 0,
        failed: 0,
        skipped_duplicate: 0,
        skipped_exists: 0,
        skipped_not_found: 0,
        skipped_unsubscribed: 0,
        skipped_bounced: 0,
        skipped_complained: 0,
        skipped_suppressed: 0,
        error: None,
        reverted_contacts_deleted: 0,
        reverted_memberships_removed: 0,
        reverted_contacts_kept: 0,
        owner: None,
        lease_until: None,
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        reverted_at: None,
    };
    env.store()
        .put(
            to_item(&imports_pk(ws), &rec.id, &rec)?,
            Some(Cond::ItemNotExists),
        )
        .await?;
    let max = env.settings.max_file_bytes;
    let upload = match env
        .blobs
        .upload_form(&blob_key(ws, &rec.id), max)
        .await
        .map_err(blob_err)?
    {
        Some(form) => UploadTarget {
            method: "POST".into(),
            url: form.url.clone(),
            form: Some(form),
            max_bytes: max,
        },
        None => UploadTarget {
            method: "PUT".into(),
            url: format!(
                "{}/v1/imports/{}/file",
                base_url.trim_end_matches('/'),
                rec.id
            ),
            form: None,
            max_bytes: max,
        },
    };
    Ok(CreatedImport {
        import: rec.into(),
        upload: Some(upload),
    })
}

fn delimiter_name(d: u8) -> &'static str {
    match d {
        b';' => "semicolon",
        b'\t' => "tab",
        _ => "comma",
    }
}

pub async fn record(store: &dyn Store, ws: &str, id: &str) -> AppResult<ImportRecord> {
    if !Id::is_valid(Id::IMPORT, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&import_key(ws, id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<Import> {
    Ok(record(store, ws, id).await?.into())
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<Import>> {
    let page: Paged<ImportRecord> = page_of(store, &imports_pk(ws), limit, cursor).await?;
    Ok(Paged {
        data: page.data.into_iter().map(Import::from).collect(),
        next_cursor: page.next_cursor,
    })
}

/// Stores the file sent through the API (the runner's `PUT`, or inline multipart),
/// then registers it as landed.
pub async fn upload(
    env: &Arc<ImportEnv>,
    ws: &str,
    id: &str,
    body: BlobBody,
    max: u64,
) -> AppResult<Import> {
    let rec = record(env.store(), ws, id).await?;
    if rec.bytes_total.is_some() || rec.status != ImportStatus::Pending {
        return Err(AppError::conflict(
            "/",
            "this import already has its file; create a new import for another file",
        ));
    }
    let size = env
        .blobs
        .put(
            &blob_key(ws, id),
            body,
            max.min(env.settings.max_file_bytes),
        )
        .await
        .map_err(blob_err)?;
    file_landed(env, ws, id, size).await?;
    get(env.store(), ws, id).await
}

/// The file of an import has landed (the runner's upload, or an S3 event, perhaps
/// delivered twice). The first call records its size and, with `auto_commit`, starts
/// the import; a repeated call changes nothing and starts nothing. Returns whether
/// this call started it.
pub async fn file_landed(env: &Arc<ImportEnv>, ws: &str, id: &str, size: u64) -> AppResult<bool> {
    let rec = record(env.store(), ws, id).await?;
    if rec.bytes_total.is_some() || rec.status != ImportStatus::Pending {
        return Ok(false);
    }
    let now = Utc::now();
    let mut update = Update::new()
        .set("bytes_total", val::n(size as i64))
        .set("updated_at", val::s(now.to_rfc3339()));
    let start = rec.auto_commit;
    if start {
        update = update
            .set("status", val::s(ImportStatus::Running.as_str()))
            .set("started_at", val::s(now.to_rfc3339()));
    }
    let cond = Cond::And(vec![
        Cond::eq("status", val::s("pending")),
        Cond::AttrNotExists("bytes_total".into()),
    ]);
    let mut actions = vec![TxAction::Update {
        key: import_key(ws, id),
        update,
        cond: Some(cond),
    }];
    if start {
        actions.push(running_pointer(ws, id));
    }
    match env.store().transact(actions).await {
        Ok(()) => {}
        Err(e) if e.is_condition_failed() => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    if start {
        env.starter.start(env, ws, id).await?;
    }
    Ok(start)
}

fn running_pointer(ws: &str, id: &str) -> TxAction {
    let key = running_key(ws, id);
    TxAction::Put {
        item: HashMap::from([
            ("pk".to_string(), Value::S(key.pk)),
            ("sk".to_string(), Value::S(key.sk)),
        ]),
        cond: None,
    }
}

/// Starts an import whose file has landed (`auto_commit: false`, or after a preview).
pub async fn commit(env: &Arc<ImportEnv>, ws: &str, id: &str) -> AppResult<Import> {
    let rec = record(env.store(), ws, id).await?;
    if rec.bytes_total.is_none() {
        return Err(AppError::conflict("/", "upload the file before committing"));
    }
    if !matches!(rec.status, ImportStatus::Pending | ImportStatus::Previewed) {
        return Err(AppError::conflict(
            "/",
            format!("the import is already {}", rec.status.as_str()),
        ));
    }
    let now = Utc::now();
    let actions = vec![
        TxAction::Update {
            key: import_key(ws, id),
            update: Update::new()
                .set("status", val::s(ImportStatus::Running.as_str()))
                .set("started_at", val::s(now.to_rfc3339()))
                .set("updated_at", val::s(now.to_rfc3339())),
            cond: Some(Cond::eq("status", val::s(rec.status.as_str()))),
        },
        running_pointer(ws, id),
    ];
    match env.store().transact(actions).await {
        Ok(()) => {}
        Err(e) if e.is_condition_failed() => {
            return Err(AppError::conflict("/", "the import changed; read it again"));
        }
        Err(e) => return Err(e.into()),
    }
    env.starter.start(env, ws, id).await?;
    get(env.store(), ws, id).await
}

// ---- preview --------------------------------------------------------------------------

/// `POST /v1/imports/{id}/preview` body: corrections to the options (all optional).
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    #[serde(default)]
    pub mapping: Option<HashMap<String, String>>,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub delimiter: Option<String>,
}

/// One sample row, typed as it would be written.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SampleRow {
    pub line: u64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub external_id: Option<String>,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Json>,
}

/// One line of the error report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RowError {
    pub line: u64,
    pub column: String,
    pub value: String,
    pub reason: String,
}

impl From<CellError> for RowError {
    fn from(e: CellError) -> Self {
        RowError {
            line: e.line,
            column: e.column,
            value: e.value,
            reason: e.reason,
        }
    }
}

/// What a preview found; nothing was written.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Preview {
    pub import: Import,
    /// `comma`, `semicolon` or `tab`.
    pub delimiter: String,
    pub encoding: String,
    /// A UTF-8 BOM starts the file.
    pub bom: bool,
    pub columns: Vec<Column>,
    pub sample: Vec<SampleRow>,
    /// Errors in the rows read (at most 20 rows are read).
    pub errors: Vec<RowError>,
    /// Set when rows are not valid UTF-8 and no encoding was declared.
    pub suggested_encoding: Option<String>,
    /// Why the file cannot be imported as it is (no email column, empty, …).
    pub file_error: Option<String>,
}

/// Reads the first rows of the uploaded file with the import's options (corrected by
/// `input`, which is saved) and shows what would be written. Writes no contact.
pub async fn preview(
    env: &ImportEnv,
    ws: &str,
    id: &str,
    input: PreviewInput,
) -> AppResult<Preview> {
    let rec = record(env.store(), ws, id).await?;
    if !matches!(rec.status, ImportStatus::Pending | ImportStatus::Previewed) {
        return Err(AppError::conflict(
            "/",
            format!("the import is already {}", rec.status.as_str()),
        ));
    }
    if rec.bytes_total.is_none() {
        return Err(AppError::conflict("/", "upload the file before previewing"));
    }
    let mut errors = vec![];
    if let Some(m) = &input.mapping {
        for (header, target) in m {
            if let Err(reason) = csvfile::Target::parse(target) {
                errors.push(FieldError::new(
                    format!("/mapping/{}", header.replace('~', "~0").replace('/', "~1")),
                    reason,
                ));
            }
        }
    }
    let encoding = match &input.encoding {
        Some(e) => match csvfile::parse_encoding(e) {
            Ok(e) => e,
            Err(reason) => {
                errors.push(FieldError::new("/encoding", reason));
                rec.encoding.clone()
            }
        },
        None => rec.encoding.clone(),
    };
    let declared = match &input.delimiter {
        Some(d) => match csvfile::parse_delimiter(d) {
            Ok(d) => Some(delimiter_name(d).to_string()),
            Err(reason) => {
                errors.push(FieldError::new("/delimiter", reason));
                None
            }
        },
        None => rec.declared_delimiter.clone(),
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let mapping = input.mapping.clone().unwrap_or(rec.mapping.clone());
    let reader = env
        .blobs
        .read_from(&blob_key(ws, id), 0)
        .await
        .map_err(blob_err)?;
    let max_row = env.settings.max_row_bytes;
    let declared_byte = declared
        .as_deref()
        .and_then(|d| csvfile::parse_delimiter(d).ok());
    let enc = encoding.clone();
    let map = mapping.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        scan(bridge, declared_byte, &enc, max_row, &map)
    })
    .await
    .map_err(AppError::internal)?;
    let now = Utc::now();
    let mut update = Update::new()
        .set("status", val::s(ImportStatus::Previewed.as_str()))
        .set("encoding", val::s(encoding.clone()))
        .set("updated_at", val::s(now.to_rfc3339()))
        .set("mapping", mapping_value(&mapping));
    update = match &declared {
        Some(d) => update.set("declared_delimiter", val::s(d.clone())),
        None => update.remove("declared_delimiter"),
    };
    let item = env
        .store()
        .update(
            &import_key(ws, id),
            update,
            Some(Cond::Or(vec![
                Cond::eq("status", val::s("pending")),
                Cond::eq("status", val::s("previewed")),
            ])),
        )
        .await
        .map_err(|e| {
            if e.is_condition_failed() {
                AppError::conflict("/", "the import started meanwhile")
            } else {
                e.into()
            }
        })?;
    let import: Import = from_item::<ImportRecord>(item)?.into();
    let mut p = Preview {
        import,
        delimiter: String::new(),
        encoding: encoding.clone(),
        bom: false,
        columns: vec![],
        sample: vec![],
        errors: vec![],
        suggested_encoding: None,
        file_error: None,
    };
    match scanned {
        Err((format, e)) => {
            if let Some(f) = format {
                p.delimiter = delimiter_name(f.delimiter).into();
                p.bom = f.header_offset == 3;
            }
            p.file_error = Some(e.to_string());
        }
        Ok((format, columns, records)) => {
            p.delimiter = delimiter_name(format.delimiter).into();
            p.bom = format.header_offset == 3;
            p.columns = columns;
            for r in records {
                match r {
                    Record::Row(r) => p.sample.push(SampleRow {
                        line: r.line,
                        email: r.email.as_str().to_string(),
                        first_name: r.first_name,
                        last_name: r.last_name,
                        external_id: r.external_id,
                        time_zone: r.time_zone,
                        locale: r.locale,
                        attributes: r.attributes,
                    }),
                    Record::Failed(errs) => p.errors.extend(errs.into_iter().map(RowError::from)),
                }
            }
            if encoding == "UTF-8"
                && p.errors
                    .iter()
                    .any(|e| e.reason.contains("not valid UTF-8"))
            {
                p.suggested_encoding = Some("windows-1252".into());
            }
        }
    }
    Ok(p)
}

type Scanned = Result<(Format, Vec<Column>, Vec<Record>), (Option<Format>, FileError)>;

fn scan<R: std::io::Read>(
    input: R,
    delimiter: Option<u8>,
    encoding: &str,
    max_row: usize,
    mapping: &HashMap<String, String>,
) -> Scanned {
    let (format, headers, mut rows) =
        csvfile::open(input, delimiter, encoding, max_row).map_err(|e| (None, e))?;
    let columns =
        csvfile::resolve_columns(&headers, mapping).map_err(|e| (Some(format.clone()), e))?;
    rows.set_columns(columns.clone());
    let mut out = vec![];
    while out.len() < PREVIEW_ROWS {
        match rows.next_record() {
            Ok(Some(r)) => out.push(r),
            Ok(None) => break,
            Err(e) => return Err((Some(format), e)),
        }
    }
    Ok((format, columns, out))
}

fn mapping_value(m: &HashMap<String, String>) -> Value {
    Value::M(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::S(v.clone())))
            .collect(),
    )
}

// ---- the error report -----------------------------------------------------------------

/// Most lines the CSV error report holds (a larger report says it was cut).
pub const MAX_REPORT_LINES: usize = 100_000;

/// The error report as CSV (`line,column,value,reason`), in line order.
pub async fn errors_csv(store: &dyn Store, ws: &str, id: &str) -> AppResult<String> {
    record(store, ws, id).await?;
    let mut out = String::from("line,column,value,reason\n");
    let mut cursor = None;
    let mut n = 0;
    loop {
        let page = store
            .query(
                Query::partition(keys::import_errors(ws, id))
                    .limit(1000)
                    .cursor(cursor),
            )
            .await?;
        for item in page.items {
            let e: RowError = from_item(item)?;
            if n == MAX_REPORT_LINES {
                out.push_str(",,,\"the report was cut at 100000 lines\"\n");
                return Ok(out);
            }
            n += 1;
            out.push_str(&format!(
                "{},{},{},{}\n",
                e.line,
                csv_field(&e.column),
                csv_field(&e.value),
                csv_field(&e.reason)
            ));
        }
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(out);
        }
    }
}

fn csv_field(s: &str) -> String {
    // A leading = + - @ would run as a formula in a spreadsheet: quote it with a '.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Error-report rows, decoded (for tests and the API's JSON consumers).
pub async fn error_rows(store: &dyn Store, ws: &str, id: &str) -> AppResult<Vec<RowError>> {
    let mut out = vec![];
    let mut cursor = None;
    loop {
        let page = store
            .query(
                Query::partition(keys::import_errors(ws, id))
                    .limit(1000)
                    .cursor(cursor),
            )
            .await?;
        for item in page.items {
            out.push(from_item(item)?);
        }
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(out);
        }
    }
}

// ---- the run ------------------------------------------------------------------------

/// How a call to [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Nothing left to do (finished, failed, reverted, or not started).
    Done,
    /// The deadline came: call again (a continuation) to go on from the checkpoint.
    Paused,
    /// Another runner holds the import's lease.
    Busy,
}

/// Test hook: stop the run (as a crash would) after this many transactions.
#[derive(Debug, Default, Clone, Copy)]
pub struct StopAfter(pub Option<usize>);

/// Runs an import (or its undo) from its checkpoint until it ends or `deadline`
/// comes. Safe to call twice at once or after a crash: a lease keeps one runner at a
/// time, and every transaction is conditional on the checkpoint it starts from.
pub async fn run(
    env: &Arc<ImportEnv>,
    ws: &str,
    id: &str,
    deadline: Option<Instant>,
    force: bool,
) -> AppResult<RunOutcome> {
    run_with(env, ws, id, deadline, force, StopAfter::default()).await
}

pub async fn run_with(
    env: &Arc<ImportEnv>,
    ws: &str,
    id: &str,
    deadline: Option<Instant>,
    force: bool,
    stop: StopAfter,
) -> AppResult<RunOutcome> {
    let owner = Id::generate("run");
    let Some(rec) = claim(env.store(), ws, id, &owner, force, env.settings.lease_secs).await?
    else {
        let rec = record(env.store(), ws, id).await?;
        return Ok(
            if matches!(rec.status, ImportStatus::Running | ImportStatus::Reverting) {
                RunOutcome::Busy
            } else {
                RunOutcome::Done
            },
        );
    };
    let outcome = match rec.status {
        ImportStatus::Running => {
            Runner {
                env,
                ws,
                id,
                owner: &owner,
                deadline,
                stop_after: stop.0,
                transactions: 0,
                lists: HashMap::new(),
            }
            .run_file(rec)
            .await
        }
        ImportStatus::Reverting => revert(env, ws, id, &owner, deadline).await,
        _ => Ok(RunOutcome::Done),
    }?;
    if outcome == RunOutcome::Paused {
        // Hand the lease back, so the continuation can claim it at once.
        match env
            .store()
            .update(
                &import_key(ws, id),
                Update::new().remove("owner").remove("lease_until"),
                Some(Cond::eq("owner", val::s(owner.as_str()))),
            )
            .await
        {
            Ok(_) | Err(StoreError::ConditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(outcome)
}

/// Takes the import's lease when it is free (or expired, or `force`).
async fn claim(
    store: &dyn Store,
    ws: &str,
    id: &str,
    owner: &str,
    force: bool,
    lease_secs: i64,
) -> AppResult<Option<ImportRecord>> {
    let now = now_secs();
    let status = Cond::Or(vec![
        Cond::eq("status", val::s("running")),
        Cond::eq("status", val::s("reverting")),
    ]);
    let cond = if force {
        status
    } else {
        Cond::And(vec![
            status,
            Cond::Or(vec![
                Cond::AttrNotExists("lease_until".into()),
                Cond::lt("lease_until", val::n(now)),
            ]),
        ])
    };
    match store
        .update(
            &import_key(ws, id),
            Update::new()
                .set("owner", val::s(owner))
                .set("lease_until", val::n(now + lease_secs)),
            Some(Cond::And(vec![Cond::ItemExists, cond])),
        )
        .await
    {
        Ok(item) => Ok(Some(from_item(item)?)),
        Err(StoreError::ConditionFailed) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The condition every checkpoint write carries: this runner holds the lease and the
/// checkpoint is the one it read.
fn checkpoint_cond(owner: &str, offset: u64) -> Cond {
    Cond::And(vec![
        Cond::eq("owner", val::s(owner)),
        Cond::eq("bytes_processed", val::n(offset as i64)),
    ])
}

/// One record read, with the checkpoint after it.
struct Read {
    record: Record,
    offset: u64,
    line: u64,
}

enum Chunk {
    Records(Vec<Read>),
    Failed(FileError),
}

/// Counters one transaction adds to the import.
#[derive(Debug, Default, Clone)]
struct Counts {
    rows_read: i64,
    created: i64,
    updated: i64,
    failed: i64,
    skipped: HashMap<Skip, i64>,
}

impl Counts {
    fn skip(&mut self, s: Skip) {
        *self.skipped.entry(s).or_default() += 1;
    }
}

/// What one committed transaction wrote, for undo.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LedgerEntry {
    /// Contact id.
    c: String,
    /// Created by this import (else updated).
    n: bool,
    /// Lists it was added to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    l: Vec<String>,
}

/// One row's decided writes.
struct Planned {
    read_index: usize,
    actions: Vec<TxAction>,
    ledger: Option<LedgerEntry>,
    /// Lists whose counter this row moves by one.
    lists: Vec<String>,
}

struct Runner<'a> {
    env: &'a Arc<ImportEnv>,
    ws: &'a str,
    id: &'a str,
    owner: &'a str,
    deadline: Option<Instant>,
    stop_after: Option<usize>,
    transactions: usize,
    /// The target lists' double opt-in setting.
    lists: HashMap<String, bool>,
}

/// Where the run should stop after a failed write.
enum Stop {
    /// Another runner holds the import now.
    Lost,
    /// Retry from the checkpoint after a pause.
    Retry(AppError),
}

impl Runner<'_> {
    fn store(&self) -> &dyn Store {
        self.env.store.as_ref()
    }

    async fn run_file(&mut self, mut rec: ImportRecord) -> AppResult<RunOutcome> {
        for list_id in &rec.list_ids {
            match lists::get(self.store(), self.ws, list_id).await {
                Ok(l) => {
                    self.lists.insert(list_id.clone(), l.double_opt_in);
                }
                Err(AppError::NotFound) => {
                    return self
                        .fail(&rec, format!("the list {list_id} no longer exists"))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
        if rec.columns.is_none() {
            match self.read_header(&rec).await? {
                Ok(r) => rec = r,
                Err(e) => return self.fail(&rec, e.to_string()).await,
            }
        }
        let mut failures = 0u32;
        loop {
            match self.stream(&rec).await {
                Ok(outcome) => return Ok(outcome),
                Err(Stop::Lost) => return Ok(RunOutcome::Busy),
                Err(Stop::Retry(e)) => {
                    failures += 1;
                    if failures > 8 {
                        return Err(e);
                    }
                    tracing::info!(error = %e, import_id = self.id, "import chunk failed; resuming from the checkpoint");
                    let pause = Duration::from_millis(50u64 << failures.min(6));
                    tokio::time::sleep(pause).await;
                    rec = record(self.store(), self.ws, self.id).await?;
                    if rec.owner.as_deref() != Some(self.owner) {
                        return Ok(RunOutcome::Busy);
                    }
                    if rec.status != ImportStatus::Running {
                        return Ok(RunOutcome::Done);
                    }
                }
            }
        }
    }

    /// Reads the header from the file's start and saves the format and columns.
    async fn read_header(&self, rec: &ImportRecord) -> AppResult<Result<ImportRecord, FileError>> {
        let reader = match self
            .env
            .blobs
            .read_from(&blob_key(self.ws, self.id), 0)
            .await
        {
            Ok(r) => r,
            Err(BlobError::NotFound) => {
                return Ok(Err(FileError::Io("the uploaded file is gone".into())));
            }
            Err(e) => return Err(blob_err(e)),
        };
        let declared = rec
            .declared_delimiter
            .as_deref()
            .and_then(|d| csvfile::parse_delimiter(d).ok());
        let encoding = rec.encoding.clone();
        let mapping = rec.mapping.clone();
        let max_row = self.env.settings.max_row_bytes;
        let header = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            let (format, headers, rows) = csvfile::open(bridge, declared, &encoding, max_row)?;
            let columns = csvfile::resolve_columns(&headers, &mapping)?;
            Ok::<_, FileError>((format, columns, rows.offset(), rows.line()))
        })
        .await
        .map_err(AppError::internal)?;
        let (format, columns, offset, line) = match header {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let columns_value = serde_dynamo::to_attribute_value(&columns)?;
        let item = self
            .store()
            .update(
                &import_key(self.ws, self.id),
                Update::new()
                    .set("delimiter", val::s(delimiter_name(format.delimiter)))
                    .set("columns", columns_value)
                    .set("bytes_processed", val::n(offset as i64))
                    .set("next_line", val::n(line as i64))
                    .set("updated_at", val::s(Utc::now().to_rfc3339())),
                Some(checkpoint_cond(self.owner, 0)),
            )
            .await;
        match item {
            Ok(item) => Ok(Ok(from_item(item)?)),
            Err(e) if e.is_condition_failed() => Err(AppError::conflict(
                "/",
                "another runner took the import over",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks the import failed as a whole.
    async fn fail(&self, rec: &ImportRecord, reason: String) -> AppResult<RunOutcome> {
        let now = Utc::now().to_rfc3339();
        let actions = vec![
            TxAction::Update {
                key: import_key(self.ws, self.id),
                update: Update::new()
                    .set("status", val::s(ImportStatus::Failed.as_str()))
                    .set("error", val::s(reason))
                    .set("finished_at", val::s(now.clone()))
                    .set("updated_at", val::s(now))
                    .remove("owner")
                    .remove("lease_until"),
                cond: Some(checkpoint_cond(self.owner, rec.bytes_processed)),
            },
            TxAction::Delete {
                key: running_key(self.ws, self.id),
                cond: None,
            },
        ];
        match self.store().transact(actions).await {
            Ok(()) => Ok(RunOutcome::Done),
            Err(e) if e.is_condition_failed() => Ok(RunOutcome::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams the file from the checkpoint, chunk by chunk, until the end (or the
    /// deadline, or a failed write).
    async fn stream(&mut self, rec: &ImportRecord) -> Result<RunOutcome, Stop> {
        let reader = self
            .env
            .blobs
            .read_from(&blob_key(self.ws, self.id), rec.bytes_processed)
            .await
            .map_err(|e| Stop::Retry(blob_err(e)))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
        let format = rec.format();
        let columns = rec.columns.clone().unwrap_or_default();
        let (offset, line) = (rec.bytes_processed, rec.next_line);
        let chunk_rows = self.env.settings.chunk_rows.max(1);
        let max_row = self.env.settings.max_row_bytes;
        // The csv crate is synchronous: it reads on a blocking thread through a bridge
        // from the async body, a chunk at a time, never holding the file.
        let parser = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            let mut rows = csvfile::Rows::new(bridge, &format, offset, line, columns, max_row);
            loop {
                let mut chunk = Vec::with_capacity(chunk_rows);
                while chunk.len() < chunk_rows {
                    match rows.next_record() {
                        Ok(Some(record)) => chunk.push(Read {
                            record,
                            offset: rows.offset(),
                            line: rows.line(),
                        }),
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.blocking_send(Chunk::Failed(e));
                            return;
                        }
                    }
                }
                let last = chunk.len() < chunk_rows;
                if !chunk.is_empty() && tx.blocking_send(Chunk::Records(chunk)).is_err() {
                    return;
                }
                if last {
                    return;
                }
            }
        });
        let mut checkpoint = rec.bytes_processed;
        let mut any_failed = rec.failed > 0;
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Chunk::Failed(e) => {
                    drop(rx);
                    let _ = parser.await;
                    return Err(Stop::Retry(AppError::internal(e)));
                }
                Chunk::Records(reads) => {
                    let outcome = self.write_chunk(rec, &mut checkpoint, reads).await;
                    match outcome {
                        Ok(failed) => any_failed |= failed,
                        Err(stop) => {
                            drop(rx);
                            let _ = parser.await;
                            return Err(stop);
                        }
                    }
                    if self.stop_after.is_some_and(|n| self.transactions >= n) {
                        drop(rx);
                        let _ = parser.await;
                        return Ok(RunOutcome::Paused);
                    }
                    if self.deadline.is_some_and(|d| Instant::now() >= d) {
                        drop(rx);
                        let _ = parser.await;
                        return Ok(RunOutcome::Paused);
                    }
                }
            }
        }
        let _ = parser.await;
        self.finish(checkpoint, any_failed)
            .await
            .map_err(Stop::Retry)
    }

    async fn finish(&self, checkpoint: u64, any_failed: bool) -> AppResult<RunOutcome> {
        let status = if any_failed {
            ImportStatus::CompletedWithErrors
        } else {
            ImportStatus::Completed
        };
        let now = Utc::now().to_rfc3339();
        let actions = vec![
            TxAction::Update {
                key: import_key(self.ws, self.id),
                update: Update::new()
                    .set("status", val::s(status.as_str()))
                    .set("finished_at", val::s(now.clone()))
                    .set("updated_at", val::s(now))
                    .remove("owner")
                    .remove("lease_until"),
                cond: Some(checkpoint_cond(self.owner, checkpoint)),
            },
            TxAction::Delete {
                key: running_key(self.ws, self.id),
                cond: None,
            },
        ];
        match self.store().transact(actions).await {
            Ok(()) => {
                // The file has been read; S3's lifecycle rule would remove it anyway.
                if let Err(e) = self.env.blobs.delete(&blob_key(self.ws, self.id)).await {
                    tracing::warn!(error = %e, import_id = self.id, "could not delete the uploaded file");
                }
                Ok(RunOutcome::Done)
            }
            Err(e) if e.is_condition_failed() => Ok(RunOutcome::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// Decides and writes one chunk. Returns whether any row failed.
    async fn write_chunk(
        &mut self,
        rec: &ImportRecord,
        checkpoint: &mut u64,
        reads: Vec<Read>,
    ) -> Result<bool, Stop> {
        let retry = Stop::Retry;
        let mut counts: Vec<Counts> = (0..reads.len()).map(|_| Counts::default()).collect();
        let mut reports: Vec<RowError> = vec![];
        let mut any_failed = false;

        // 1. Rows that parsed; failed ones go to the report.
        let mut live: Vec<(usize, &ContactRow)> = vec![];
        for (i, r) in reads.iter().enumerate() {
            counts[i].rows_read = 1;
            match &r.record {
                Record::Failed(errs) => {
                    counts[i].failed = 1;
                    any_failed = true;
                    reports.extend(errs.iter().cloned().map(RowError::from));
                }
                Record::Row(row) => live.push((i, row)),
            }
        }

        // 2. Read what exists.
        let store = self.store();
        let emails: Vec<String> = live
            .iter()
            .map(|(_, r)| r.email.as_str().to_string())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let suppressed = suppressions::reasons_for(store, self.ws, &emails)
            .await
            .map_err(retry)?;
        let pointers = batch_pointers(
            store,
            emails
                .iter()
                .map(|e| contacts::email_key(self.ws, e))
                .collect(),
        )
        .await
        .map_err(retry)?;
        let existing_ids: Vec<String> = pointers.values().cloned().collect();
        let existing: HashMap<String, ContactRecord> =
            contacts::records_by_ids(store, self.ws, &existing_ids)
                .await
                .map_err(retry)?
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect();
        let ext_keys: Vec<Key> = live
            .iter()
            .filter_map(|(_, r)| r.external_id.as_deref())
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|e| contacts::external_id_key(self.ws, e))
            .collect();
        let ext_owners = batch_pointers(store, ext_keys).await.map_err(retry)?;
        let ws = self.ws;
        let member_keys: Vec<Key> = existing
            .keys()
            .flat_map(|c| {
                rec.list_ids
                    .iter()
                    .map(move |l| Key::new(keys::list_members(ws, l), c))
            })
            .collect();
        let members: HashSet<Key> = batch_existing(store, member_keys).await.map_err(retry)?;

        // 3. Decide each row on what existed before this import (so the decision does
        // not depend on where chunks start): suppressed, mode, external id.
        let mut candidates: Vec<(usize, &ContactRow, Option<&ContactRecord>, Option<u64>)> = vec![];
        let mut claimed_ext: HashMap<String, &str> = HashMap::new();
        for (i, row) in live {
            let email = row.email.as_str();
            if let Some(reason) = suppressed.get(email) {
                let skip = Skip::of(*reason);
                counts[i].skip(skip);
                reports.push(RowError {
                    line: row.line,
                    column: "email".into(),
                    value: email.into(),
                    reason: format!("skipped: {} (the address is suppressed)", skip.name()),
                });
                continue;
            }
            let pointer = contacts::email_key(self.ws, email);
            let current = pointers.get(&pointer).and_then(|id| existing.get(id));
            if pointers.contains_key(&pointer) && current.is_none() {
                counts[i].failed = 1;
                any_failed = true;
                reports.push(RowError {
                    line: row.line,
                    column: "email".into(),
                    value: email.into(),
                    reason: "the contact with this email is being deleted; import it again".into(),
                });
                continue;
            }
            // An earlier chunk of this same import wrote this email.
            let earlier = current
                .filter(|c| c.import_id.as_deref() == Some(self.id))
                .and_then(|c| c.import_line);
            if earlier.is_none() {
                match (rec.mode, current.is_some()) {
                    (ImportMode::CreateOnly, true) => {
                        counts[i].skip(Skip::Exists);
                        reports.push(skip_report(
                            row,
                            Skip::Exists,
                            "a contact with this email exists",
                        ));
                        continue;
                    }
                    (ImportMode::UpdateOnly, false) => {
                        counts[i].skip(Skip::NotFound);
                        reports.push(skip_report(
                            row,
                            Skip::NotFound,
                            "no contact has this email",
                        ));
                        continue;
                    }
                    _ => {}
                }
            }
            // The external id must not belong to another contact (nor be claimed by a
            // row of another email in this chunk).
            if let Some(ext) = &row.external_id {
                let mine = current.and_then(|c| c.external_id.as_deref()) == Some(ext.as_str());
                let owner = ext_owners.get(&contacts::external_id_key(self.ws, ext));
                let taken = owner.is_some_and(|o| Some(o) != current.map(|c| &c.id));
                let claimed = *claimed_ext.entry(ext.clone()).or_insert(email) != email;
                if !mine && (taken || claimed) {
                    counts[i].failed = 1;
                    any_failed = true;
                    reports.push(RowError {
                        line: row.line,
                        column: "external_id".into(),
                        value: ext.clone(),
                        reason: "another contact has this external_id".into(),
                    });
                    continue;
                }
            }
            candidates.push((i, row, current, earlier));
        }

        // 4. Inside the file, the last row of an email wins: earlier rows of the chunk
        // are duplicates here; one an earlier chunk wrote is found by the contact's
        // `import_line` (then this row inherits its counted outcome).
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, row, _, _) in &candidates {
            last.insert(row.email.as_str(), *i);
        }
        let now = Utc::now();
        let mut planned: Vec<Planned> = vec![];
        for (i, row, current, earlier) in candidates {
            let email = row.email.as_str();
            let winner = last[email];
            if winner != i {
                counts[i].skip(Skip::Duplicate);
                reports.push(duplicate_report(row.line, email, line_of(&reads[winner])));
                continue;
            }
            match self.plan_row(rec, row, current, &members, now) {
                Ok(mut p) => {
                    p.read_index = i;
                    match (current, earlier) {
                        (_, Some(earlier_line)) => {
                            counts[i].skip(Skip::Duplicate);
                            reports.push(duplicate_report(earlier_line, email, row.line));
                            p.ledger = None;
                        }
                        (Some(_), None) => counts[i].updated = 1,
                        (None, _) => counts[i].created = 1,
                    }
                    planned.push(p);
                }
                Err(e) => {
                    counts[i].failed = 1;
                    any_failed = true;
                    reports.push(e);
                }
            }
        }

        // 5. The report first: idempotent puts keyed by line, so a retry rewrites them.
        // Reports name the file's own header (`E-mail`), not the field (`email`).
        let header_of = |field: &str| {
            rec.columns
                .iter()
                .flatten()
                .find(|c| c.target == field)
                .map(|c| c.header.clone())
        };
        let (email_header, ext_header) = (header_of("email"), header_of("external_id"));
        for r in &mut reports {
            let header = match r.column.as_str() {
                "email" => &email_header,
                "external_id" => &ext_header,
                _ => continue,
            };
            if let Some(h) = header {
                r.column = h.clone();
            }
        }
        let mut ops = Vec::with_capacity(reports.len());
        let mut per_line: HashMap<u64, usize> = HashMap::new();
        for r in &reports {
            let n = per_line.entry(r.line).or_default();
            let sk = format!("{:012}#{:02}", r.line, n);
            *n += 1;
            ops.push(BatchOp::Put(
                to_item(&keys::import_errors(self.ws, self.id), &sk, r).map_err(retry)?,
            ));
        }
        // (They are written first, with the chunk's transactions: see step 7.)

        // 6. Group consecutive rows into transactions, each ending with the checkpoint.
        let budget = self.env.settings.tx_actions.max(4);
        let overhead = 2 + rec.list_ids.len();
        let mut groups: Vec<Vec<TxAction>> = vec![];
        let mut by_row: HashMap<usize, Planned> =
            planned.into_iter().map(|p| (p.read_index, p)).collect();
        let mut start = 0usize;
        let mut from = *checkpoint;
        while start < reads.len() {
            let mut actions: Vec<TxAction> = vec![];
            let mut ledger: Vec<LedgerEntry> = vec![];
            let mut list_deltas: BTreeMap<String, i64> = BTreeMap::new();
            let mut sum = Counts::default();
            let mut end = start;
            while end < reads.len() {
                let n = by_row.get(&end).map(|p| p.actions.len()).unwrap_or(0);
                if end > start && actions.len() + n + overhead > budget {
                    break;
                }
                if let Some(p) = by_row.remove(&end) {
                    actions.extend(p.actions);
                    ledger.extend(p.ledger);
                    for l in p.lists {
                        *list_deltas.entry(l).or_default() += 1;
                    }
                }
                add_counts(&mut sum, &counts[end]);
                end += 1;
            }
            let last = &reads[end - 1];
            let first_line = line_of(&reads[start]);
            for (list_id, delta) in list_deltas {
                actions.push(TxAction::Update {
                    key: lists::list_key(self.ws, &list_id),
                    update: Update::new().add("member_count", delta),
                    cond: Some(Cond::ItemExists),
                });
            }
            if !ledger.is_empty() {
                let mut item = HashMap::new();
                item.insert(
                    "pk".to_string(),
                    val::s(keys::import_ledger(self.ws, self.id)),
                );
                item.insert("sk".to_string(), val::s(format!("{first_line:012}")));
                item.insert(
                    "rows".to_string(),
                    val::s(
                        serde_json::to_string(&ledger).map_err(|e| retry(AppError::internal(e)))?,
                    ),
                );
                actions.push(TxAction::Put { item, cond: None });
            }
            let mut update = Update::new()
                .set("bytes_processed", val::n(last.offset as i64))
                .set("next_line", val::n(last.line as i64))
                .set(
                    "lease_until",
                    val::n(now_secs() + self.env.settings.lease_secs),
                )
                .set("updated_at", val::s(now.to_rfc3339()))
                .add("rows_read", sum.rows_read)
                .add("created", sum.created)
                .add("updated", sum.updated)
                .add("failed", sum.failed);
            for s in Skip::ALL {
                if let Some(n) = sum.skipped.get(&s) {
                    update = update.add(s.attr(), *n);
                }
            }
            // The import's own update goes first, so index 0 tells a lost checkpoint.
            actions.insert(
                0,
                TxAction::Update {
                    key: import_key(self.ws, self.id),
                    update,
                    cond: Some(checkpoint_cond(self.owner, from)),
                },
            );
            groups.push(actions);
            from = last.offset;
            start = end;
        }
        let total = groups.len();
        let allowed = match self.stop_after {
            Some(n) => n.saturating_sub(self.transactions).min(total),
            None => total,
        };
        groups.truncate(allowed);
        let offsets = group_offsets(&groups);
        // 7. The report entries, then the transactions. Each transaction carries its
        // checkpoint, so the embedded engine need not fsync every chunk: a crash loses
        // whole chunks, checkpoints included, and the run redoes them.
        let (done, err) = store.transact_seq_relaxed(ops, groups).await;
        self.transactions += done;
        if done > 0 {
            *checkpoint = offsets[done - 1];
        }
        match err {
            None => Ok(any_failed),
            Some(StoreError::TransactionCanceled { failed }) if failed.first() == Some(&true) => {
                Err(Stop::Lost)
            }
            Some(e) => Err(retry(e.into())),
        }
    }

    /// The writes of one row: the contact (new, or updated on the version read), its
    /// email and external-id items, and the memberships it does not have yet.
    fn plan_row(
        &self,
        rec: &ImportRecord,
        row: &ContactRow,
        current: Option<&ContactRecord>,
        members: &HashSet<Key>,
        now: DateTime<Utc>,
    ) -> Result<Planned, RowError> {
        let ws = self.ws;
        let mut c = match current {
            Some(c) => c.clone(),
            None => ContactRecord {
                id: Id::generate(Id::CONTACT),
                email: row.email.as_str().to_string(),
                first_name: None,
                last_name: None,
                time_zone: None,
                locale: None,
                external_id: None,
                consent: None,
                attributes: "{}".into(),
                created_at: now,
                updated_at: now,
                version: 0,
                import_id: None,
                import_line: None,
            },
        };
        let old_ext = c.external_id.clone();
        let set = |slot: &mut Option<String>, v: &Option<String>| {
            if let Some(v) = v {
                *slot = Some(v.clone());
            }
        };
        set(&mut c.first_name, &row.first_name);
        set(&mut c.last_name, &row.last_name);
        set(&mut c.time_zone, &row.time_zone);
        set(&mut c.locale, &row.locale);
        set(&mut c.external_id, &row.external_id);
        if c.consent.is_none() {
            c.consent = Some(Consent {
                source: format!("import:{}", self.id),
                at: now,
                ip: None,
            });
        }
        if !row.attributes.is_empty() || !rec.tags.is_empty() {
            let mut attrs: Map<String, Json> =
                serde_json::from_str(&c.attributes).unwrap_or_default();
            for (k, v) in &row.attributes {
                attrs.insert(k.clone(), v.clone());
            }
            if !rec.tags.is_empty() {
                let mut tags: Vec<Json> = match attrs.remove("tags") {
                    Some(Json::Array(a)) => a,
                    Some(other) => vec![other],
                    None => vec![],
                };
                for t in &rec.tags {
                    let t = Json::String(t.clone());
                    if !tags.contains(&t) {
                        tags.push(t);
                    }
                }
                attrs.insert("tags".into(), Json::Array(tags));
            }
            let encoded = Json::Object(attrs).to_string();
            if encoded.len() > contacts::MAX_ATTRIBUTES_BYTES {
                return Err(RowError {
                    line: row.line,
                    column: String::new(),
                    value: String::new(),
                    reason: "the contact's attributes would be larger than 64 KB".into(),
                });
            }
            c.attributes = encoded;
        }
        let old_version = c.version;
        c.version += 1;
        c.updated_at = now;
        c.import_id = Some(self.id.to_string());
        c.import_line = Some(row.line);
        let internal = |e: AppError| RowError {
            line: row.line,
            column: String::new(),
            value: String::new(),
            reason: format!("could not be encoded: {e}"),
        };
        let item = to_item(&contacts::contacts_pk(ws), &c.id, &c).map_err(internal)?;
        let mut actions = vec![];
        let created = current.is_none();
        if created {
            actions.push(TxAction::Put {
                item,
                cond: Some(Cond::ItemNotExists),
            });
            actions.push(TxAction::Put {
                item: contacts::pointer_item(&contacts::email_key(ws, &c.email), &c.id),
                cond: Some(Cond::ItemNotExists),
            });
        } else {
            actions.push(TxAction::Put {
                item,
                cond: Some(Cond::eq("version", val::n(old_version))),
            });
        }
        if c.external_id != old_ext {
            if let Some(ext) = &c.external_id {
                actions.push(TxAction::Put {
                    item: contacts::pointer_item(&contacts::external_id_key(ws, ext), &c.id),
                    cond: Some(Cond::ItemNotExists),
                });
            }
            if let Some(ext) = &old_ext {
                actions.push(TxAction::Delete {
                    key: contacts::external_id_key(ws, ext),
                    cond: Some(Cond::eq("contact_id", val::s(c.id.clone()))),
                });
            }
        }
        let mut added = vec![];
        for list_id in &rec.list_ids {
            let member_key = Key::new(keys::list_members(ws, list_id), &c.id);
            if !created && members.contains(&member_key) {
                continue;
            }
            let status = if self.lists.get(list_id).copied().unwrap_or(false) {
                MemberStatus::Pending
            } else {
                MemberStatus::Subscribed
            };
            let member = Member {
                contact_id: c.id.clone(),
                status,
                added_at: now,
            };
            let reverse = Key::new(keys::contact_lists(ws, &c.id), list_id);
            actions.push(TxAction::Put {
                item: to_item(&member_key.pk, &member_key.sk, &member).map_err(internal)?,
                cond: Some(Cond::ItemNotExists),
            });
            actions.push(TxAction::Put {
                item: to_item(&reverse.pk, &reverse.sk, &member).map_err(internal)?,
                cond: None,
            });
            added.push(list_id.clone());
        }
        Ok(Planned {
            read_index: 0,
            actions,
            ledger: Some(LedgerEntry {
                c: c.id.clone(),
                n: created,
                l: added.clone(),
            }),
            lists: added,
        })
    }
}

fn add_counts(sum: &mut Counts, c: &Counts) {
    sum.rows_read += c.rows_read;
    sum.created += c.created;
    sum.updated += c.updated;
    sum.failed += c.failed;
    for (k, v) in &c.skipped {
        *sum.skipped.entry(*k).or_default() += v;
    }
}

/// The checkpoint offset each group sets (read back from its import update).
fn group_offsets(groups: &[Vec<TxAction>]) -> Vec<u64> {
    groups
        .iter()
        .map(|g| match g.first() {
            Some(TxAction::Update { update, .. }) => update
                .actions
                .iter()
                .find_map(|a| match a {
                    crate::ports::store::UpdateAction::Set(n, Value::N(v))
                        if n == "bytes_processed" =>
                    {
                        v.parse().ok()
                    }
                    _ => None,
                })
                .unwrap_or(0),
            _ => 0,
        })
        .collect()
}

fn line_of(r: &Read) -> u64 {
    r.record.line()
}

fn duplicate_report(line: u64, email: &str, winner: u64) -> RowError {
    RowError {
        line,
        column: "email".into(),
        value: email.into(),
        reason: format!("skipped: duplicate (line {winner} has the same email and wins)"),
    }
}

fn skip_report(row: &ContactRow, skip: Skip, why: &str) -> RowError {
    RowError {
        line: row.line,
        column: "email".into(),
        value: row.email.as_str().into(),
        reason: format!("skipped: {} ({why})", skip.name()),
    }
}

/// Pointer items (`contact_id`) for keys, any number: key → contact id.
async fn batch_pointers(store: &dyn Store, keys: Vec<Key>) -> AppResult<HashMap<Key, String>> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(limits::MAX_BATCH_GET) {
        for item in store.batch_get(chunk).await? {
            if let (Some(k), Some(id)) = (Key::of(&item), item.str_attr("contact_id")) {
                out.insert(k, id.to_string());
            }
        }
    }
    Ok(out)
}

/// Which of these keys exist.
async fn batch_existing(store: &dyn Store, keys: Vec<Key>) -> AppResult<HashSet<Key>> {
    let mut out = HashSet::new();
    for chunk in keys.chunks(limits::MAX_BATCH_GET) {
        for item in store.batch_get(chunk).await? {
            out.extend(Key::of(&item));
        }
    }
    Ok(out)
}

// ---- undo -----------------------------------------------------------------------------

/// Starts reverting a finished import (`DELETE /v1/imports/{id}`): contacts it created
/// are deleted, memberships it added removed; contacts it updated keep their values.
pub async fn start_revert(env: &Arc<ImportEnv>, ws: &str, id: &str) -> AppResult<Import> {
    let rec = record(env.store(), ws, id).await?;
    match rec.status {
        ImportStatus::Completed | ImportStatus::CompletedWithErrors | ImportStatus::Failed => {}
        ImportStatus::Reverting | ImportStatus::Reverted => {
            return Ok(rec.into());
        }
        ImportStatus::Pending | ImportStatus::Previewed => {
            // Nothing was written: the import is simply reverted.
        }
        ImportStatus::Running => {
            return Err(AppError::conflict(
                "/",
                "the import is running; undo it once it has finished",
            ));
        }
    }
    let now = Utc::now().to_rfc3339();
    let actions = vec![
        TxAction::Update {
            key: import_key(ws, id),
            update: Update::new()
                .set("status", val::s(ImportStatus::Reverting.as_str()))
                .set("updated_at", val::s(now))
                .remove("owner")
                .remove("lease_until"),
            cond: Some(Cond::eq("status", val::s(rec.status.as_str()))),
        },
        running_pointer(ws, id),
    ];
    match env.store().transact(actions).await {
        Ok(()) => {}
        Err(e) if e.is_condition_failed() => {
            return Err(AppError::conflict("/", "the import changed; read it again"));
        }
        Err(e) => return Err(e.into()),
    }
    env.starter.start(env, ws, id).await?;
    get(env.store(), ws, id).await
}

/// Walks the ledger, one entry (one committed transaction) at a time: undoes what it
/// wrote, then deletes it together with the counters' update. Deleting a contact or a
/// membership that is already gone is not an error, so a crash in the middle of an
/// entry just does it again.
async fn revert(
    env: &Arc<ImportEnv>,
    ws: &str,
    id: &str,
    owner: &str,
    deadline: Option<Instant>,
) -> AppResult<RunOutcome> {
    let store = env.store();
    loop {
        let page = store
            .query(Query::partition(keys::import_ledger(ws, id)).limit(20))
            .await?;
        if page.items.is_empty() {
            break;
        }
        for item in page.items {
            let Some(sk) = item.str_attr("sk").map(str::to_string) else {
                continue;
            };
            let rows: Vec<LedgerEntry> = item
                .str_attr("rows")
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            let (mut deleted, mut kept, mut removed) = (0i64, 0i64, 0i64);
            for entry in rows {
                if entry.n {
                    match contacts::delete(store, ws, &entry.c).await {
                        Ok(()) => deleted += 1,
                        Err(AppError::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                } else {
                    kept += 1;
                    for list_id in &entry.l {
                        removed += remove_membership(store, ws, list_id, &entry.c).await?;
                    }
                }
            }
            let now = Utc::now().to_rfc3339();
            let tx = store
                .transact(vec![
                    TxAction::Update {
                        key: import_key(ws, id),
                        update: Update::new()
                            .add("reverted_contacts_deleted", deleted)
                            .add("reverted_contacts_kept", kept)
                            .add("reverted_memberships_removed", removed)
                            .set("lease_until", val::n(now_secs() + env.settings.lease_secs))
                            .set("updated_at", val::s(now)),
                        cond: Some(Cond::eq("owner", val::s(owner))),
                    },
                    TxAction::Delete {
                        key: Key::new(keys::import_ledger(ws, id), sk),
                        cond: Some(Cond::ItemExists),
                    },
                ])
                .await;
            match tx {
                Ok(()) => {}
                Err(e) if e.is_condition_failed() => return Ok(RunOutcome::Busy),
                Err(e) => return Err(e.into()),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(RunOutcome::Paused);
            }
        }
    }
    let now = Utc::now().to_rfc3339();
    let tx = store
        .transact(vec![
            TxAction::Update {
                key: import_key(ws, id),
                update: Update::new()
                    .set("status", val::s(ImportStatus::Reverted.as_str()))
                    .set("reverted_at", val::s(now.clone()))
                    .set("updated_at", val::s(now))
                    .remove("owner")
                    .remove("lease_until"),
                cond: Some(Cond::eq("owner", val::s(owner))),
            },
            TxAction::Delete {
                key: running_key(ws, id),
                cond: None,
            },
        ])
        .await;
    match tx {
        Ok(()) => Ok(RunOutcome::Done),
        Err(e) if e.is_condition_failed() => Ok(RunOutcome::Busy),
        Err(e) => Err(e.into()),
    }
}

/// Removes one membership and moves the list's counter; 0 when it was already gone.
async fn remove_membership(
    store: &dyn Store,
    ws: &str,
    list_id: &str,
    contact_id: &str,
) -> AppResult<i64> {
    let tx = store
        .transact(vec![
            TxAction::Delete {
                key: Key::new(keys::list_members(ws, list_id), contact_id),
                cond: Some(Cond::ItemExists),
            },
            TxAction::Delete {
                key: Key::new(keys::contact_lists(ws, contact_id), list_id),
                cond: None,
            },
            TxAction::Update {
                key: lists::list_key(ws, list_id),
                update: Update::new().add("member_count", -1),
                cond: Some(Cond::ItemExists),
            },
        ])
        .await;
    match tx {
        Ok(()) => Ok(1),
        Err(e) if e.is_condition_failed() => Ok(0),
        Err(e) => Err(e.into()),
    }
}
