//! Tenant isolation, table-driven over the OpenAPI document: every route of workspace A
//! is tried with workspace B's key and A's ids. The answer is always 404 (never A's
//! data, never 403 that would confirm it exists), and A's data is unchanged afterwards.
//! A route added later without a fixture here fails this test, so nobody has to
//! remember to add it.

use std::collections::HashMap;

use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;
use mailpilot_tests::app::{TestApp, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Fixtures {
    contact_id: String,
    email: String,
    external_id: String,
    list_id: String,
    suppressed: String,
    key_id: String,
    job_id: String,
    campaign_id: String,
    message_id: String,
    template_id: String,
    component_id: String,
    import_id: String,
    provider_id: String,
    sender_id: String,
    outbox_message: String,
}

/// A's SMTP password: never in any answer, to anyone.
const A_SECRET: &str = "a-smtp-password-never-shown";

async fn workspace_a(app: &TestApp) -> Fixtures {
    // A finished delete job first, so the jobs routes have an id to try.
    let job = app.delete("/v1/workspace/data").await;
    assert_eq!(job.status, StatusCode::ACCEPTED);
    let job_id = job.body["id"].as_str().unwrap().to_string();
    app.wait_for_job(&app.api_key, &job_id).await;

    let email = "alice@a.example".to_string();
    let c = app
        .post(
            "/v1/contacts",
            json!({"email": email, "external_id": "a-ext-1", "first_name": "Alice"}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let contact_id = c.body["id"].as_str().unwrap().to_string();
    let l = app.post("/v1/lists", json!({"name": "A's list"})).await;
    let list_id = l.body["id"].as_str().unwrap().to_string();
    let m = app
        .post(
            &format!("/v1/lists/{list_id}/members"),
            json!({"contact_ids": [contact_id]}),
        )
        .await;
    assert_eq!(m.body["changed"], 1);
    let s = app
        .post("/v1/suppressions", json!({"email": "gone@a.example"}))
        .await;
    assert_eq!(s.status, StatusCode::CREATED);
    let k = app
        .post("/v1/api-keys", json!({"name": "a-key", "scope": "read"}))
        .await;
    let key_id = k.body["id"].as_str().unwrap().to_string();
    let cmp = app
        .post(
            "/v1/campaigns",
            json!({"name": "A's campaign", "sender_id": LOCAL_SENDER_ID, "list_ids": [list_id],
                   "subject": "Hello", "text": "Hi"}),
        )
        .await;
    assert_eq!(cmp.status, StatusCode::CREATED, "{}", cmp.body);
    let campaign_id = cmp.body["id"].as_str().unwrap().to_string();
    // The delete job above removed the local sender too: put it back.
    mailpilot_shared::usecases::senders::ensure_local_sender(app.store.as_ref(), &app.workspace_id)
        .await
        .unwrap();
    let m = app
        .post(
            "/v1/send",
            json!({"sender_id": LOCAL_SENDER_ID, "to": email, "subject": "A's secret", "text": "hi"}),
        )
        .await;
    assert_eq!(m.status, StatusCode::ACCEPTED, "{}", m.body);
    let message_id = m.body["id"].as_str().unwrap().to_string();
    let c = app
        .post(
            "/v1/components",
            json!({"name": "a-card", "body": "<b>{{title}}</b>",
                   "parameters": [{"name": "title", "type": "string", "default": "A"}]}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let component_id = c.body["id"].as_str().unwrap().to_string();
    let t = app
        .post(
            "/v1/templates",
            json!({"name": "A's template", "subject": "For A", "html": "<p>{{> a-card}}</p>"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{}", t.body);
    let template_id = t.body["id"].as_str().unwrap().to_string();
    // A finished import (with one report line), so the import routes have an id to try.
    let i = app.post("/v1/imports", json!({})).await;
    assert_eq!(i.status, StatusCode::CREATED, "{}", i.body);
    let import_id = i.body["id"].as_str().unwrap().to_string();
    let put = app
        .client
        .put(format!("{}/v1/imports/{import_id}/file", app.url))
        .bearer_auth(&app.api_key)
        .body("email\nimported@a.example\nnot-an-email\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    for _ in 0..500 {
        let a = app.get(&format!("/v1/imports/{import_id}")).await;
        if a.body["status"] == "completed_with_errors" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pc = app
        .post(
            "/v1/providers",
            json!({"name": "A's relay", "settings": {"kind": "smtp", "host": "smtp.a.example",
                   "username": "a", "password": A_SECRET}}),
        )
        .await;
    assert_eq!(pc.status, StatusCode::CREATED, "{}", pc.body);
    let provider_id = pc.body["id"].as_str().unwrap().to_string();
    let sp = app
        .post(
            "/v1/senders",
            json!({"from_email": "news@a.example", "connection_id": provider_id}),
        )
        .await;
    assert_eq!(sp.status, StatusCode::CREATED, "{}", sp.body);
    let sender_id = sp.body["id"].as_str().unwrap().to_string();
    // A message in A's outbox, as the outbox provider writes it.
    let outbox = app.data_dir.join("outbox").join(&app.workspace_id);
    std::fs::create_dir_all(&outbox).unwrap();
    let outbox_message = "msg_aaaaaaaaaaaaaaaaaaaaaaaaaa".to_string();
    std::fs::write(
        outbox.join(format!("{outbox_message}.eml")),
        "To: alice@a.example\r\nSubject: for A only\r\n\r\nhi\r\n",
    )
    .unwrap();
    Fixtures {
        campaign_id,
        provider_id,
        sender_id,
        outbox_message,
        contact_id,
        email,
        external_id: "a-ext-1".into(),
        list_id,
        suppressed: "gone@a.example".into(),
        key_id,
        job_id,
        message_id,
        template_id,
        component_id,
        import_id,
    }
}

/// The value for each path parameter of each route template.
fn substitute(template: &str, f: &Fixtures) -> String {
    let params: HashMap<&str, &str> = match template {
        "/v1/jobs/{id}" => HashMap::from([("id", f.job_id.as_str())]),
        "/v1/api-keys/{id}" => HashMap::from([("id", f.key_id.as_str())]),
        "/v1/contacts/{id}" => HashMap::from([("id", f.contact_id.as_str())]),
        "/v1/contacts/by-email/{email}" => HashMap::from([("email", f.email.as_str())]),
        "/v1/contacts/by-external-id/{external_id}" => {
            HashMap::from([("external_id", f.external_id.as_str())])
        }
        "/v1/lists/{id}" | "/v1/lists/{id}/members" | "/v1/lists/{id}/members/remove" => {
            HashMap::from([("id", f.list_id.as_str())])
        }
        "/v1/suppressions/{email}" => HashMap::from([("email", f.suppressed.as_str())]),
        t if t.starts_with("/v1/campaigns/{id}")
            || t.starts_with("/v1/analytics/campaigns/{id}") =>
        {
            HashMap::from([("id", f.campaign_id.as_str())])
        }
        "/v1/messages/{id}" => HashMap::from([("id", f.message_id.as_str())]),
        "/v1/templates/{id}"
        | "/v1/templates/{id}/versions"
        | "/v1/templates/{id}/diff"
        | "/v1/templates/{id}/publish"
        | "/v1/templates/{id}/preview" => HashMap::from([("id", f.template_id.as_str())]),
        "/v1/templates/{id}/versions/{version}" => {
            HashMap::from([("id", f.template_id.as_str()), ("version", "1")])
        }
        "/v1/components/{id}" | "/v1/components/{id}/preview" => {
            HashMap::from([("id", f.component_id.as_str())])
        }
        "/v1/imports/{id}"
        | "/v1/imports/{id}/file"
        | "/v1/imports/{id}/preview"
        | "/v1/imports/{id}/commit"
        | "/v1/imports/{id}/errors" => HashMap::from([("id", f.import_id.as_str())]),
        "/v1/providers/{id}" | "/v1/providers/{id}/verify" => {
            HashMap::from([("id", f.provider_id.as_str())])
        }
        "/v1/senders/{id}" => HashMap::from([("id", f.sender_id.as_str())]),
        "/v1/outbox/{message_id}" => HashMap::from([("message_id", f.outbox_message.as_str())]),
        other if other.contains('{') => {
            panic!("no tenant-isolation fixture for {other}: add one here")
        }
        other => HashMap::from([("", other)]),
    };
    let mut path = template.to_string();
    for (name, value) in params {
        if !name.is_empty() {
            path = path.replace(&format!("{{{name}}}"), value);
        }
    }
    path
}

fn body_for(method: &Method, template: &str, f: &Fixtures) -> Option<Value> {
    let body = match (method.as_str(), template) {
        ("PATCH", "/v1/workspace") => json!({"name": "renamed by B"}),
        ("PATCH", "/v1/contacts/{id}") => json!({"first_name": "Mallory"}),
        ("PUT", "/v1/contacts/by-email/{email}") => json!({"first_name": "Mallory"}),
        ("POST", "/v1/contacts") => json!({"email": "bob@b.example"}),
        ("PATCH", "/v1/lists/{id}") => json!({"name": "taken by B"}),
        ("POST", "/v1/lists") => json!({"name": "B's list"}),
        ("POST", "/v1/lists/{id}/members") | ("POST", "/v1/lists/{id}/members/remove") => {
            json!({"contact_ids": [f.contact_id]})
        }
        // A's list cannot be a target of B's campaign (answered 422, naming the field).
        ("POST", "/v1/campaigns") => json!({"name": "B's", "sender_id": "snd_b",
            "list_ids": [f.list_id], "subject": "s", "text": "t"}),
        ("PATCH", "/v1/campaigns/{id}") => json!({"name": "taken by B"}),
        // A test copy of A's campaign: not found for B.
        ("POST", "/v1/campaigns/{id}/test") => json!({"to": "bob@b.example"}),
        ("POST", "/v1/suppressions") => json!({"email": "someone@b.example"}),
        ("POST", "/v1/api-keys") => json!({"name": "b", "scope": "full"}),
        ("POST", "/v1/workspaces") => json!({"name": "x"}),
        // A's sender: B may not send through it.
        // A's own SMTP sender (every workspace's local outbox sender shares one id, so
        // that one would be B's own): B may not send through it.
        ("POST", "/v1/send") => {
            json!({"sender_id": f.sender_id, "to": "bob@b.example", "subject": "s", "text": "t"})
        }
        ("POST", "/v1/campaigns/{id}/resend") => json!({"subject": "Again, from B"}),
        ("POST", "/v1/templates") => json!({"name": "B's", "subject": "s", "html": "<p>b</p>"}),
        ("PATCH", "/v1/templates/{id}") => json!({"subject": "taken by B"}),
        ("POST", "/v1/templates/{id}/publish") => json!({"version": 1}),
        ("POST", "/v1/components") => json!({"name": "b-card", "body": "<b>b</b>"}),
        ("PATCH", "/v1/components/{id}") => json!({"body": "<b>taken by B</b>"}),
        ("POST", "/v1/providers") => json!({"name": "B's outbox", "settings": {"kind": "outbox"}}),
        ("PATCH", "/v1/providers/{id}") => json!({"name": "taken by B"}),
        // B's own default outbox connection (the runner gives every workspace one).
        ("POST", "/v1/senders") => json!({"from_email": "b@b.example",
            "connection_id": mailpilot_shared::usecases::providers::LOCAL_OUTBOX_ID}),
        ("PATCH", "/v1/senders/{id}") => json!({"from_name": "Mallory"}),
        (m, _) if m == "POST" || m == "PUT" || m == "PATCH" => json!({}),
        _ => return None,
    };
    Some(body)
}

fn operations(doc: &Value) -> Vec<(Method, String, bool)> {
    let mut ops = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let public = op["security"].as_array().is_some_and(|s| s.is_empty());
            ops.push((m, path.clone(), public));
        }
    }
    // Deleting B's own data last, so it cannot hide anything the other calls did.
    ops.sort_by_key(|(m, p, _)| (p == "/v1/workspace/data", m.to_string(), p.clone()));
    ops
}

/// The first of A's ids or values found in an answer. `given` is what the caller sent
/// itself (an email in the path comes back in B's own contact), which is no leak.
fn leaks(body: &Value, f: &Fixtures, ws_a: &str, given: &str) -> Option<String> {
    let text = body.to_string();
    [
        ws_a,
        &f.contact_id,
        &f.email,
        &f.list_id,
        &f.suppressed,
        &f.message_id,
        &f.key_id,
        &f.job_id,
        &f.external_id,
        &f.campaign_id,
        &f.template_id,
        &f.component_id,
        &f.import_id,
        &f.provider_id,
        &f.sender_id,
        &f.outbox_message,
        A_SECRET,
        "for A only",
    ]
    .into_iter()
    .filter(|needle| !given.contains(*needle))
    .find(|needle| text.contains(*needle))
    .map(|s| s.to_string())
}

#[tokio::test]
async fn every_route_with_another_workspaces_key_finds_nothing_of_workspace_a() {
    let app = spawn_app().await;
    let f = workspace_a(&app).await;
    let (_ws_b, key_b) = app.create_workspace("B").await;
    let doc = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let ops = operations(&doc);
    assert!(
        ops.len() >= 25,
        "the document lists {} operations",
        ops.len()
    );

    for (method, template, public) in &ops {
        if *public {
            continue;
        }
        let path = substitute(template, &f);
        let body = body_for(method, template, &f);
        let a = app.call(method.clone(), &path, Some(&key_b), body).await;
        let what = format!("{method} {template} with B's key");
        assert!(
            !a.status.is_server_error(),
            "{what}: {} {}",
            a.status,
            a.body
        );
        let given = if *method == Method::PUT {
            path.as_str()
        } else {
            ""
        };
        if let Some(leak) = leaks(&a.body, &f, &app.workspace_id, given) {
            panic!("{what} answered with workspace A's {leak}: {}", a.body);
        }
        match template.as_str() {
            // The admin route does not take workspace keys at all.
            "/v1/workspaces" => assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}"),
            "/v1/campaigns" if *method == Method::POST => {
                assert_eq!(
                    a.status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{what}: {}",
                    a.body
                );
                assert_eq!(a.body["errors"][0]["field"], "/list_ids/0", "{what}");
            }
            // Another workspace's sender does not exist for B.
            "/v1/send" => {
                assert_eq!(
                    a.status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{what}: {}",
                    a.body
                );
                assert_eq!(a.body["errors"][0]["field"], "/sender_id", "{what}");
            }
            // An upsert by email creates the caller's own contact: never A's.
            "/v1/contacts/by-email/{email}" if *method == Method::PUT => {
                assert_eq!(a.status, StatusCode::CREATED, "{what}: {}", a.body)
            }
            t if t.contains('{') => {
                assert_eq!(a.status, StatusCode::NOT_FOUND, "{what}: {}", a.body)
            }
            _ => assert!(a.status.is_success(), "{what}: {} {}", a.status, a.body),
        }
    }

    // A's data is all still there, unchanged.
    let c = app.get(&format!("/v1/contacts/{}", f.contact_id)).await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.body["first_name"], "Alice");
    assert_eq!(c.body["status"], "active");
    let l = app.get(&format!("/v1/lists/{}", f.list_id)).await;
    assert_eq!(l.body["name"], "A's list");
    assert_eq!(l.body["member_count"], 1);
    assert_eq!(
        app.get(&format!("/v1/suppressions/{}", f.suppressed))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/v1/api-keys/{}", f.key_id)).await.status,
        StatusCode::OK
    );
    let pc = app.get(&format!("/v1/providers/{}", f.provider_id)).await;
    assert_eq!(pc.body["name"], "A's relay", "{}", pc.body);
    let sp = app.get(&format!("/v1/senders/{}", f.sender_id)).await;
    assert_eq!(sp.body["from_name"], Value::Null, "{}", sp.body);
    assert_eq!(
        app.get(&format!("/v1/outbox/{}", f.outbox_message))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/v1/contacts/by-external-id/{}", f.external_id))
            .await
            .status,
        StatusCode::OK
    );
    let cmp = app.get(&format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(cmp.body["name"], "A's campaign");
    assert_eq!(cmp.body["state"], "draft");
    assert_eq!(app.get("/v1/workspace").await.body["name"], "Demo");
    let t = app.get(&format!("/v1/templates/{}", f.template_id)).await;
    assert_eq!(t.body["latest_version"], 1);
    assert_eq!(t.body["latest"]["subject"], "For A");
    let c = app.get(&format!("/v1/components/{}", f.component_id)).await;
    assert_eq!(c.body["body"], "<b>{{title}}</b>");
}

#[tokio::test]
async fn a_read_key_may_only_read() {
    let app = spawn_app().await;
    let f = workspace_a(&app).await;
    let read_key = app
        .post("/v1/api-keys", json!({"name": "reader", "scope": "read"}))
        .await
        .body["key"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    for (method, template, public) in operations(&doc) {
        if public || template == "/v1/workspaces" {
            continue;
        }
        let path = substitute(&template, &f);
        let body = body_for(&method, &template, &f);
        let a = app.call(method.clone(), &path, Some(&read_key), body).await;
        if method == Method::GET {
            assert_eq!(
                a.status,
                StatusCode::OK,
                "GET {template} with a read key: {}",
                a.body
            );
        } else {
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{method} {template} with a read key: {}",
                a.body
            );
        }
    }
}
