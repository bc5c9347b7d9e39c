//! Benchmark 3: personalised renders per second on one core.
//!
//! The fixture (`bench/fixtures/newsletter.html`: ~40 KB, 10 tracked links, 8
//! variables, 2 components `header` and `button`) is compiled once as a template
//! version is at save; then, on one thread, for a fixed time each:
//!
//! - `full`: fill in a different contact's variables, rewrite every link to a signed
//!   click URL, sign the open pixel and the unsubscribe token, and build the RFC 5322
//!   message (multipart/alternative with the text part, List-Unsubscribe);
//! - `no tracking`: the same with tracking off (links as written, no pixel);
//! - stages, to show where the time goes: the render with and without tracking but no
//!   MIME, signing the tokens alone, and building the MIME message alone (from one
//!   rendered message);
//! - `bare handlebars`: the baseline, the handlebars crate rendering the same
//!   expanded HTML with the same data into a String (no links, no text, no MIME).
//!
//! Sizes: the fixture has 8 articles, each starting at an `<!-- article -->` marker;
//! `--articles N` cuts or repeats them (2 ≈ 10 KB, 8 = the 40 KB fixture, 20 ≈ 98 KB;
//! more articles also means more links). Rates are per CPU second of this process
//! (one thread), so a busy machine slows them less than wall time would. Prints a
//! markdown table; `--only TEXT` runs just the cases whose name contains TEXT.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use mailpilot_bench::{cpu_secs, loadavg};
use mailpilot_shared::mime::{self, Mailbox, MessageParts};
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::render::{self, ComponentDef, Format, ParamDef, ParamType, Source};
use mailpilot_shared::usecases::templates::{
    Content, MessageContext, Recipient, RenderedMessage, render_prepared,
};
use serde_json::{Map, Value as Json, json};

#[derive(Parser)]
struct Args {
    /// Seconds measured per case (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Article counts to measure (the fixture has 8: about 40 KB).
    #[arg(long, value_delimiter = ',', default_values_t = vec![2, 8, 20])]
    articles: Vec<usize>,
    /// Measure only the cases whose name contains this (the baseline always runs).
    #[arg(long)]
    only: Option<String>,
    /// Path to the fixture directory.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
    fixtures: String,
}

fn components(dir: &str) -> Result<Vec<ComponentDef>> {
    let read =
        |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).with_context(|| f.to_string());
    let p = |name: &str, kind, required| ParamDef {
        name: name.into(),
        kind,
        default: None,
        required,
    };
    Ok(vec![
        ComponentDef {
            name: "header".into(),
            format: Format::Handlebars,
            body: read("header.html")?,
            parameters: vec![p("title", ParamType::String, true)],
        },
        ComponentDef {
            name: "button".into(),
            format: Format::Handlebars,
            body: read("button.html")?,
            parameters: vec![
                p("label", ParamType::String, true),
                p("url", ParamType::Url, true),
            ],
        },
    ])
}

/// The fixture with its article section cut or repeated to `n` articles.
fn sized(fixture: &str, n: usize) -> Result<String> {
    let start = fixture.find("<!-- article -->").context("article marker")?;
    let end = fixture.find("<!-- /articles -->").context("end marker")?;
    let section = &fixture[start..end];
    let articles: Vec<&str> = section
        .split("<!-- article -->")
        .filter(|a| !a.is_empty())
        .collect();
    let mut out = fixture[..start].to_string();
    for i in 0..n {
        out.push_str("<!-- article -->");
        out.push_str(articles[i % articles.len()]);
    }
    out.push_str(&fixture[end..]);
    Ok(out)
}

fn vars(i: u64) -> Map<String, Json> {
    let v = json!({
        "email": format!("reader{i}@example.com"),
        "first_name": format!("Reader {i}"),
        "attributes": {
            "plan": if i.is_multiple_of(2) { "pro" } else { "free" },
            "city": "Zaragoza",
            "points": i % 1000,
            "dashboard_url": format!("https://app.example.com/u/{i}/dashboard"),
        },
        "campaign": {"name": "November news"},
        "workspace": {"name": "Acme", "company_name": "Acme Inc.", "postal_address": "1 Main St, Springfield"},
    });
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

/// Runs `f` for `secs` seconds after a warm-up; returns calls per second.
/// Runs `f` for `secs` seconds after a one-second warm-up. Returns renders per CPU
/// second of this (single-threaded) process, so that a shared machine slows the figure
/// less than wall time would, and the size of the last output.
fn rate(secs: u64, f: &mut dyn FnMut(u64) -> usize) -> (f64, usize) {
    let warm = Instant::now();
    let mut i = 0;
    while warm.elapsed() < Duration::from_secs(1) {
        std::hint::black_box(f(i));
        i += 1;
    }
    let started = Instant::now();
    let cpu = cpu_secs();
    let mut n = 0u64;
    let mut bytes = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        for _ in 0..16 {
            bytes = std::hint::black_box(f(i + n));
            n += 1;
        }
    }
    (n as f64 / (cpu_secs() - cpu).max(0.01), bytes)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let fixture = std::fs::read_to_string(format!("{}/newsletter.html", args.fixtures))?;
    let defs = components(&args.fixtures)?;
    let lookup = |name: &str| defs.iter().find(|d| d.name == name).cloned();
    let keys = LinkKeys::parse("k1:0123456789abcdef0123456789abcdef-bench")?;
    println!("load average before: {}", loadavg());
    println!(
        "| articles | HTML template | links tracked | case | per CPU second (1 core) | µs CPU each | output bytes | vs bare |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|");
    for &n in &args.articles {
        let html = sized(&fixture, n)?;
        let src = Source {
            format: Format::Handlebars,
            subject: "{{campaign.name}} for {{default first_name \"you\"}}".into(),
            preheader: Some("What's new at {{workspace.company_name}}".into()),
            html: html.clone(),
            text: None,
        };
        let compiled = render::compile(&src, &lookup).map_err(|p| anyhow::anyhow!("{p:?}"))?;
        let tracked = compiled.links.iter().filter(|l| l.tracked).count();
        let prepared = compiled.prepare().map_err(anyhow::Error::msg)?;
        // The baseline: the same expanded HTML in a plain handlebars registry.
        let expanded = render::components::expand(&html, Format::Handlebars, &lookup)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .text;
        // Same helpers (`default`, …) and escaping; no link or pixel helpers in this HTML.
        let mut bare = render::engine::html_registry().clone();
        bare.register_template_string("t", &expanded)?;
        let data = Map::new();
        let ctx = |tracking: bool| MessageContext {
            workspace_id: "ws_bench",
            content: Content::Stored {
                template_id: "tpl_bench",
                version: Some(1),
            },
            recipient: Recipient::Data(&data),
            campaign: None,
            message_id: "msg_0123456789abcdefghjkmnpqrs",
            tracking,
            public_url: "https://t.example.com",
            keys: &keys,
        };
        let parts_of = |i: u64, r: RenderedMessage| MessageParts {
            message_id: "msg_0123456789abcdefghjkmnpqrs".into(),
            from: Mailbox::new(Some("Acme"), "news@acme.example"),
            reply_to: None,
            to: Mailbox::new(None, &format!("reader{i}@example.com")),
            subject: r.subject,
            list_unsubscribe: Some(mime::ListUnsubscribe {
                url: r.unsubscribe_url,
                mailto: None,
            }),
            html: Some(r.html),
            text: Some(r.text),
            date: chrono::Utc::now(),
        };
        let full = |tracking: bool, build: bool| {
            let m = ctx(tracking);
            let prepared = &prepared;
            move |i: u64| {
                let r = render_prepared(prepared, vars(i), &m, "https://t.example.com", Some(1))
                    .expect("renders");
                if !build {
                    return r.html.len() + r.text.len();
                }
                mime::build(&parts_of(i, r)).expect("builds").len()
            }
        };
        // Stage: MIME building alone, on one rendered message (cloned: the clone of the
        // parts is part of this row's cost, and small next to the encoding).
        let one = render_prepared(
            &prepared,
            vars(7),
            &ctx(true),
            "https://t.example.com",
            Some(1),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mime_only = |i: u64| {
            mime::build(&parts_of(i, one.clone()))
                .expect("builds")
                .len()
        };
        // The same through lettre's own body encoding (what `mime::build` did before:
        // its line-ending fix-up copies the rest of the body once per line).
        let mime_lettre = |i: u64| {
            let p = parts_of(i, one.clone());
            lettre::Message::builder()
                .from("Acme <news@acme.example>".parse().expect("from"))
                .to(p.to.email.parse().expect("to"))
                .subject(p.subject)
                .multipart(lettre::message::MultiPart::alternative_plain_html(
                    p.text.unwrap_or_default(),
                    p.html.unwrap_or_default(),
                ))
                .expect("builds")
                .formatted()
                .len()
        };
        // Stage: signing the tokens one tracked render signs (each link, the pixel, the
        // unsubscribe URL), nothing else.
        let sign_only = |i: u64| {
            let msg = if i.is_multiple_of(2) {
                "msg_a"
            } else {
                "msg_b"
            };
            let mut n = 0;
            for l in 0..tracked as u32 {
                n += keys
                    .sign_click("ws_bench", msg, l, "https://news.example.com/articles/1?utm_source=newsletter&utm_medium=email")
                    .expect("signs")
                    .len();
            }
            n += keys
                .sign_message("ws_bench", msg, false)
                .expect("signs")
                .len();
            n + keys
                .sign_message("ws_bench", msg, true)
                .expect("signs")
                .len()
        };
        let (bare_rate, bare_bytes) = rate(args.secs, &mut |i| {
            bare.render("t", &Json::Object(vars(i)))
                .expect("renders")
                .len()
        });
        let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
        let mut cases: Vec<(&str, f64, usize)> = Vec::new();
        let mut case = |name: &'static str, f: &mut dyn FnMut(u64) -> usize| {
            if wanted(name) {
                let (r, b) = rate(args.secs, f);
                cases.push((name, r, b));
            }
        };
        case("full (tracking, signing, MIME)", &mut full(true, true));
        case("no tracking (MIME)", &mut full(false, true));
        case(
            "stage: render with tracking, no MIME",
            &mut full(true, false),
        );
        case(
            "stage: render, no tracking, no MIME",
            &mut full(false, false),
        );
        case("stage: sign the tokens only", &mut { sign_only });
        case("stage: MIME build only", &mut { mime_only });
        case(
            "stage: MIME build only, lettre's body encoding (before)",
            &mut { mime_lettre },
        );
        cases.push(("bare handlebars (baseline)", bare_rate, bare_bytes));
        for (name, r, bytes) in cases {
            println!(
                "| {n} | {:.1} KB | {tracked} | {name} | {:.0} | {:.1} | {bytes} | {:.0}% |",
                html.len() as f64 / 1024.0,
                r,
                1e6 / r,
                100.0 * r / bare_rate
            );
        }
    }
    println!("load average after: {}", loadavg());
    Ok(())
}
