//! The import function: S3 `ObjectCreated` events register an uploaded file (once,
//! however often the event is delivered) and queue the import; messages of the import
//! queue run it from its checkpoint until the invocation's deadline, then queue the
//! continuation. All rules live in `mailpilot_shared::usecases::imports`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mailpilot_shared::adapters::aws::blobs::S3Blobs;
use mailpilot_shared::adapters::aws::lambda;
use mailpilot_shared::adapters::aws::queue::{ImportMessage, SqsStarter};
use mailpilot_shared::error::AppError;
use mailpilot_shared::lambda_events::BatchResponse;
use mailpilot_shared::usecases::imports::{self, ImportEnv, ImportSettings, RunOutcome};
use serde_json::Value;

/// Time kept back from the invocation's deadline to commit the last chunk and queue
/// the continuation.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// Builds the environment from `MAILPILOT_TABLE`, `MAILPILOT_UPLOADS_BUCKET` and
/// `MAILPILOT_IMPORT_QUEUE_URL` (and the `MAILPILOT_IMPORT_*` tuning variables).
pub async fn env_from_env() -> Result<Arc<ImportEnv>> {
    let (bucket, queue) = (
        lambda::env("MAILPILOT_UPLOADS_BUCKET")?,
        lambda::env("MAILPILOT_IMPORT_QUEUE_URL")?,
    );
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let credentials = sdk
        .credentials_provider()
        .context("no AWS credentials provider")?;
    Ok(Arc::new(ImportEnv {
        store: lambda::store_from_env(&sdk)?,
        blobs: Arc::new(S3Blobs::new(
            aws_sdk_s3::Client::new(&sdk),
            bucket,
            credentials,
            None,
        )),
        starter: Arc::new(SqsStarter::new(aws_sdk_sqs::Client::new(&sdk), queue)),
        settings: ImportSettings::from_env(),
    }))
}

/// A key from an S3 event: form-encoded (`imports%2Fws_1%2Fimp_2`, spaces as `+`).
pub fn decode_key(raw: &str) -> String {
    form_urlencoded::parse(format!("k={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Handles one invocation's event. Answers an SQS partial-batch response (ignored for
/// S3 events, whose failures make Lambda retry the whole event: registering a file is
/// idempotent).
pub async fn handle(
    env: &Arc<ImportEnv>,
    event: Value,
    deadline: Option<Instant>,
) -> Result<Value> {
    let Some(records) = event.get("Records").and_then(Value::as_array) else {
        // `s3:TestEvent` (sent when the notification is configured) has no records.
        let kind = event
            .get("Event")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        tracing::info!(event = %kind, "event without records ignored");
        return Ok(serde_json::to_value(BatchResponse::default())?);
    };
    let mut response = BatchResponse::default();
    for record in records {
        match record.get("eventSource").and_then(Value::as_str) {
            Some("aws:s3") => on_object_created(env, record).await?,
            Some("aws:sqs") => {
                let id = record
                    .get("messageId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if !on_message(env, record, deadline).await {
                    response.fail(&id);
                }
            }
            other => tracing::warn!(source = ?other, "record from an unknown source ignored"),
        }
    }
    Ok(serde_json::to_value(response)?)
}

async fn on_object_created(env: &Arc<ImportEnv>, record: &Value) -> Result<()> {
    let raw = record
        .pointer("/s3/object/key")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = decode_key(raw);
    let Some((ws, id)) = imports::parse_blob_key(&key) else {
        tracing::warn!(
            key,
            "an object outside imports/<workspace>/<import> ignored"
        );
        return Ok(());
    };
    let size = record
        .pointer("/s3/object/size")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    match imports::file_landed(env, &ws, &id, size).await {
        Ok(started) => {
            tracing::info!(import_id = %id, started, "upload registered");
            Ok(())
        }
        // The import was deleted with its workspace: nothing to do.
        Err(AppError::NotFound) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("registering {key}: {e}")),
    }
}

/// Runs the import a queue message names; false = report the message as failed (SQS
/// redelivers it after its visibility timeout).
async fn on_message(env: &Arc<ImportEnv>, record: &Value, deadline: Option<Instant>) -> bool {
    let body = record
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Ok(msg) = serde_json::from_str::<ImportMessage>(body) else {
        tracing::error!(body, "malformed import message dropped");
        return true;
    };
    let (ws, id) = (&msg.workspace_id, &msg.import_id);
    match imports::run(env, ws, id, deadline, false).await {
        Ok(RunOutcome::Done) | Err(AppError::NotFound) => true,
        // The continuation: the next invocation goes on from the checkpoint.
        Ok(RunOutcome::Paused) => match env.starter.start(env, ws, id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, import_id = %id, "queueing the continuation failed");
                false
            }
        },
        // Another invocation holds the lease: try again later (it may have died).
        Ok(RunOutcome::Busy) => false,
        Err(e) => {
            tracing::error!(error = %e, import_id = %id, "import step failed");
            false
        }
    }
}
