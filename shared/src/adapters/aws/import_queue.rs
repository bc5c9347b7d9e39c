//! The import function's queue: starting or continuing an import in AWS is a message
//! `{"workspace_id", "import_id"}` that triggers `functions/import`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};
use crate::usecases::imports::{ImportEnv, ImportStarter};

/// The message body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportMessage {
    pub workspace_id: String,
    pub import_id: String,
}

pub struct SqsStarter {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsStarter {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl ImportStarter for SqsStarter {
    async fn start(&self, _env: &Arc<ImportEnv>, ws: &str, id: &str) -> AppResult<()> {
        let body = serde_json::to_string(&ImportMessage {
            workspace_id: ws.to_string(),
            import_id: id.to_string(),
        })
        .map_err(AppError::internal)?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                AppError::internal(format!(
                    "queueing the import: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                ))
            })?;
        Ok(())
    }
}
