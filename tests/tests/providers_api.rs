//! Provider connections, sender profiles and the outbox over the HTTP API: validation
//! with field pointers, secrets sealed at rest and redacted in every answer, PATCH
//! replacing a secret, verify, the runner's default outbox sender, the workspace cap.

use mailpilot_shared::adapters::mail::outbox::OutboxProvider;
use mailpilot_shared::mime::{self, Mailbox, MessageParts};
use mailpilot_shared::ports::provider::{OutgoingMessage, Provider};
use mailpilot_shared::ports::store::{Query, Store};
use mailpilot_shared::secrets::{Sealer, SecretsDoc};
use mailpilot_shared::usecases::providers::{self, LOCAL_OUTBOX_ID, Providers};
use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;
use mailpilot_tests::app::{TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every stored item of the workspace's provider partition, as text.
async fn stored_providers(app: &TestApp) -> String {
    let page = app
        .store
        .query(Query::partition(format!("ws#{}#providers", app.workspace_id)).limit(100))
        .await
        .unwrap();
    format!("{:?}", page.items)
}

#[tokio::test]
async fn a_new_workspace_can_send_to_the_outbox_without_configuring_anything() {
    let app = spawn_app().await;
    let pc = app.get(&format!("/v1/providers/{LOCAL_OUTBOX_ID}")).await;
    assert_eq!(pc.status, StatusCode::OK, "{}", pc.body);
    assert_eq!(pc.body["kind"], "outbox");
    let sp = app.get(&format!("/v1/senders/{LOCAL_SENDER_ID}")).await;
    assert_eq!(sp.status, StatusCode::OK, "{}", sp.body);
    assert_eq!(sp.body["connection_id"], LOCAL_OUTBOX_ID);
    let v = app
        .post(
            &format!("/v1/providers/{LOCAL_OUTBOX_ID}/verify"),
            json!({}),
        )
        .await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.body);
    assert_eq!(v.body["ok"], true, "{}", v.body);
    // A workspace made over the admin API gets them too.
    let (_, key_b) = app.create_workspace("B").await;
    let b = app
        .call(reqwest::Method::GET, "/v1/senders", Some(&key_b), None)
        .await;
    assert_eq!(b.body["data"][0]["id"], LOCAL_SENDER_ID, "{}", b.body);
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_redacted_in_answers_and_replaceable() {
    let app = spawn_app().await;
    let api_key = "re_live_0123456789abcdefWXYZ";
    let c = app
        .post(
            "/v1/providers",
            json!({"name": "Resend", "rate_per_second": 5,
                   "settings": {"kind": "resend", "api_key": api_key, "webhook_secret": "whsec_topsecret"}}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let id = c.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.headers["location"].to_str().unwrap(),
        format!("/v1/providers/{id}")
    );
    assert_eq!(c.body["settings"]["api_key"], "********WXYZ");
    assert_eq!(c.body["settings"]["webhook_secret"], "********");
    assert_eq!(c.body["rate_per_second"], 5);
    for answer in [
        c.body.to_string(),
        app.get(&format!("/v1/providers/{id}"))
            .await
            .body
            .to_string(),
        app.get("/v1/providers").await.body.to_string(),
    ] {
        assert!(!answer.contains("0123456789"), "{answer}");
        assert!(!answer.contains("topsecret"), "{answer}");
    }
    let at_rest = stored_providers(&app).await;
    assert!(!at_rest.contains("0123456789abcdef"), "plaintext at rest");
    assert!(!at_rest.contains("topsecret"), "plaintext at rest");

    // PATCH replaces the key; the sealed value decrypts to the new one.
    let p = app
        .patch(
            &format!("/v1/providers/{id}"),
            json!({"settings": {"kind": "resend", "api_key": "re_live_newkey_0000000NEW1", "webhook_secret": null}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["settings"]["api_key"], "********NEW1");
    assert_eq!(p.body["settings"]["webhook_secret"], Value::Null);
    assert_eq!(p.body["name"], "Resend");
    let secrets: SecretsDoc =
        serde_json::from_slice(&std::fs::read(app.data_dir.join("secrets.json")).unwrap()).unwrap();
    let conn = providers::get(app.store.as_ref(), &app.workspace_id, &id)
        .await
        .unwrap();
    let sealer = Sealer::new(&secrets.encryption_key);
    match &conn.settings {
        providers::StoredSettings::Resend(r) => {
            assert_eq!(
                r.api_key.open(&sealer).unwrap().expose(),
                "re_live_newkey_0000000NEW1"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{conn:?}").contains("NEW1"), "Debug redacts");
    // A kind change is refused, naming the field.
    let k = app
        .patch(
            &format!("/v1/providers/{id}"),
            json!({"settings": {"kind": "smtp", "host": "x.example"}}),
        )
        .await;
    assert_eq!(k.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", k.body);
    assert_eq!(fields(&k.body), ["/settings/kind"]);
}

#[tokio::test]
async fn invalid_connections_name_each_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"name": "", "rate_per_second": 0, "settings": {"kind": "ses", "region": "Europe", "access_key_id": "AKIAEXAMPLE000000"}}),
            vec![
                "/name",
                "/settings/region",
                "/settings/secret_access_key",
                "/rate_per_second",
            ],
        ),
        (
            json!({"name": "s", "settings": {"kind": "smtp", "host": "bad host!", "port": 0, "username": "u",
                   "dkim": {"selector": "s1", "domain": "nodot", "private_key": "nope"}, "ca_certificate": "x"}}),
            vec![
                "/settings/host",
                "/settings/port",
                "/settings/password",
                "/settings/ca_certificate",
                "/settings/dkim/domain",
                "/settings/dkim/private_key",
            ],
        ),
        (
            json!({"name": "r", "settings": {"kind": "resend", "api_key": "has space", "base_url": "ftp://x"}}),
            vec!["/settings/api_key", "/settings/base_url"],
        ),
    ];
    for (body, expected) in cases {
        let a = app.post("/v1/providers", body.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            a.body
        );
        let mut got = fields(&a.body);
        got.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{}", a.body);
    }
    let unknown = app
        .post(
            "/v1/providers",
            json!({"name": "x", "settings": {"kind": "carrier-pigeon"}}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert_eq!(
        app.get("/v1/providers/pc_nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn senders_validate_their_rules_and_pin_their_connection() {
    let app = spawn_app().await;
    let bad = app
        .post(
            "/v1/senders",
            json!({"from_email": "nope", "reply_to": "also nope", "connection_id": "pc_missing",
                   "time_zone": "Mars/Olympus", "warm_up": {"start_date": "2026-11-01", "initial_cap": 10, "daily_factor": 2.0},
                   "window": {"days": [], "start_hour": 9, "end_hour": 9}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let mut got = fields(&bad.body);
    got.sort();
    assert_eq!(
        got,
        [
            "/connection_id",
            "/from_email",
            "/reply_to",
            "/time_zone",
            "/warm_up",
            "/window/days",
            "/window/end_hour"
        ]
    );
    let ok = app
        .post(
            "/v1/senders",
            json!({"from_name": "Acme", "from_email": "News@Acme.Example", "connection_id": LOCAL_OUTBOX_ID,
                   "time_zone": "Europe/Madrid", "daily_cap": 1000,
                   "warm_up": {"start_date": "2026-11-01", "initial_cap": 50, "daily_factor": 1.5},
                   "window": {"days": ["fri", "mon", "mon"], "start_hour": 22, "end_hour": 6, "time_zone": "recipient"}}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    assert_eq!(ok.body["from_email"], "news@acme.example");
    assert_eq!(ok.body["window"]["days"], json!(["mon", "fri"]));
    let id = ok.body["id"].as_str().unwrap().to_string();
    let cap = app
        .patch(&format!("/v1/senders/{id}"), json!({"daily_cap": 10}))
        .await;
    assert_eq!(cap.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", cap.body);
    assert_eq!(fields(&cap.body), ["/warm_up/initial_cap"]);
    let off = app
        .patch(
            &format!("/v1/senders/{id}"),
            json!({"warm_up": null, "window": null, "paused": null}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    assert_eq!(off.body["window"], Value::Null);
    let paused = app
        .patch(
            &format!("/v1/senders/{id}"),
            json!({"paused": {"code": "x"}}),
        )
        .await;
    assert_eq!(fields(&paused.body), ["/paused"]);

    // The connection cannot go while the sender uses it.
    let del = app
        .delete(&format!("/v1/providers/{LOCAL_OUTBOX_ID}"))
        .await;
    assert_eq!(del.status, StatusCode::CONFLICT, "{}", del.body);
    assert_eq!(
        app.delete(&format!("/v1/senders/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/v1/senders/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_workspace_has_a_daily_cap() {
    let app = spawn_app().await;
    let a = app.patch("/v1/workspace", json!({"daily_cap": 5000})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["daily_cap"], 5000);
    let bad = app.patch("/v1/workspace", json!({"daily_cap": 0})).await;
    assert_eq!(fields(&bad.body), ["/daily_cap"]);
    let off = app.patch("/v1/workspace", json!({"daily_cap": null})).await;
    assert_eq!(off.body["daily_cap"], Value::Null, "{}", off.body);
}

fn outgoing(id: &str, subject: &str) -> OutgoingMessage {
    let parts = MessageParts {
        message_id: id.into(),
        from: Mailbox::new(Some("Mailpilot"), "hello@mailpilot.localhost"),
        reply_to: None,
        to: Mailbox::new(None, "ana@example.com"),
        subject: subject.into(),
        html: Some("<p>Hi</p>".into()),
        text: Some("Hi".into()),
        list_unsubscribe: None,
        date: chrono::Utc::now(),
    };
    OutgoingMessage {
        raw: mime::build(&parts).unwrap(),
        idempotency_key: id.into(),
        parts,
        tags: vec![],
    }
}

#[tokio::test]
async fn the_outbox_lists_the_workspaces_mail_newest_first_and_serves_the_eml() {
    let app = spawn_app().await;
    // The provider the runner builds for the default connection.
    let secrets: SecretsDoc =
        serde_json::from_slice(&std::fs::read(app.data_dir.join("secrets.json")).unwrap()).unwrap();
    let factory = Providers::new(
        Sealer::new(&secrets.encryption_key),
        Some(app.data_dir.join("outbox")),
    );
    let (_, provider) = providers::provider_for(
        app.store.as_ref(),
        &factory,
        &app.workspace_id,
        LOCAL_OUTBOX_ID,
    )
    .await
    .unwrap();
    for i in 0..3 {
        provider
            .send(&outgoing(&format!("msg_{i}"), &format!("Hello {i}")))
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15));
    }
    let a = app.get("/v1/outbox?limit=2").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["data"][0]["message_id"], "msg_2");
    assert_eq!(a.body["data"][0]["subject"], "Hello 2");
    assert_eq!(a.body["data"][0]["to"], "ana@example.com");
    let cursor = a.body["next_cursor"].as_str().unwrap().to_string();
    let b = app
        .get(&format!("/v1/outbox?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(b.body["data"][0]["message_id"], "msg_0", "{}", b.body);
    assert_eq!(b.body["next_cursor"], Value::Null);
    let raw = app
        .client
        .get(format!("{}/v1/outbox/msg_1", app.url))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    let text = raw.text().await.unwrap();
    assert!(text.contains("X-Mailpilot-Message-Id: msg_1"), "{text}");
    // A repeat of the same message writes nothing new.
    let again = OutboxProvider::new(app.data_dir.join("outbox").join(&app.workspace_id));
    again.send(&outgoing("msg_1", "Changed")).await.unwrap();
    let listed = app.get("/v1/outbox").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 3);
    assert_eq!(
        app.get("/v1/outbox/msg_nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/outbox?cursor=zzzz").await.status,
        StatusCode::BAD_REQUEST
    );
}
