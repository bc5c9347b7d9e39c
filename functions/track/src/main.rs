//! Lambda entry point: API Gateway HTTP API (v2) events for /t/o, /t/c and /u.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time()
        .init();
    let app = track::app_from_env().await?;
    lambda_http::run(app).await
}
