//! AWS test plumbing: a DynamoDB client for the local emulator.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

/// The environment variable that names the DynamoDB emulator's endpoint, e.g.
/// `http://127.0.0.1:5005` for `moto_server -p 5005`.
pub const ENDPOINT_VAR: &str = "MAILPILOT_TEST_AWS_ENDPOINT";

/// The emulator's endpoint. Panics with instructions when it is not set: tests that
/// need DynamoDB fail loudly rather than skip silently.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the DynamoDB tests need a local emulator. Start one \
             (e.g. `moto_server -p 5005`) and set {ENDPOINT_VAR}=http://127.0.0.1:5005"
        ),
    }
}

/// A DynamoDB client for the emulator at [`endpoint`]: static test credentials
/// (`test`/`test`), region `us-east-1`. Panics when the endpoint is not set.
pub fn dynamo_client() -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "mailpilot-tests",
        ))
        .endpoint_url(endpoint())
        .build();
    Client::from_conf(config)
}

/// An SQS client for the emulator at [`endpoint`] (same credentials and region).
fn credentials() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new("test", "test", None, None, "mailpilot-tests")
}

/// The emulator's static test credentials as a provider (signs upload forms).
pub fn credentials_provider() -> aws_sdk_s3::config::SharedCredentialsProvider {
    aws_sdk_s3::config::SharedCredentialsProvider::new(credentials())
}

/// An S3 client for the emulator (path-style addressing). Panics when the endpoint is
/// not set.
pub fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(credentials())
        .endpoint_url(endpoint())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An SQS client for the emulator. Panics when the endpoint is not set.
pub fn sqs_client() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "mailpilot-tests",
        ))
        .credentials_provider(credentials())
        .endpoint_url(endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// A fresh bucket with a unique name.
pub async fn bucket(client: &aws_sdk_s3::Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let name: String = name.chars().take(63).collect();
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}
