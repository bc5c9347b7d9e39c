//! The seeded starter templates in a real browser: each is rendered for a sample
//! contact and laid out by headless Chromium (Debian's `chromium`) at 375 px and 800 px
//! wide; at 375 px nothing may overflow horizontally.
//!
//! Headless Chromium keeps its window at least 500 px wide, so the email is laid out in
//! an iframe of the exact width (`srcdoc`, same origin), and a script in the outer page
//! writes the iframe document's `scrollWidth` and `clientWidth` into the DOM that
//! `--dump-dom` prints. Fails (never skips) when chromium is missing: scripts/test.sh
//! installs it.

use std::process::Command;

use mailpilot_tests::app::spawn_app;
use reqwest::StatusCode;
use serde_json::json;

fn chromium() -> String {
    for bin in ["chromium", "chromium-browser"] {
        if Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return bin.to_string();
        }
    }
    panic!("chromium is not installed (scripts/test.sh installs Debian's chromium)");
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Lays `html` out at `width` px and returns (scrollWidth, clientWidth) of its document.
fn measure(bin: &str, html: &str, width: u32) -> (u32, u32) {
    let dir = tempfile::tempdir().unwrap();
    let page = format!(
        r#"<!doctype html><html><body style="margin:0"><iframe id="f" style="width:{width}px;height:900px;border:0" srcdoc="{}"></iframe><script>window.addEventListener("load",function(){{var d=document.getElementById("f").contentDocument.documentElement;document.body.setAttribute("data-measure",d.scrollWidth+"x"+d.clientWidth);}});</script></body></html>"#,
        escape_attr(html)
    );
    let file = dir.path().join("page.html");
    std::fs::write(&file, page).unwrap();
    // Bounded: a page that never finishes loading fails the test instead of hanging it.
    let out = Command::new("timeout")
        .args(["--kill-after=5", "90", bin])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1000,1000",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let at = dom.find("data-measure=\"").unwrap_or_else(|| {
        panic!(
            "no measurement in chromium's DOM: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rest = &dom[at + 14..];
    let value = &rest[..rest.find('"').unwrap()];
    let (s, c) = value.split_once('x').unwrap();
    (s.parse().unwrap(), c.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starter_templates_do_not_overflow_a_phone_screen() {
    let bin = chromium();
    let app = spawn_app().await;
    app.patch(
        "/v1/workspace",
        json!({"company_name": "Acme Incorporated International", "postal_address": "1234 Long Avenue Name, Suite 5678, Springfield, IL 62704, United States"}),
    )
    .await;
    let list = app.get("/v1/templates").await;
    let templates = list.body["data"].as_array().unwrap();
    assert_eq!(templates.len(), 5);
    for t in templates {
        let id = t["id"].as_str().unwrap();
        let name = t["name"].as_str().unwrap();
        let p = app
            .post(
                &format!("/v1/templates/{id}/preview"),
                json!({"data": {"first_name": "Maximiliana-Josefina", "attributes": {"plan": "pro"}}, "tracking": true}),
            )
            .await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        let html = p.body["html"].as_str().unwrap();
        // Off the runtime's thread: the page loads the pixel from this test's server.
        let (b, h) = (bin.clone(), html.to_string());
        let (scroll, client) = tokio::task::spawn_blocking(move || measure(&b, &h, 375))
            .await
            .unwrap();
        assert_eq!(client, 375, "{name}: the frame is 375 px wide");
        assert!(
            scroll <= client,
            "{name} overflows at 375 px: {scroll} > {client}"
        );
        let (b, h) = (bin.clone(), html.to_string());
        let (scroll, client) = tokio::task::spawn_blocking(move || measure(&b, &h, 800))
            .await
            .unwrap();
        assert_eq!(client, 800, "{name}: the frame is 800 px wide");
        assert!(
            scroll <= client,
            "{name} overflows at 800 px: {scroll} > {client}"
        );
    }
}

/// The measurement itself can fail: a fixed 600 px table overflows a 375 px screen.
#[test]
fn the_measurement_sees_an_overflow() {
    let bin = chromium();
    let html = r#"<html><body style="margin:0"><table width="600" style="width:600px"><tr><td>wide</td></tr></table></body></html>"#;
    let (scroll, client) = measure(&bin, html, 375);
    assert_eq!(client, 375);
    assert!(scroll >= 600, "{scroll}");
}
