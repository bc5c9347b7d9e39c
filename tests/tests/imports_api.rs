//! Imports over HTTP on the local runner: create → PUT the file → progress → report →
//! list → undo; inline multipart; preview with a corrected mapping, then commit.

use mailpilot_tests::app::spawn_app;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn wait_until(app: &mailpilot_tests::app::TestApp, id: &str, done: &[&str]) -> Value {
    for _ in 0..1000 {
        let a = app.get(&format!("/v1/imports/{id}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        if done.contains(&a.body["status"].as_str().unwrap_or_default()) {
            return a.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("import {id} did not reach {done:?}");
}

#[tokio::test]
async fn a_csv_uploaded_to_the_runner_is_imported_reported_and_undone() {
    let app = spawn_app().await;
    let list = app.post("/v1/lists", json!({"name": "Imported"})).await;
    let list_id = list.body["id"].as_str().unwrap().to_string();
    let created = app
        .post(
            "/v1/imports",
            json!({"list_ids": [list_id], "tags": ["csv"], "file_name": "people.csv"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["status"], "pending");
    assert_eq!(created.body["upload"]["method"], "PUT");
    let url = created.body["upload"]["url"].as_str().unwrap();
    assert_eq!(url, format!("/v1/imports/{id}/file"));
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/v1/imports/{id}")
    );

    let file = "\u{feff}Email;First Name;Plan\r\nana@example.com;Ana;pro\r\nbad-address;X;free\r\nbo@example.com;Bo;free\r\nANA@example.com;Ana B;pro\r\n";
    let put = app
        .client
        .put(format!("{}{url}", app.url))
        .bearer_auth(&app.api_key)
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let done = wait_until(&app, &id, &["completed", "completed_with_errors"]).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["rows_read"], 4);
    assert_eq!(done["created"], 2);
    assert_eq!(done["failed"], 1);
    assert_eq!(done["skipped"]["duplicate"], 1);
    assert_eq!(done["delimiter"], "semicolon");
    assert_eq!(done["bytes_processed"], done["bytes_total"]);
    assert!(done["finished_at"].is_string());

    let ana = app.get("/v1/contacts/by-email/ana@example.com").await;
    assert_eq!(ana.body["first_name"], "Ana B");
    assert_eq!(ana.body["attributes"]["tags"], json!(["csv"]));
    assert_eq!(ana.body["import_id"], id.as_str());
    assert_eq!(ana.body["consent"]["source"], format!("import:{id}"));
    let l = app.get(&format!("/v1/lists/{list_id}")).await;
    assert_eq!(l.body["member_count"], 2);

    let report = app
        .client
        .get(format!("{}/v1/imports/{id}/errors", app.url))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), StatusCode::OK);
    assert!(
        report.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = report.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "line,column,value,reason");
    assert!(
        lines[1].starts_with("2,Email,ana@example.com,skipped: duplicate (line 5"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("3,Email,bad-address,is not a valid email address"),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");

    let page = app.get("/v1/imports").await;
    assert_eq!(page.body["data"][0]["id"], id.as_str());

    // Undo: 202 with the import, which ends `reverted` and stays readable.
    let undo = app.delete(&format!("/v1/imports/{id}")).await;
    assert_eq!(undo.status, StatusCode::ACCEPTED, "{}", undo.body);
    let reverted = wait_until(&app, &id, &["reverted"]).await;
    assert_eq!(reverted["reverted"]["contacts_deleted"], 2);
    assert_eq!(reverted["created"], 2);
    let gone = app.get("/v1/contacts/by-email/ana@example.com").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let l = app.get(&format!("/v1/lists/{list_id}")).await;
    assert_eq!(l.body["member_count"], 0);
}

#[tokio::test]
async fn an_inline_multipart_upload_imports_at_once() {
    let app = spawn_app().await;
    let form = reqwest::multipart::Form::new()
        .text("options", r#"{"mode": "upsert"}"#)
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"email,seats\ncy@example.com,3\n".to_vec())
                .file_name("small.csv"),
        );
    let res = app
        .client
        .post(format!("{}/v1/imports", app.url))
        .bearer_auth(&app.api_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert!(body["upload"].is_null());
    assert_eq!(body["file_name"], "small.csv");
    let id = body["id"].as_str().unwrap();
    let done = wait_until(&app, id, &["completed"]).await;
    assert_eq!(done["created"], 1);
    let cy = app.get("/v1/contacts/by-email/cy@example.com").await;
    assert_eq!(cy.body["attributes"]["seats"], 3);

    // A bad option is a 422 naming the field.
    let bad = app.post("/v1/imports", json!({"mode": "sideways"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let bad = app
        .post("/v1/imports", json!({"list_ids": ["ls_nope"]}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["errors"][0]["field"], "/list_ids/0");
}

#[tokio::test]
async fn a_preview_shows_the_mapping_and_writes_nothing_until_commit() {
    let app = spawn_app().await;
    let created = app.post("/v1/imports", json!({"auto_commit": false})).await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let file = "Correo\tNombre\tVIP\ndee@example.com\tDee\ttrue\nnope\tX\tfalse\n";
    let put = app
        .client
        .put(format!("{}/v1/imports/{id}/file", app.url))
        .bearer_auth(&app.api_key)
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    // Without a mapping there is no email column.
    let p = app
        .post(&format!("/v1/imports/{id}/preview"), json!({}))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["delimiter"], "tab");
    assert!(
        p.body["file_error"]
            .as_str()
            .unwrap()
            .contains("no email column")
    );
    // Corrected mapping: typed sample rows and the first errors.
    let p = app
        .post(
            &format!("/v1/imports/{id}/preview"),
            json!({"mapping": {"Correo": "email", "Nombre": "first_name"}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body["file_error"].is_null(), "{}", p.body);
    assert_eq!(p.body["sample"][0]["email"], "dee@example.com");
    assert_eq!(p.body["sample"][0]["attributes"]["VIP"], true);
    assert_eq!(p.body["errors"][0]["line"], 3);
    assert_eq!(p.body["import"]["status"], "previewed");
    let none = app.get("/v1/contacts/by-email/dee@example.com").await;
    assert_eq!(
        none.status,
        StatusCode::NOT_FOUND,
        "a preview writes nothing"
    );

    let c = app
        .post(&format!("/v1/imports/{id}/commit"), json!({}))
        .await;
    assert_eq!(c.status, StatusCode::ACCEPTED, "{}", c.body);
    let done = wait_until(&app, &id, &["completed_with_errors"]).await;
    assert_eq!(done["created"], 1);
    let dee = app.get("/v1/contacts/by-email/dee@example.com").await;
    assert_eq!(dee.body["first_name"], "Dee");
    let again = app
        .post(&format!("/v1/imports/{id}/commit"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}
