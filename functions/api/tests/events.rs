//! The API function fed the sample API Gateway events in `events/`, over DynamoDB in
//! the local emulator, as `lambda_http` hands them to the router in Lambda.

use std::sync::Arc;

use http_body_util::BodyExt;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::secrets::SecretsDoc;
use tower::ServiceExt;

fn event(name: &str) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

async fn app() -> axum::Router {
    let client = mailpilot_tests::aws::dynamo_client();
    let table = format!("api-events-{}", uuid_like());
    create_table(&client, &table).await.expect("create table");
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client, table));
    let mut secrets = SecretsDoc::generate();
    secrets.admin_token = Some("sample-admin-token".into());
    api::app(store, &secrets, 100).expect("app")
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn call(app: &axum::Router, req: lambda_http::Request) -> (u16, serde_json::Value) {
    let (parts, body) = req.into_parts();
    let body = match body {
        lambda_http::Body::Empty => axum::body::Body::empty(),
        lambda_http::Body::Text(t) => axum::body::Body::from(t),
        lambda_http::Body::Binary(b) => axum::body::Body::from(b),
        _ => axum::body::Body::empty(),
    };
    let res = app
        .clone()
        .oneshot(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn create_workspace_event_creates_a_workspace_and_replays_idempotently() {
    let app = app().await;
    let req =
        lambda_http::request::from_str(&event("api-create-workspace.json")).expect("event parses");
    let (status, body) = call(&app, req).await;
    assert_eq!(status, 201, "{body}");
    let ws = body["workspace_id"].as_str().expect("workspace_id");
    assert!(ws.starts_with("ws_"));
    assert!(body["api_key"].as_str().unwrap().starts_with("mp_"));

    // The same event again (an API Gateway retry) replays the first answer.
    let again = lambda_http::request::from_str(&event("api-create-workspace.json")).unwrap();
    let (status2, body2) = call(&app, again).await;
    assert_eq!(status2, 201);
    assert_eq!(body2, body);
}

#[tokio::test]
async fn list_contacts_event_is_answered_for_the_key_in_the_header() {
    let app = app().await;
    let create = lambda_http::request::from_str(&event("api-create-workspace.json")).unwrap();
    let (_, created) = call(&app, create).await;
    let key = created["api_key"].as_str().unwrap().to_string();

    let raw = event("api-list-contacts.json").replace("REPLACED_BY_TEST", &key);
    let (status, body) = call(&app, lambda_http::request::from_str(&raw).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], serde_json::json!([]));
    assert!(body["next_cursor"].is_null());

    let unauthorized = event("api-list-contacts.json");
    let (status, body) = call(&app, lambda_http::request::from_str(&unauthorized).unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], 401);
}
