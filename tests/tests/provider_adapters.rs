//! The provider adapters against real or faithful counterparts:
//! - Resend against a local fake (axum) that answers 429 with `Retry-After` first;
//! - SMTP against the aiosmtpd server scripts/test.sh starts (`MAILPILOT_TEST_SMTP_*`),
//!   with STARTTLS, TLS, AUTH, injected 451/550 replies, and DKIM verified by dkimpy;
//! - SES v2 against moto (`MAILPILOT_TEST_AWS_ENDPOINT`), reading sent mail back from
//!   `/moto-api/data.json`.
//!
//! Tests that need a service panic when it is missing: they fail, never skip.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mailpilot_shared::adapters::mail::resend::ResendProvider;
use mailpilot_shared::adapters::mail::ses::SesProvider;
use mailpilot_shared::adapters::mail::smtp::{Dkim, SmtpConfig, SmtpProvider};
use mailpilot_shared::mime::{self, ListUnsubscribe, Mailbox, MessageParts};
use mailpilot_shared::ports::provider::{DeliveryStatus, OutgoingMessage, Provider, SendError};
use mailpilot_shared::usecases::providers::SmtpSecurity;
use serde_json::{Value, json};

fn message(to: &str, from: &str) -> OutgoingMessage {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let parts = MessageParts {
        message_id: id.clone(),
        from: Mailbox::new(Some("Acme News"), from),
        reply_to: Some(Mailbox::new(None, "help@acme.example")),
        to: Mailbox::new(Some("Zoë"), to),
        subject: "Grüße from Acme".into(),
        html: Some("<p>Hello</p>".into()),
        text: Some("Hello".into()),
        list_unsubscribe: Some(ListUnsubscribe {
            url: "https://t.acme.example/u/token".into(),
            mailto: Some("unsub@acme.example".into()),
        }),
        date: chrono::Utc::now(),
    };
    OutgoingMessage {
        raw: mime::build(&parts).unwrap(),
        idempotency_key: format!("idem-{id}"),
        tags: vec![("mp_ws".into(), "ws_test".into()), ("mp_msg".into(), id)],
        parts,
    }
}

// ---- Resend ---------------------------------------------------------------------------

#[derive(Default)]
struct FakeResend {
    /// Every send request: (Idempotency-Key, body).
    calls: Vec<(Option<String>, Value)>,
    /// Sends seen per key: the first of each is throttled.
    per_key: HashMap<String, u32>,
    /// Status requests seen per email id: the first of each is throttled.
    gets: HashMap<String, u32>,
}

type Shared = Arc<Mutex<FakeResend>>;

async fn fake_send(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut s = s.lock().unwrap();
    s.calls.push((key.clone(), body.clone()));
    if auth != "Bearer re_test_key" {
        return (StatusCode::UNAUTHORIZED, Json(json!({"statusCode": 401, "name": "validation_error", "message": "API key is invalid"}))).into_response();
    }
    let to = body["to"][0].as_str().unwrap_or("");
    if to.contains("invalid") {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field"}))).into_response();
    }
    if to.contains("boom") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"statusCode": 500, "name": "internal_server_error", "message": "oops"})),
        )
            .into_response();
    }
    let Some(key) = key else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"name": "missing_idempotency_key"})),
        )
            .into_response();
    };
    let n = s.per_key.entry(key.clone()).or_default();
    *n += 1;
    if *n == 1 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            Json(json!({"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests"})),
        )
            .into_response();
    }
    // The same key always names the same email.
    (StatusCode::OK, Json(json!({"id": format!("re_{key}")}))).into_response()
}

/// `GET /emails/{id}`: the emails this fake accepted (`re_<key>`), throttled on the first
/// request for each; a recipient's local part names the `last_event` (`bounced@…`).
async fn fake_get(
    State(s): State<Shared>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer re_test_key") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"name": "validation_error", "message": "API key is invalid"})),
        )
            .into_response();
    }
    let mut s = s.lock().unwrap();
    let sent = s.calls.iter().find_map(|(key, body)| {
        let key = key.as_deref()?;
        (format!("re_{key}") == id).then(|| body["to"][0].as_str().unwrap_or("").to_string())
    });
    let Some(to) = sent else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"statusCode": 404, "name": "not_found", "message": "Email not found"})),
        )
            .into_response();
    };
    let n = s.gets.entry(id.clone()).or_default();
    *n += 1;
    if *n == 1 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "7")],
            Json(json!({"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests"})),
        )
            .into_response();
    }
    let local = to.trim_start_matches(|c| c != '<').trim_start_matches('<');
    let last = local.split('@').next().unwrap_or("").to_string();
    (
        StatusCode::OK,
        Json(json!({"object": "email", "id": id, "to": [to], "last_event": last})),
    )
        .into_response()
}

async fn fake_domains(headers: HeaderMap) -> Response {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some("Bearer re_test_key") => (StatusCode::OK, Json(json!({"data": []}))).into_response(),
        Some("Bearer re_send_only") => (StatusCode::UNAUTHORIZED, Json(json!({"name": "restricted_api_key", "message": "This API key is restricted to only send emails"}))).into_response(),
        _ => (StatusCode::UNAUTHORIZED, Json(json!({"name": "validation_error", "message": "API key is invalid"}))).into_response(),
    }
}

async fn start_fake_resend() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/emails", axum::routing::post(fake_send))
        .route("/emails/{id}", axum::routing::get(fake_get))
        .route("/domains", axum::routing::get(fake_domains))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

#[tokio::test]
async fn resend_throttles_with_retry_after_and_keeps_the_idempotency_key_across_retries() {
    let (url, fake) = start_fake_resend().await;
    let resend = ResendProvider::new(Some(&url), "re_test_key");
    assert!(resend.deduplicates());
    let m = message("zoe@example.com", "news@acme.example");
    let first = resend.send(&m).await;
    assert_eq!(
        first,
        Err(SendError::Throttled {
            code: "rate_limit_exceeded".into(),
            retry_after: Some(Duration::from_secs(2)),
        })
    );
    let second = resend.send(&m).await.unwrap();
    assert_eq!(
        second.provider_message_id,
        format!("re_{}", m.idempotency_key)
    );
    let calls = fake.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 2);
    for (key, body) in &calls {
        assert_eq!(
            key.as_deref(),
            Some(m.idempotency_key.as_str()),
            "same key on every try"
        );
        assert_eq!(body["from"], "Acme News <news@acme.example>");
        assert_eq!(body["to"][0], "Zoë <zoe@example.com>");
        assert_eq!(body["subject"], "Grüße from Acme");
        assert_eq!(body["reply_to"], "help@acme.example");
        assert_eq!(
            body["headers"]["X-Mailpilot-Message-Id"],
            m.parts.message_id
        );
        assert_eq!(
            body["headers"]["List-Unsubscribe-Post"],
            "List-Unsubscribe=One-Click"
        );
        assert_eq!(
            body["tags"][0],
            json!({"name": "mp_ws", "value": "ws_test"})
        );
    }
    assert_eq!(calls[0].1, calls[1].1, "a retry sends the same body");
}

#[tokio::test]
async fn resend_errors_are_classified() {
    let (url, _) = start_fake_resend().await;
    let resend = ResendProvider::new(Some(&url), "re_test_key");
    assert!(matches!(
        resend.send(&message("invalid@example.com", "a@acme.example")).await,
        Err(SendError::Permanent { code, .. }) if code == "validation_error"
    ));
    assert!(matches!(
        resend
            .send(&message("boom@example.com", "a@acme.example"))
            .await,
        Err(SendError::Transient { .. })
    ));
    let bad_key = ResendProvider::new(Some(&url), "re_wrong");
    assert!(matches!(
        bad_key
            .send(&message("zoe@example.com", "a@acme.example"))
            .await,
        Err(SendError::Sender { .. })
    ));
    resend.verify().await.unwrap();
    ResendProvider::new(Some(&url), "re_send_only")
        .verify()
        .await
        .unwrap();
    assert!(matches!(
        bad_key.verify().await,
        Err(SendError::Sender { .. })
    ));
    // Nobody listening: transient.
    let nowhere = ResendProvider::new(Some("http://127.0.0.1:9"), "re_test_key");
    assert!(matches!(
        nowhere
            .send(&message("zoe@example.com", "a@acme.example"))
            .await,
        Err(SendError::Transient { .. })
    ));
}

#[tokio::test]
async fn resend_status_is_throttled_with_retry_after_then_read_and_unknown_ids_end_polling() {
    let (url, _) = start_fake_resend().await;
    let resend = ResendProvider::new(Some(&url), "re_test_key").polled(true);
    assert!(resend.polls_status());
    assert!(
        !resend.needs_message_pointer(),
        "a polled connection gets no events: its poll entry names the message"
    );
    assert!(ResendProvider::new(Some(&url), "re_test_key").needs_message_pointer());
    let mut ids = vec![];
    for to in [
        "delivered@example.com",
        "bounced@example.com",
        "opened@example.com",
    ] {
        let m = message(to, "news@acme.example");
        let _ = resend.send(&m).await; // the fake throttles each key's first send
        ids.push(resend.send(&m).await.unwrap().provider_message_id);
    }
    assert_eq!(
        resend.status(&ids[0]).await,
        Err(SendError::Throttled {
            code: "rate_limit_exceeded".into(),
            retry_after: Some(Duration::from_secs(7)),
        })
    );
    assert_eq!(resend.status(&ids[0]).await, Ok(DeliveryStatus::Delivered));
    let _ = resend.status(&ids[1]).await;
    assert_eq!(resend.status(&ids[1]).await, Ok(DeliveryStatus::Bounced));
    let _ = resend.status(&ids[2]).await;
    assert_eq!(
        resend.status(&ids[2]).await,
        Ok(DeliveryStatus::Delivered),
        "an opened email was delivered"
    );
    assert!(matches!(
        resend.status("re_nobody").await,
        Err(SendError::Permanent { code, .. }) if code == "not_found"
    ));
    assert!(matches!(
        resend.status("../domains").await,
        Err(SendError::Permanent { code, .. }) if code == "invalid_id"
    ));
    assert!(matches!(
        ResendProvider::new(Some(&url), "re_wrong")
            .status(&ids[0])
            .await,
        Err(SendError::Sender { .. })
    ));
}

// ---- SMTP -----------------------------------------------------------------------------

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: the SMTP tests need the test SMTP server that scripts/test.sh \
             starts (scripts/smtp_server.py); run them through ./scripts/test.sh"
        ),
    }
}

struct SmtpServer {
    host: String,
    port: u16,
    tls_port: u16,
    dir: PathBuf,
}

fn smtp_server() -> SmtpServer {
    let split = |a: String| {
        let (h, p) = a.rsplit_once(':').unwrap();
        (h.to_string(), p.parse::<u16>().unwrap())
    };
    let (host, port) = split(env("MAILPILOT_TEST_SMTP_ADDR"));
    let (_, tls_port) = split(env("MAILPILOT_TEST_SMTPS_ADDR"));
    SmtpServer {
        host,
        port,
        tls_port,
        dir: PathBuf::from(env("MAILPILOT_TEST_SMTP_DIR")),
    }
}

impl SmtpServer {
    fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.pem")).unwrap()
    }

    fn config(&self, security: SmtpSecurity, credentials: Option<(&str, &str)>) -> SmtpConfig {
        SmtpConfig {
            host: self.host.clone(),
            port: if security == SmtpSecurity::Tls {
                self.tls_port
            } else {
                self.port
            },
            security,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            dkim: None,
            ca_certificate: (security != SmtpSecurity::None).then(|| self.ca()),
        }
    }

    /// The messages the server received for an address.
    fn received(&self, rcpt: &str) -> Vec<String> {
        let folder = self.dir.join("messages").join(rcpt);
        let Ok(entries) = std::fs::read_dir(folder) else {
            return vec![];
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    }
}

fn unique(local: &str) -> String {
    format!("{local}-{}@example.com", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn smtp_delivers_in_plain_text_starttls_and_tls() {
    let server = smtp_server();
    for (security, creds) in [
        (SmtpSecurity::None, None),
        (
            SmtpSecurity::Starttls,
            Some(("mailpilot", "mailpilot-secret")),
        ),
        (SmtpSecurity::Tls, Some(("mailpilot", "mailpilot-secret"))),
    ] {
        let smtp = SmtpProvider::new(server.config(security, creds)).unwrap();
        smtp.verify()
            .await
            .unwrap_or_else(|e| panic!("{security:?}: {e}"));
        let to = unique("ok");
        let m = message(&to, "news@acme.example");
        let accepted = smtp
            .send(&m)
            .await
            .unwrap_or_else(|e| panic!("{security:?}: {e}"));
        assert_eq!(
            accepted.provider_message_id.len(),
            12,
            "the server's queue id"
        );
        let got = server.received(&to);
        assert_eq!(got.len(), 1, "{security:?}: one message for {to}");
        assert!(got[0].contains(&format!("X-Mailpilot-Message-Id: {}", m.parts.message_id)));
    }
}

#[tokio::test]
async fn smtp_replies_and_failures_are_classified() {
    let server = smtp_server();
    let smtp = SmtpProvider::new(server.config(
        SmtpSecurity::Starttls,
        Some(("mailpilot", "mailpilot-secret")),
    ))
    .unwrap();
    match smtp
        .send(&message("tempfail@example.com", "a@acme.example"))
        .await
    {
        Err(SendError::Transient { code, .. }) => assert_eq!(code, "451"),
        other => panic!("{other:?}"),
    }
    match smtp
        .send(&message("reject@example.com", "a@acme.example"))
        .await
    {
        Err(SendError::Permanent { code, .. }) => assert_eq!(code, "550"),
        other => panic!("{other:?}"),
    }
    // Wrong password: the sender, not the message.
    let bad =
        SmtpProvider::new(server.config(SmtpSecurity::Starttls, Some(("mailpilot", "wrong"))))
            .unwrap();
    match bad.send(&message(&unique("ok"), "a@acme.example")).await {
        Err(SendError::Sender { code, .. }) => assert_eq!(code, "535"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(bad.verify().await, Err(SendError::Sender { .. })));
    // A certificate we do not trust: the sender's configuration.
    let mut untrusted = server.config(SmtpSecurity::Starttls, None);
    untrusted.ca_certificate = None;
    let untrusted = SmtpProvider::new(untrusted).unwrap();
    assert!(
        matches!(
            untrusted
                .send(&message(&unique("ok"), "a@acme.example"))
                .await,
            Err(SendError::Sender { .. })
        ),
        "untrusted certificate"
    );
    // Nobody listening: transient.
    let mut closed = server.config(SmtpSecurity::None, None);
    closed.port = 9;
    let closed = SmtpProvider::new(closed).unwrap();
    assert!(matches!(
        closed.send(&message(&unique("ok"), "a@acme.example")).await,
        Err(SendError::Transient { .. })
    ));
}

#[tokio::test]
async fn smtp_dkim_signs_both_list_unsubscribe_headers_and_verifies() {
    let server = smtp_server();
    let python = env("MAILPILOT_TEST_PYTHON");
    let key_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dkim-test-key.pem");
    let mut config = server.config(
        SmtpSecurity::Starttls,
        Some(("mailpilot", "mailpilot-secret")),
    );
    config.dkim = Some(Dkim {
        selector: "mp1".into(),
        domain: "acme.example".into(),
        private_key_pem: std::fs::read_to_string(&key_path).unwrap(),
    });
    let smtp = SmtpProvider::new(config).unwrap();
    let to = unique("dkim");
    smtp.send(&message(&to, "news@acme.example")).await.unwrap();
    let got = server.received(&to);
    assert_eq!(got.len(), 1);
    let raw = &got[0];
    let unfolded = raw.replace("\r\n ", " ").replace("\r\n\t", " ");
    let sig = unfolded
        .lines()
        .find(|l| l.starts_with("DKIM-Signature:"))
        .unwrap_or_else(|| panic!("no DKIM-Signature in {raw}"));
    let h = sig
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("h="))
        .unwrap()
        .to_ascii_lowercase()
        .replace(' ', "");
    let signed: Vec<&str> = h.split(':').collect();
    for header in [
        "from",
        "to",
        "subject",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "x-mailpilot-message-id",
    ] {
        assert!(signed.contains(&header), "h= lacks {header}: {h}");
    }
    // An independent verifier (dkimpy) with the public key served as the DNS record.
    let message_path = std::env::temp_dir().join(format!("dkim-{}.eml", uuid::Uuid::new_v4()));
    std::fs::write(&message_path, raw).unwrap();
    let script = r#"
import base64, sys, dkim
from cryptography.hazmat.primitives import serialization
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
def dns(name, timeout=5):
    assert name == b"mp1._domainkey.acme.example.", name
    return record
ok = dkim.verify(open(sys.argv[2], "rb").read(), dnsfunc=dns)
print("pass" if ok else "fail")
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&key_path)
        .arg(&message_path)
        .output()
        .expect("the test Python runs");
    let _ = std::fs::remove_file(&message_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "pass",
        "dkimpy: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- SES v2 (moto) --------------------------------------------------------------------

fn ses_client() -> aws_sdk_sesv2::Client {
    let endpoint = mailpilot_tests::aws::endpoint();
    let config = aws_sdk_sesv2::Config::builder()
        .behavior_version(aws_sdk_sesv2::config::BehaviorVersion::latest())
        .region(aws_sdk_sesv2::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sesv2::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sesv2::Client::from_conf(config)
}

#[tokio::test]
async fn ses_sends_raw_mime_with_configuration_set_and_tags_to_moto() {
    let client = ses_client();
    let domain = format!("ses-{}.example", uuid::Uuid::new_v4().simple());
    client
        .create_email_identity()
        .email_identity(&domain)
        .send()
        .await
        .unwrap();
    let set = format!("cs-{}", uuid::Uuid::new_v4().simple());
    client
        .create_configuration_set()
        .configuration_set_name(&set)
        .send()
        .await
        .unwrap();
    let ses = SesProvider::with_client(client, Some(set));
    ses.verify().await.unwrap();
    let m = message("zoe@example.com", &format!("news@{domain}"));
    let accepted = ses.send(&m).await.unwrap();
    assert!(!accepted.provider_message_id.is_empty());
    // moto keeps what it "sent".
    let data: Value = reqwest::get(format!(
        "{}/moto-api/data.json",
        mailpilot_tests::aws::endpoint()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let text = data["ses"].to_string();
    assert!(
        text.contains(&m.parts.message_id),
        "moto's SES data holds our X-Mailpilot-Message-Id header"
    );
}

#[tokio::test]
async fn ses_unverified_identity_is_a_sender_error_and_oversize_is_permanent() {
    let ses = SesProvider::with_client(ses_client(), None);
    let m = message(
        "zoe@example.com",
        &format!("news@unverified-{}.example", uuid::Uuid::new_v4().simple()),
    );
    match ses.send(&m).await {
        Err(SendError::Sender { code, .. }) => assert_eq!(code, "MessageRejected"),
        other => panic!("{other:?}"),
    }
    let mut big = message("zoe@example.com", "news@acme.example");
    big.raw = vec![b'a'; 40 * 1024 * 1024 + 1];
    match ses.send(&big).await {
        Err(SendError::Permanent { code, .. }) => assert_eq!(code, "MessageTooLarge"),
        other => panic!("{other:?}"),
    }
}
