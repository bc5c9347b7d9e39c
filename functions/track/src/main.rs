//! Lambda entry point: API Gateway HTTP API (v2) events for /t/o, /t/c and /u.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mailpilot_shared::adapters::aws::lambda::init_tracing();
    let app = track::app_from_env().await?;
    lambda_http::run(app).await
}
