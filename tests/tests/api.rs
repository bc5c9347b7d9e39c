//! The HTTP API driven from the outside, as a client would.

use mailpilot_shared::ports::store::Store;
use mailpilot_tests::app::{ADMIN_TOKEN, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::json;

// ---- errors --------------------------------------------------------------------------

#[tokio::test]
async fn errors_are_problem_json_naming_the_field() {
    let app = spawn_app().await;
    let a = app
        .post(
            "/v1/contacts",
            json!({"email": "not-an-address", "locale": "english"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(a.body["status"], 422);
    let fields: Vec<&str> = a.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/email", "/locale"]);

    let a = app
        .post(
            "/v1/contacts",
            json!({"email": "a@b.example", "attributes": []}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["errors"][0]["field"], "/attributes");

    let raw = app
        .client
        .post(format!("{}/v1/contacts", app.url))
        .bearer_auth(&app.api_key)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);

    let a = app.get("/v1/contacts?limit=0").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["errors"][0]["field"], "limit");
    let a = app.get("/v1/contacts?cursor=garbage").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["errors"][0]["field"], "cursor");
    assert_eq!(
        app.get("/v1/nothing-here").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_body_over_4_mb_is_413() {
    let app = spawn_app().await;
    let big = "x".repeat(5 * 1024 * 1024);
    let a = app
        .post(
            "/v1/contacts",
            json!({"email": "a@b.example", "attributes": {"blob": big}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.body["status"], 413);
}

// ---- workspaces and keys ----------------------------------------------------------------

#[tokio::test]
async fn creating_workspaces_needs_the_admin_token() {
    let app = spawn_app().await;
    let a = app
        .call(
            Method::POST,
            "/v1/workspaces",
            Some("wrong"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = app
        .call(
            Method::POST,
            "/v1/workspaces",
            Some(&app.api_key),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = app
        .call(
            Method::POST,
            "/v1/workspaces",
            Some(ADMIN_TOKEN),
            Some(json!({"name": ""})),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, key) = app.create_workspace("Acme").await;
    let me = app
        .call(Method::GET, "/v1/workspace", Some(&key), None)
        .await;
    assert_eq!(me.body["name"], "Acme");

    let disabled = spawn_app_with(|s| s.admin_token = None).await;
    let a = disabled
        .call(
            Method::POST,
            "/v1/workspaces",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn workspace_keeps_its_sending_identity() {
    let app = spawn_app().await;
    let a = app
        .patch(
            "/v1/workspace",
            json!({"company_name": "Acme Ltd", "postal_address": "1 Main St, Springfield", "public_url": "https://mail.acme.example/"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["public_url"], "https://mail.acme.example");
    let a = app
        .patch(
            "/v1/workspace",
            json!({"public_url": "javascript:alert(1)"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["errors"][0]["field"], "/public_url");
    let a = app
        .patch("/v1/workspace", json!({"company_name": null}))
        .await;
    assert!(a.body["company_name"].is_null());
    assert_eq!(a.body["postal_address"], "1 Main St, Springfield");
}

#[tokio::test]
async fn api_keys_are_shown_once_scoped_and_revocable() {
    let app = spawn_app().await;
    let created = app
        .post("/v1/api-keys", json!({"name": "backend", "scope": "read"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let key = created.body["key"].as_str().unwrap().to_string();
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(created.headers["location"].to_str().unwrap().ends_with(&id));

    let listed = app.get("/v1/api-keys").await;
    assert!(
        !listed.body.to_string().contains(&key),
        "a listing never shows a key"
    );
    assert!(listed.body.to_string().contains("\"prefix\""));
    assert!(!listed.body.to_string().contains("hash"));

    assert_eq!(
        app.call(Method::GET, "/v1/contacts", Some(&key), None)
            .await
            .status,
        StatusCode::OK
    );
    let a = app
        .call(
            Method::POST,
            "/v1/lists",
            Some(&key),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    assert_eq!(
        app.delete(&format!("/v1/api-keys/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::GET, "/v1/contacts", Some(&key), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get(&format!("/v1/api-keys/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    // A revoked key is gone: revoking it again finds nothing.
    assert_eq!(
        app.delete(&format!("/v1/api-keys/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| s.key_rate = 2).await;
    let mut limited = None;
    for _ in 0..10 {
        let a = app.get("/v1/contacts").await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(a);
            break;
        }
    }
    let a = limited.expect("the fifth request in a burst of a 2/s key is limited");
    assert!(
        a.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(a.body["status"], 429);
    // Another key is not limited by the first one's use.
    let (_, other) = app.create_workspace("other").await;
    assert_eq!(
        app.call(Method::GET, "/v1/contacts", Some(&other), None)
            .await
            .status,
        StatusCode::OK
    );
}

// ---- idempotency ----------------------------------------------------------------------

#[tokio::test]
async fn a_retried_post_with_the_same_key_returns_the_first_answer_and_changes_nothing() {
    let app = spawn_app().await;
    let body = json!({"email": "idem@x.example"});
    let first = app
        .call_with(
            Method::POST,
            "/v1/contacts",
            Some(&app.api_key),
            Some(body.clone()),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = app
        .call_with(
            Method::POST,
            "/v1/contacts",
            Some(&app.api_key),
            Some(body.clone()),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        app.get("/v1/contacts").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let other = app
        .call_with(
            Method::POST,
            "/v1/contacts",
            Some(&app.api_key),
            Some(json!({"email": "else@x.example"})),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.body["errors"][0]["field"], "Idempotency-Key");

    // Keys are scoped per workspace: B may use "k1" for its own request.
    let (_, key_b) = app.create_workspace("B").await;
    let b = app
        .call_with(
            Method::POST,
            "/v1/contacts",
            Some(&key_b),
            Some(body),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert_ne!(b.body["id"], first.body["id"]);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_have_one_effect() {
    let app = spawn_app().await;
    let calls = (0..8).map(|_| {
        app.call_with(
            Method::POST,
            "/v1/lists",
            Some(&app.api_key),
            Some(json!({"name": "once"})),
            &[("Idempotency-Key", "same")],
        )
    });
    let answers = futures::future::join_all(calls).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty());
    for a in &answers {
        assert!(
            a.status == StatusCode::CREATED || a.status == StatusCode::CONFLICT,
            "{} {}",
            a.status,
            a.body
        );
    }
    let ids: std::collections::HashSet<_> =
        created.iter().map(|a| a.body["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "every success is the same list");
    assert_eq!(
        app.get("/v1/lists").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_replayed_workspace_creation_returns_the_same_key_stored_encrypted() {
    let app = spawn_app().await;
    let call = || {
        app.call_with(
            Method::POST,
            "/v1/workspaces",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "Once"})),
            &[("Idempotency-Key", "create-once")],
        )
    };
    let first = call().await;
    let second = call().await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.body, first.body);
    // The stored response never holds the key in the clear.
    let key = first.body["api_key"].as_str().unwrap();
    let page = app
        .store
        .query(mailpilot_shared::ports::store::Query::partition(
            "admin#idem",
        ))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(!format!("{:?}", page.items[0]).contains(key));
}

// ---- contacts ------------------------------------------------------------------------

#[tokio::test]
async fn contacts_are_unique_by_email_and_external_id_and_found_by_both() {
    let app = spawn_app().await;
    let a = app
        .post(
            "/v1/contacts",
            json!({
                "email": " Ana@Bücher.Example ", "first_name": "Ana", "time_zone": "Europe/Madrid",
                "locale": "es_es", "external_id": "crm-1",
                "consent": {"source": "signup_form", "at": "2026-01-02T03:04:05Z", "ip": "198.51.100.4"},
                "attributes": {"plan": "pro", "seats": 12, "beta": true, "tags": ["a", "b"], "meta": {"x": null}}
            }),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let id = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["email"], "ana@xn--bcher-kva.example");
    assert_eq!(a.body["locale"], "es-ES");
    assert_eq!(a.body["attributes"]["seats"], 12);
    assert_eq!(a.body["attributes"]["tags"], json!(["a", "b"]));
    assert_eq!(a.body["attributes"]["meta"], json!({"x": null}));
    assert_eq!(a.body["consent"]["ip"], "198.51.100.4");

    let dup = app
        .post("/v1/contacts", json!({"email": "ANA@bücher.example"}))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["errors"][0]["field"], "/email");
    let dup = app
        .post(
            "/v1/contacts",
            json!({"email": "other@x.example", "external_id": "crm-1"}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["errors"][0]["field"], "/external_id");

    assert_eq!(
        app.get("/v1/contacts/by-email/ana@b%C3%BCcher.example")
            .await
            .body["id"],
        id.as_str()
    );
    assert_eq!(
        app.get("/v1/contacts/by-external-id/crm-1").await.body["id"],
        id.as_str()
    );

    // Moving the email frees the old one and takes the new one.
    let moved = app
        .patch(
            &format!("/v1/contacts/{id}"),
            json!({"email": "ana@new.example", "external_id": null}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(
        app.get("/v1/contacts/by-email/ana@xn--bcher-kva.example")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/contacts/by-external-id/crm-1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/contacts/by-email/ana@new.example").await.body["id"],
        id.as_str()
    );
    let again = app
        .post(
            "/v1/contacts",
            json!({"email": "ana@bücher.example", "external_id": "crm-1"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    let taken = app
        .patch(
            &format!("/v1/contacts/{id}"),
            json!({"email": "ana@bücher.example"}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);

    // Attributes merge; null removes one.
    let p = app
        .patch(
            &format!("/v1/contacts/{id}"),
            json!({"attributes": {"plan": null, "seats": 13}}),
        )
        .await;
    assert_eq!(
        p.body["attributes"],
        json!({"seats": 13, "beta": true, "tags": ["a", "b"], "meta": {"x": null}})
    );
}

#[tokio::test]
async fn upsert_by_email_creates_then_updates() {
    let app = spawn_app().await;
    let a = app
        .call(
            Method::PUT,
            "/v1/contacts/by-email/Bo@X.example",
            Some(&app.api_key),
            Some(json!({"first_name": "Bo"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let b = app
        .call(
            Method::PUT,
            "/v1/contacts/by-email/bo@x.example",
            Some(&app.api_key),
            Some(json!({"last_name": "Li"})),
        )
        .await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.body["id"], a.body["id"]);
    assert_eq!(b.body["first_name"], "Bo");
    assert_eq!(b.body["last_name"], "Li");
    let bad = app
        .call(
            Method::PUT,
            "/v1/contacts/by-email/nope",
            Some(&app.api_key),
            Some(json!({})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn status_is_derived_from_the_one_suppression_item() {
    let app = spawn_app().await;
    let id = app.contact("sam@x.example").await;
    assert_eq!(
        app.get(&format!("/v1/contacts/{id}")).await.body["status"],
        "active"
    );
    let s = app
        .post(
            "/v1/suppressions",
            json!({"email": "SAM@x.example", "reason": "hard_bounce", "source": "ses"}),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED);
    assert_eq!(
        app.get(&format!("/v1/contacts/{id}")).await.body["status"],
        "bounced"
    );
    // Suppressing again keeps the first reason.
    let s = app
        .post(
            "/v1/suppressions",
            json!({"email": "sam@x.example", "reason": "manual"}),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["reason"], "hard_bounce");

    app.contact("kim@x.example").await;
    let only = app.get("/v1/contacts?status=bounced").await;
    assert_eq!(only.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(only.body["data"][0]["email"], "sam@x.example");
    assert_eq!(
        app.get("/v1/suppressions?reason=hard_bounce").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Deleting the contact keeps the suppression; coming back, it is still bounced.
    assert_eq!(
        app.delete(&format!("/v1/contacts/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    let back = app
        .post("/v1/contacts", json!({"email": "sam@x.example"}))
        .await;
    assert_eq!(back.body["status"], "bounced");
    assert_eq!(
        app.delete("/v1/suppressions/sam@x.example").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!(
            "/v1/contacts/{}",
            back.body["id"].as_str().unwrap()
        ))
        .await
        .body["status"],
        "active"
    );
    assert_eq!(
        app.delete("/v1/suppressions/sam@x.example").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn contact_pages_return_every_contact_exactly_once() {
    let app = spawn_app().await;
    let mut created = std::collections::HashSet::new();
    for i in 0..23 {
        created.insert(app.contact(&format!("p{i}@x.example")).await);
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/contacts?limit=5&cursor={c}"),
            None => "/v1/contacts?limit=5".into(),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for c in page.body["data"].as_array().unwrap() {
            assert!(
                seen.insert(c["id"].as_str().unwrap().to_string()),
                "seen twice"
            );
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, created);
}

// ---- lists ---------------------------------------------------------------------------

#[tokio::test]
async fn bulk_membership_reports_per_item_and_counts_exactly() {
    let app = spawn_app().await;
    let list = app
        .post("/v1/lists", json!({"name": "News", "double_opt_in": true}))
        .await;
    let list_id = list.body["id"].as_str().unwrap().to_string();
    let a = app.contact("a@x.example").await;
    let b = app.contact("b@x.example").await;
    let missing = "ct_0000000000000000000000000a".to_string();
    let r = app
        .post(
            &format!("/v1/lists/{list_id}/members"),
            json!({"contact_ids": [a, b, a, missing, "junk"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let results: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        [
            "added",
            "added",
            "duplicate",
            "contact_not_found",
            "contact_not_found"
        ]
    );
    assert_eq!(r.body["changed"], 2);
    let r = app
        .post(
            &format!("/v1/lists/{list_id}/members"),
            json!({"contact_ids": [a]}),
        )
        .await;
    assert_eq!(r.body["data"][0]["result"], "already_member");
    assert_eq!(
        app.get(&format!("/v1/lists/{list_id}")).await.body["member_count"],
        2
    );
    let members = app.get(&format!("/v1/lists/{list_id}/members")).await;
    assert_eq!(
        members.body["data"][0]["status"], "pending",
        "double opt-in keeps members pending"
    );
    let in_list = app.get(&format!("/v1/contacts?list_id={list_id}")).await;
    assert_eq!(in_list.body["data"].as_array().unwrap().len(), 2);

    let r = app
        .post(
            &format!("/v1/lists/{list_id}/members/remove"),
            json!({"contact_ids": [a, missing]}),
        )
        .await;
    let results: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["removed", "not_member"]);
    assert_eq!(
        app.get(&format!("/v1/lists/{list_id}")).await.body["member_count"],
        1
    );

    // Deleting a member contact takes it out of the count too.
    assert_eq!(
        app.delete(&format!("/v1/contacts/{b}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/v1/lists/{list_id}")).await.body["member_count"],
        0
    );

    let too_many: Vec<String> = (0..1001).map(|_| a.clone()).collect();
    let r = app
        .post(
            &format!("/v1/lists/{list_id}/members"),
            json!({"contact_ids": too_many}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["field"], "/contact_ids");

    let renamed = app
        .patch(&format!("/v1/lists/{list_id}"), json!({"name": "Weekly"}))
        .await;
    assert_eq!(renamed.body["name"], "Weekly");
    assert_eq!(
        app.delete(&format!("/v1/lists/{list_id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/v1/lists/{list_id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn concurrent_bulk_adds_count_each_member_once() {
    let app = spawn_app().await;
    let list_id = app.post("/v1/lists", json!({"name": "Race"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = vec![];
    for i in 0..120 {
        ids.push(app.contact(&format!("r{i}@x.example")).await);
    }
    let path = format!("/v1/lists/{list_id}/members");
    let calls = (0..4).map(|_| app.post(&path, json!({"contact_ids": ids})));
    let answers = futures::future::join_all(calls).await;
    let added: u64 = answers
        .iter()
        .map(|a| a.body["changed"].as_u64().unwrap())
        .sum();
    assert_eq!(added, 120);
    assert_eq!(
        app.get(&format!("/v1/lists/{list_id}")).await.body["member_count"],
        120
    );
}

// ---- delete workspace data ---------------------------------------------------------------

#[tokio::test]
async fn deleting_workspace_data_leaves_nothing_but_the_workspace_keys_and_job() {
    let app = spawn_app().await;
    let (ws_b, key_b) = app.create_workspace("B").await;
    for (key, n) in [(app.api_key.clone(), 150), (key_b.clone(), 5)] {
        let list = app
            .call(
                Method::POST,
                "/v1/lists",
                Some(&key),
                Some(json!({"name": "L"})),
            )
            .await;
        let list_id = list.body["id"].as_str().unwrap().to_string();
        let mut ids = vec![];
        for i in 0..n {
            let c = app
                .call(
                    Method::POST,
                    "/v1/contacts",
                    Some(&key),
                    Some(
                        json!({"email": format!("d{i}@x.example"), "external_id": format!("e{i}")}),
                    ),
                )
                .await;
            ids.push(c.body["id"].as_str().unwrap().to_string());
        }
        app.call(
            Method::POST,
            &format!("/v1/lists/{list_id}/members"),
            Some(&key),
            Some(json!({"contact_ids": ids})),
        )
        .await;
        app.call(
            Method::POST,
            "/v1/suppressions",
            Some(&key),
            Some(json!({"email": "s@x.example"})),
        )
        .await;
        app.call_with(
            Method::POST,
            "/v1/lists",
            Some(&key),
            Some(json!({"name": "M"})),
            &[("Idempotency-Key", "i")],
        )
        .await;
    }
    let ws_a = app.workspace_id.clone();
    let prefix_a = format!("ws#{ws_a}#");
    let before = app.store.count_items_with_pk_prefix(&prefix_a).unwrap();
    assert!(before > 450, "{before} items before");
    let b_before = app
        .store
        .count_items_with_pk_prefix(&format!("ws#{ws_b}#"))
        .unwrap();

    let job = app.delete("/v1/workspace/data").await;
    assert_eq!(job.status, StatusCode::ACCEPTED);
    assert!(
        job.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/jobs/")
    );
    let done = app
        .wait_for_job(&app.api_key, job.body["id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"], "completed");
    assert!(done["deleted_items"].as_i64().unwrap() >= 450);

    // What stays: the workspace record, its one API key, and this job.
    assert_eq!(app.store.count_items_with_pk_prefix(&prefix_a).unwrap(), 3);
    assert_eq!(
        app.store
            .count_items_with_pk_prefix(&format!("ws#{ws_a}#meta"))
            .unwrap(),
        1
    );
    assert_eq!(
        app.store
            .count_items_with_pk_prefix(&format!("ws#{ws_a}#apikeys"))
            .unwrap(),
        1
    );
    assert_eq!(
        app.store
            .count_items_with_pk_prefix(&format!("ws#{ws_a}#jobs"))
            .unwrap(),
        1
    );
    assert_eq!(app.get("/v1/contacts").await.body["data"], json!([]));
    assert_eq!(app.get("/v1/workspace").await.status, StatusCode::OK);
    // The other workspace is untouched.
    assert_eq!(
        app.store
            .count_items_with_pk_prefix(&format!("ws#{ws_b}#"))
            .unwrap(),
        b_before
    );
    assert_eq!(
        app.call(Method::GET, "/v1/contacts", Some(&key_b), None)
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn a_location_built_from_an_email_points_at_that_email() {
    let app = spawn_app().await;
    let a = app
        .post("/v1/suppressions", json!({"email": "a/b+c@x.example"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let location = a.headers["location"].to_str().unwrap().to_string();
    assert_eq!(location, "/v1/suppressions/a%2Fb%2Bc@x.example");
    assert_eq!(app.get(&location).await.body["email"], "a/b+c@x.example");
    assert_eq!(app.delete(&location).await.status, StatusCode::NO_CONTENT);
}
