//! `spawn_app()`: the real runner on port 0 over a fresh data dir, driven over HTTP.

use std::sync::Arc;

use mailpilot_runner::{Running, Settings};
use mailpilot_shared::adapters::local::store::RedbStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    /// The demo workspace created at start.
    pub workspace_id: String,
    pub api_key: String,
    pub store: Arc<RedbStore>,
    /// The runner's data dir (its outbox is `outbox/<workspace id>/`).
    pub data_dir: std::path::PathBuf,
    _running: Running,
    _dir: tempfile::TempDir,
}

/// One answer: status, headers and the JSON body (`Null` when empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        public_url: None,
        link_keys: None,
        admin_token: Some(ADMIN_TOKEN.into()),
        key_rate: 0,
        demo: true,
        delivery: mailpilot_runner::DeliverySettings::default(),
    };
    tweak(&mut settings);
    let running = mailpilot_runner::start(settings)
        .await
        .expect("runner starts");
    let demo = running
        .demo
        .clone()
        .expect("first start creates the demo workspace");
    TestApp {
        url: running.url(),
        client: reqwest::Client::new(),
        workspace_id: demo.workspace_id,
        api_key: demo.api_key,
        store: running.store.clone(),
        data_dir: dir.path().to_path_buf(),
        _running: running,
        _dir: dir,
    }
}

impl TestApp {
    /// The runner's delivery engine (queues, dispatcher, senders), e.g. to `drain` it.
    pub fn engine(&self) -> &Arc<mailpilot_runner::delivery::Engine> {
        &self._running.engine
    }

    /// The runner's tracking-event recorder (`settle()` waits until it caught up).
    pub fn recorder(&self) -> &Arc<mailpilot_runner::recorder::RecorderStats> {
        &self._running.recorder
    }

    /// A request with a bearer key (and a JSON body when given).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(method, path, key, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body read");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(&self.api_key), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(&self.api_key), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(&self.api_key), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, Some(&self.api_key), None)
            .await
    }

    /// Creates another workspace through the admin API: (workspace id, key).
    pub async fn create_workspace(&self, name: &str) -> (String, String) {
        let a = self
            .call(
                Method::POST,
                "/v1/workspaces",
                Some(ADMIN_TOKEN),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        (
            a.body["workspace_id"].as_str().unwrap().to_string(),
            a.body["api_key"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a contact in the default workspace and returns its id.
    pub async fn contact(&self, email: &str) -> String {
        let a = self.post("/v1/contacts", json!({ "email": email })).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }

    /// Polls a job until it completes (bounded).
    pub async fn wait_for_job(&self, key: &str, job_id: &str) -> Value {
        for _ in 0..500 {
            let a = self
                .call(Method::GET, &format!("/v1/jobs/{job_id}"), Some(key), None)
                .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            if a.body["status"] == "completed" {
                return a.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("job {job_id} did not complete");
    }

    /// Creates a campaign from `body`, launches it and waits (bounded) until the
    /// runner's planning worker has planned it; returns its id.
    pub async fn launch_campaign(&self, body: Value) -> String {
        let c = self.post("/v1/campaigns", body).await;
        assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
        let id = c.body["id"].as_str().unwrap().to_string();
        let l = self
            .post(&format!("/v1/campaigns/{id}/launch"), json!({}))
            .await;
        assert_eq!(l.status, StatusCode::ACCEPTED, "{}", l.body);
        self.wait_planned(&id).await;
        id
    }

    /// Waits (bounded) until the campaign's first run is planned.
    pub async fn wait_planned(&self, id: &str) {
        for _ in 0..500 {
            let s = self.get(&format!("/v1/campaigns/{id}")).await;
            if s.body["runs"][0]["planning_done"] == true {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("campaign {id} was not planned");
    }
}
