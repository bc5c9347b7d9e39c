//! Templates and components over HTTP: versions, publish, diff, preview, validation
//! (every problem listed, with line and column), component parameters; and the seeded
//! starter templates rendered into real multipart messages.

use mailpilot_shared::mime::{self, Mailbox, MessageParts};
use mailpilot_shared::model::links::{LinkKeys, LinkToken};
use mailpilot_shared::usecases::templates::{self, Content, MessageContext, Recipient};
use mailpilot_tests::app::{TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

const HTML: &str = r#"<html><body>
<p>Hi {{default first_name "there"}}, your plan: {{attributes.plan}}</p>
<a href="https://shop.example/sale">Sale</a>
<p>{{workspace.postal_address}} <a href="{{unsubscribe_url}}">Unsubscribe</a></p>
</body></html>"#;

async fn create_template(app: &TestApp, body: Value) -> Value {
    let a = app.post("/v1/templates", body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn templates_are_versioned_published_and_diffed() {
    let app = spawn_app().await;
    let t = create_template(
        &app,
        json!({"name": "Sale", "subject": "Sale for {{first_name}}", "html": HTML}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["latest_version"], 1);
    assert_eq!(t["published_version"], 1);
    assert_eq!(t["latest"]["links"].as_array().unwrap().len(), 2);
    assert_eq!(t["latest"]["warnings"], json!([]));
    assert!(
        t["latest"]["text_template"]
            .as_str()
            .unwrap()
            .contains("Sale (https://shop.example/sale)")
    );

    // A save is a new version; the published one stays until published.
    let a = app
        .patch(
            &format!("/v1/templates/{id}"),
            json!({"subject": "Big sale for {{first_name}}"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["latest_version"], 2);
    assert_eq!(a.body["published_version"], 1);
    assert_eq!(a.body["latest"]["html"], HTML, "the HTML carries over");

    let v = app.get(&format!("/v1/templates/{id}/versions")).await;
    let versions: Vec<_> = v.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    let v1 = app.get(&format!("/v1/templates/{id}/versions/1")).await;
    assert_eq!(v1.body["subject"], "Sale for {{first_name}}");
    assert_eq!(
        app.get(&format!("/v1/templates/{id}/versions/3"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let d = app.get(&format!("/v1/templates/{id}/diff")).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(
        (d.body["from"].as_u64(), d.body["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(d.body["changes"][0]["field"], "subject");
    assert!(
        d.body["changes"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("-Sale for {{first_name}}\n+Big sale for {{first_name}}\n")
    );
    let d = app.get(&format!("/v1/templates/{id}/diff?from=0")).await;
    assert_eq!(d.status, StatusCode::BAD_REQUEST);

    // Preview renders the newest version by default, or a chosen one.
    let p = app
        .post(
            &format!("/v1/templates/{id}/preview"),
            json!({"data": {"first_name": "Zoë <b>", "attributes": {}}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["subject"], "Big sale for Zoë <b>");
    assert!(
        p.body["html"]
            .as_str()
            .unwrap()
            .contains("Hi Zoë &lt;b&gt;")
    );
    assert_eq!(
        p.body["missing_variables"],
        json!(["attributes.plan", "workspace.postal_address"])
    );
    let p = app
        .post(
            &format!("/v1/templates/{id}/preview"),
            json!({"version": 1}),
        )
        .await;
    assert_eq!(p.body["subject"], "Sale for Ana");

    let pub2 = app
        .post(
            &format!("/v1/templates/{id}/publish"),
            json!({"version": 2}),
        )
        .await;
    assert_eq!(pub2.status, StatusCode::OK, "{}", pub2.body);
    assert_eq!(pub2.body["published_version"], 2);
    let bad = app
        .post(
            &format!("/v1/templates/{id}/publish"),
            json!({"version": 9}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&bad.body), ["/version"]);

    assert_eq!(
        app.delete(&format!("/v1/templates/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/v1/templates/{id}/versions/1"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_invalid_template_is_422_listing_every_problem_with_positions() {
    let app = spawn_app().await;
    let a = app
        .post(
            "/v1/templates",
            json!({
                "name": "Broken",
                "subject": "Hi {{first_name",
                "html": "<p>\n  {{#if x}}never closed</p>",
            }),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(fields(&a.body), ["/subject", "/html"]);
    for e in a.body["errors"].as_array().unwrap() {
        assert!(
            e["line"].as_u64().is_some() && e["column"].as_u64().is_some(),
            "{e}"
        );
    }

    let a = app
        .post(
            "/v1/templates",
            json!({
                "name": "Bad MJML",
                "format": "mjml",
                "subject": "x",
                "html": "<mjml><mj-body>\n<mj-section>\n<mj-column>\n</mj-section></mj-body></mjml>",
            }),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert_eq!(a.body["errors"][0]["field"], "/html");
    assert!(a.body["errors"][0]["line"].as_u64().is_some(), "{}", a.body);

    // Warnings do not block a save.
    let t = create_template(
        &app,
        json!({"name": "Bare", "subject": "x", "html": "<p><img src=\"http://x.example/a.png\"><a href=\"http://x.example\">x</a></p>"}),
    )
    .await;
    let codes: Vec<_> = t["latest"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "image_without_alt",
            "insecure_link",
            "no_unsubscribe_link",
            "no_postal_address"
        ]
    );
}

#[tokio::test]
async fn components_are_validated_used_and_snapshotted() {
    let app = spawn_app().await;
    let c = app
        .post(
            "/v1/components",
            json!({
                "name": "cta",
                "body": "<a href=\"{{url}}\" class=\"cta\">{{label}}</a>",
                "parameters": [
                    {"name": "label", "type": "string", "required": true},
                    {"name": "url", "type": "url", "required": true}
                ]
            }),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let cid = c.body["id"].as_str().unwrap().to_string();
    let dup = app
        .post("/v1/components", json!({"name": "cta", "body": "x"}))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = app
        .post(
            "/v1/components",
            json!({"name": "Bad Name", "body": "{{#if}", "parameters": [{"name": "if", "type": "number", "default": "x"}]}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        fields(&bad.body),
        [
            "/name",
            "/body",
            "/parameters/0/name",
            "/parameters/0/default"
        ]
    );

    // Preview: a missing required parameter is a 422 naming it.
    let p = app
        .post(
            &format!("/v1/components/{cid}/preview"),
            json!({"params": {"label": "Go"}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    assert_eq!(fields(&p.body), ["/params/url"]);
    let p = app
        .post(
            &format!("/v1/components/{cid}/preview"),
            json!({"params": {"label": "Go & see", "url": "https://x.example/"}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body["html"]
            .as_str()
            .unwrap()
            .contains(r#"<a href="https://x.example/" class="cta">Go &amp; see</a>"#),
        "{}",
        p.body
    );

    // A template using it without a required parameter is a 422 with a position.
    let a = app
        .post(
            "/v1/templates",
            json!({"name": "T", "subject": "s", "html": "<p>\n{{> cta label=\"Start\"}}</p>"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert_eq!(a.body["errors"][0]["line"], 2);
    assert!(
        a.body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("url is required")
    );

    let t = create_template(
        &app,
        json!({"name": "T", "subject": "s", "html": "<p>{{> cta label=\"Start\" url=start_url}}</p>"}),
    )
    .await;
    let tid = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["latest"]["components"][0]["name"], "cta");
    assert_eq!(t["latest"]["components"][0]["version"], 1);

    // Changing the component changes only versions saved afterwards.
    let ch = app
        .patch(
            &format!("/v1/components/{cid}"),
            json!({"body": "<a href=\"{{url}}\" class=\"new\">{{label}}</a>"}),
        )
        .await;
    assert_eq!(ch.status, StatusCode::OK, "{}", ch.body);
    assert_eq!(ch.body["version"], 2);
    let data = json!({"data": {"start_url": "https://go.example/"}});
    let p = app
        .post(&format!("/v1/templates/{tid}/preview"), data.clone())
        .await;
    assert!(p.body["html"].as_str().unwrap().contains("class=\"cta\""));
    let v2 = app
        .patch(&format!("/v1/templates/{tid}"), json!({"subject": "s2"}))
        .await;
    assert_eq!(v2.body["latest"]["components"][0]["version"], 2);
    let p = app
        .post(&format!("/v1/templates/{tid}/preview"), data)
        .await;
    assert!(p.body["html"].as_str().unwrap().contains("class=\"new\""));
    let d = app
        .get(&format!("/v1/templates/{tid}/diff?from=1&to=2"))
        .await;
    assert_eq!(
        d.body["components"],
        json!([{"name": "cta", "change": "changed"}])
    );

    assert_eq!(
        app.delete(&format!("/v1/components/{cid}")).await.status,
        StatusCode::NO_CONTENT
    );
    // The name is free again.
    let again = app
        .post("/v1/components", json!({"name": "cta", "body": "x"}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
}

#[tokio::test]
async fn preview_uses_a_contact_and_can_show_tracking() {
    let app = spawn_app().await;
    let c = app
        .post(
            "/v1/contacts",
            json!({"email": "ana@example.com", "first_name": "Ana", "attributes": {"plan": "pro"}}),
        )
        .await;
    let contact = c.body["id"].as_str().unwrap().to_string();
    let t = create_template(
        &app,
        json!({"name": "T", "subject": "Hi {{first_name}}", "html": HTML}),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let p = app
        .post(
            &format!("/v1/templates/{id}/preview"),
            json!({"contact_id": contact, "tracking": true}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["subject"], "Hi Ana");
    let html = p.body["html"].as_str().unwrap();
    assert!(html.contains("your plan: pro"));
    assert!(html.contains(&format!("{}/t/c/", app.url)), "{html}");
    assert!(html.contains(&format!("{}/t/o/", app.url)), "{html}");
    assert!(html.contains(&format!("{}/u/", app.url)), "{html}");
    let p = app
        .post(
            &format!("/v1/templates/{id}/preview"),
            json!({"contact_id": "ct_00000000000000000000000000"}),
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p.body), ["/contact_id"]);
}

#[tokio::test]
async fn a_new_workspace_has_the_starter_templates_and_components() {
    let app = spawn_app().await;
    let t = app.get("/v1/templates").await;
    let mut names: Vec<_> = t.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Monthly newsletter",
            "Onboarding day 2",
            "Onboarding day 5",
            "We miss you",
            "Welcome"
        ]
    );
    let c = app.get("/v1/components").await;
    let mut names: Vec<_> = c.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["button", "footer", "header"]);
    for t in t.body["data"].as_array().unwrap() {
        let d = app
            .get(&format!("/v1/templates/{}", t["id"].as_str().unwrap()))
            .await;
        assert_eq!(d.body["latest"]["format"], "mjml");
        assert_eq!(d.body["latest"]["warnings"], json!([]), "{}", t["name"]);
        assert_eq!(d.body["latest"]["components"].as_array().unwrap().len(), 3);
    }
}

/// The "done when": each seeded template renders for a sample contact into a valid
/// multipart message with one-click unsubscribe and signed links.
#[tokio::test]
async fn seeded_templates_render_into_multipart_messages_with_signed_links() {
    let app = spawn_app().await;
    app.patch(
        "/v1/workspace",
        json!({"company_name": "Acme Inc.", "postal_address": "1 Main St, Springfield"}),
    )
    .await;
    let contact = app
        .post(
            "/v1/contacts",
            json!({"email": "zoe@example.com", "first_name": "Zoë", "attributes": {"plan": "pro"}}),
        )
        .await;
    let contact: mailpilot_shared::usecases::contacts::Contact =
        serde_json::from_value(contact.body).unwrap();
    let keys = LinkKeys::parse("k1:0123456789abcdef0123456789abcdef-test").unwrap();
    let list = app.get("/v1/templates").await;
    for t in list.body["data"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let m = MessageContext {
            workspace_id: &app.workspace_id,
            content: Content::Stored {
                template_id: id,
                version: None,
            },
            recipient: Recipient::Contact(&contact),
            campaign: None,
            message_id: "msg_00000000000000000000000001",
            tracking: true,
            public_url: "https://links.example",
            keys: &keys,
        };
        let r = templates::render_message(app.store.as_ref(), &m)
            .await
            .unwrap();
        assert!(r.missing_variables.is_empty(), "{:?}", r.missing_variables);
        assert!(
            r.subject.contains("Zoë") || !t["name"].as_str().unwrap().contains("We"),
            "{}",
            r.subject
        );
        assert!(r.html.contains("1 Main St, Springfield"));
        assert!(r.text.contains("1 Main St, Springfield"));
        // Every http(s) link is a signed click; the unsubscribe link is /u/.
        let mut clicks = 0;
        for part in r.html.split("href=\"").skip(1) {
            let href = &part[..part.find('"').unwrap()];
            if let Some(token) = href.strip_prefix("https://links.example/t/c/") {
                match keys.verify(token).unwrap() {
                    LinkToken::Click {
                        url, message_id, ..
                    } => {
                        assert!(url.starts_with("https://example.com"), "{url}");
                        assert_eq!(message_id, "msg_00000000000000000000000001");
                    }
                    other => panic!("{other:?}"),
                }
                clicks += 1;
            } else {
                assert_eq!(href, r.unsubscribe_url, "untracked link {href}");
            }
        }
        assert_eq!(clicks, 1, "{}", t["name"]);
        let token = r
            .unsubscribe_url
            .strip_prefix("https://links.example/u/")
            .unwrap();
        assert!(matches!(
            keys.verify(token),
            Ok(LinkToken::Unsubscribe { .. })
        ));

        let raw = mime::build(&MessageParts {
            message_id: "msg_00000000000000000000000001".into(),
            from: Mailbox::new(Some("Acme"), "news@acme.example"),
            reply_to: None,
            to: Mailbox::new(Some("Zoë"), &contact.email),
            subject: r.subject.clone(),
            html: Some(r.html.clone()),
            text: Some(r.text.clone()),
            list_unsubscribe: Some(r.list_unsubscribe(None)),
            date: chrono::Utc::now(),
        })
        .unwrap();
        let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(msg.subject(), Some(r.subject.as_str()));
        // Bodies travel with CRLF line ends (RFC 5322); otherwise byte for byte.
        let crlf = |s: &str| s.replace("\r\n", "\n").trim_end().to_string();
        assert!(
            crlf(&msg.body_html(0).unwrap()) == crlf(&r.html),
            "HTML part differs"
        );
        assert!(
            crlf(&msg.body_text(0).unwrap()) == crlf(&r.text),
            "text part differs"
        );
        assert_eq!(
            msg.header_raw("List-Unsubscribe-Post").map(str::trim),
            Some("List-Unsubscribe=One-Click")
        );
        assert!(
            msg.header_raw("List-Unsubscribe")
                .unwrap()
                .contains(&r.unsubscribe_url[..40])
        );
    }
}
