//! Fault injection: a store that throttles or fails mid-request, and a job interrupted
//! by a crash. Nothing a client sent ever gets a 500, nothing is half-written, and a
//! retry has exactly one effect.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use mailpilot_runner::Settings;
use mailpilot_shared::adapters::local::store::RedbStore;
use mailpilot_shared::http::{self, AppState, Config, JobDriver};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::ratelimit::RateLimiter;
use mailpilot_shared::secrets::{Sealer, SecretsDoc};
use mailpilot_shared::usecases::{contacts, jobs, workspaces};
use mailpilot_tests::faults::{Fault, FaultyStore};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Harness {
    router: axum::Router,
    faulty: Arc<FaultyStore>,
    key: String,
    _dir: tempfile::TempDir,
}

async fn harness(fault: Fault) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("db.redb")).unwrap());
    let created = workspaces::create_workspace(
        inner.as_ref(),
        workspaces::CreateWorkspace { name: "F".into() },
    )
    .await
    .unwrap();
    let faulty = Arc::new(FaultyStore::new(inner, fault));
    let config = Config {
        admin_token: None,
        sealer: Sealer::new(&SecretsDoc::generate().encryption_key),
        jobs: JobDriver::OnPoll,
        cache_keys: false,
        providers: mailpilot_shared::usecases::providers::Providers::new(Sealer::new("k"), None),
        link_keys: Arc::new(mailpilot_shared::model::links::LinkKeys::generate()),
        public_url: None,
    };
    let router = http::router(AppState::new(
        faulty.clone(),
        config,
        RateLimiter::memory(0),
    ));
    Harness {
        router,
        faulty,
        key: created.api_key,
        _dir: dir,
    }
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idem: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.key));
        if let Some(k) = idem {
            req = req.header("idempotency-key", k);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            retry_after,
        )
    }
}

#[tokio::test]
async fn a_throttled_store_is_503_with_retry_after_never_500() {
    for fault in [Fault::Throttled, Fault::Unavailable] {
        let h = harness(fault).await;
        h.faulty.fail_next(1);
        let (status, body, retry_after) = h.call("GET", "/v1/contacts", None, None).await;
        assert_eq!(status, 503, "{fault:?}: {body}");
        assert_eq!(body["status"], 503);
        if fault == Fault::Throttled {
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
        let (status, _, _) = h.call("GET", "/v1/contacts", None, None).await;
        assert_eq!(status, 200, "the next call goes through");
    }
}

#[tokio::test]
async fn a_create_that_fails_at_any_step_writes_all_or_nothing() {
    // Fail each store call of a contact creation in turn; whatever the answer, the
    // contact and its unique email item exist together or not at all, and a retry
    // ends with exactly one contact.
    for step in 0..6 {
        let h = harness(Fault::Unavailable).await;
        h.faulty.fail_after(step, 1);
        let email = format!("step{step}@x.example");
        let (status, body, _) = h
            .call("POST", "/v1/contacts", Some(json!({"email": email})), None)
            .await;
        assert!(
            status == 201 || status == 503,
            "step {step}: {status} {body}"
        );
        h.faulty.heal();
        let (found, by_email, _) = h
            .call("GET", &format!("/v1/contacts/by-email/{email}"), None, None)
            .await;
        let (_, list, _) = h.call("GET", "/v1/contacts", None, None).await;
        let listed = list["data"].as_array().unwrap().len();
        if status == 201 {
            assert_eq!(found, 200, "step {step}");
            assert_eq!(by_email["id"], body["id"]);
            assert_eq!(listed, 1);
        } else {
            assert_eq!(
                found, 404,
                "step {step}: a failed create leaves no email item"
            );
            assert_eq!(listed, 0, "step {step}: a failed create leaves no contact");
            let (retry, _, _) = h
                .call("POST", "/v1/contacts", Some(json!({"email": email})), None)
                .await;
            assert_eq!(retry, 201);
        }
        let (_, list, _) = h.call("GET", "/v1/contacts", None, None).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "step {step}");
    }
}

#[tokio::test]
async fn a_5xx_releases_the_idempotency_key_so_the_retry_runs_once() {
    let h = harness(Fault::Unavailable).await;
    // Calls: the key lookup, the idempotency claim, then the list's put: fail that one.
    h.faulty.fail_after(2, 1);
    let (status, _, _) = h
        .call("POST", "/v1/lists", Some(json!({"name": "L"})), Some("k"))
        .await;
    assert_eq!(status, 503);
    h.faulty.heal();
    let (status, first, _) = h
        .call("POST", "/v1/lists", Some(json!({"name": "L"})), Some("k"))
        .await;
    assert_eq!(status, 201);
    let (status, again, _) = h
        .call("POST", "/v1/lists", Some(json!({"name": "L"})), Some("k"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(again, first);
    let (_, lists, _) = h.call("GET", "/v1/lists", None, None).await;
    assert_eq!(lists["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_interrupted_delete_job_resumes_after_a_restart_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mailpilot.redb");
    let ws;
    {
        let store = RedbStore::open(&db).unwrap();
        ws = workspaces::create_workspace(&store, workspaces::CreateWorkspace { name: "W".into() })
            .await
            .unwrap()
            .workspace_id;
        for i in 0..250 {
            let input = contacts::ContactInput {
                email: Some(format!("c{i}@x.example")),
                ..Default::default()
            };
            contacts::create(&store, &ws, input).await.unwrap();
        }
        let job = jobs::start_delete_workspace_data(&store, &ws)
            .await
            .unwrap();
        let job = jobs::advance(&store, &ws, &job.id, 2).await.unwrap();
        assert_eq!(job.status, jobs::JobStatus::Running);
        assert!(job.deleted_items > 0);
        // The process dies here: the store is dropped with the job half done.
    }
    let running = mailpilot_runner::start(Settings {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        public_url: None,
        link_keys: None,
        admin_token: None,
        key_rate: 0,
        demo: false,
        delivery: mailpilot_runner::DeliverySettings::default(),
    })
    .await
    .unwrap();
    let prefix = format!("ws#{ws}#");
    for _ in 0..500 {
        if running.store.count_items_with_pk_prefix(&prefix).unwrap() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The workspace record, its key and the finished job are all that is left.
    assert_eq!(
        running.store.count_items_with_pk_prefix(&prefix).unwrap(),
        3
    );
    for _ in 0..100 {
        if jobs::unfinished(running.store.as_ref())
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        jobs::unfinished(running.store.as_ref())
            .await
            .unwrap()
            .is_empty()
    );
    running.stop().await.unwrap();
}
