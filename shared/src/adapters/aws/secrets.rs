//! Reads Mailpilot's secrets from one Secrets Manager secret, once at cold start.

use crate::secrets::SecretsDoc;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("reading the secret failed")]
    Fetch(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the secret has no string value")]
    Empty,
    #[error("the secret is not a JSON document with an `encryption_key`")]
    Shape(#[source] serde_json::Error),
}

/// The secrets document stored at `secret_id` (an ARN or a name).
pub async fn load(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<SecretsDoc, SecretsError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| SecretsError::Fetch(Box::new(e)))?;
    let raw = out.secret_string().ok_or(SecretsError::Empty)?;
    serde_json::from_str(raw).map_err(SecretsError::Shape)
}
