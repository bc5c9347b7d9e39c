//! Templates as code: expanding components, compiling MJML, checking Handlebars syntax,
//! preparing links for tracking, and rendering one message. Pure (no I/O): the use
//! case `usecases::templates` stores versions and components and calls this.
//!
//! The life of a version: [`compile::compile`] runs once when it is saved and produces a
//! [`compile::Compiled`] (stored with the version); [`compile::Compiled::prepare`] parses
//! it once per process ([`engine::Prepared`], cached); [`engine::Prepared::render`] fills
//! in one recipient's variables and signs its links.

pub mod compile;
pub mod components;
pub mod diff;
pub mod engine;
pub mod html;

pub use compile::{Compiled, LinkInfo, Problem, Source, Warning, compile};
pub use components::{ComponentDef, Format, ParamDef, ParamType};
pub use engine::{LinkContext, Prepared, Rendered};

use serde_json::{Map, Value as Json, json};

/// Variables for a sample render (size check at save, previews without data).
pub fn sample_variables() -> Map<String, Json> {
    let v = json!({
        "email": "ana@example.com",
        "first_name": "Ana",
        "last_name": "García",
        "time_zone": "Europe/Madrid",
        "locale": "es",
        "attributes": {},
        "workspace": {"name": "Acme", "company_name": "Acme Inc.", "postal_address": "1 Main St, Springfield"},
        "campaign": {"id": "cpg_sample", "name": "Sample"},
    });
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

/// The `html_too_large` warning for a rendered HTML body, if it applies.
pub fn size_warning(html: &str) -> Option<Warning> {
    (html.len() > compile::GMAIL_CLIP_BYTES).then(|| {
        Warning::new(
            "html_too_large",
            format!(
                "the HTML is {} KB after rendering and link rewriting; Gmail clips messages over 102 KB",
                html.len().div_ceil(1024)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::html::{Token, decode_entities, tokenize};
    use super::*;
    use crate::model::links::{LinkKeys, LinkToken};
    use proptest::prelude::*;

    const KEYS: &str = "k1:0123456789abcdef0123456789abcdef-one";

    fn no_components(_: &str) -> Option<ComponentDef> {
        None
    }

    fn source(html: &str) -> Source {
        Source {
            format: Format::Handlebars,
            subject: "Hi {{default first_name \"there\"}}".into(),
            preheader: Some("News for {{first_name}}".into()),
            html: html.into(),
            text: None,
        }
    }

    fn render(c: &Compiled, vars: Map<String, Json>, keys: &LinkKeys, track: bool) -> Rendered {
        c.prepare()
            .unwrap()
            .render(
                vars,
                LinkContext {
                    keys,
                    workspace_id: "ws_1",
                    message_id: "msg_1",
                    base_url: "https://t.example",
                    track,
                },
            )
            .unwrap()
    }

    fn hrefs(html: &str) -> Vec<String> {
        tokenize(html)
            .into_iter()
            .filter_map(|t| match t {
                Token::Tag(t) if t.name == "a" && !t.closing => t
                    .attr("href")
                    .and_then(|a| a.value.clone())
                    .map(|r| decode_entities(&html[r]).into_owned()),
                _ => None,
            })
            .collect()
    }

    const PAGE: &str = r#"<html><body><p>Hello {{first_name}}</p>
<a href="https://shop.example/a?x=1&amp;y=2">Shop</a>
<a href="{{cta_url}}">Go</a>
<a href="https://keep.example/" data-no-track>Keep</a>
<a href="mailto:help@acme.example">Mail</a>
<a href="{{unsubscribe_url}}">Unsubscribe</a>
<p>{{workspace.postal_address}}</p>
<img src="https://img.example/x.png">
</body></html>"#;

    #[test]
    fn compiles_links_warnings_and_text() {
        let c = compile(&source(PAGE), &no_components).unwrap();
        let tracked: Vec<_> = c
            .links
            .iter()
            .map(|l| (l.href.as_str(), l.tracked))
            .collect();
        assert_eq!(
            tracked,
            [
                ("https://shop.example/a?x=1&amp;y=2", true),
                ("{{cta_url}}", true),
                ("https://keep.example/", false),
                ("mailto:help@acme.example", false),
                ("{{unsubscribe_url}}", false),
            ]
        );
        let codes: Vec<_> = c.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(codes, ["image_without_alt"]);
        assert!(
            c.text.contains("Shop (https://shop.example/a?x=1&y=2)"),
            "{}",
            c.text
        );
        assert!(c.variables.contains(&"cta_url".to_string()));
        assert!(
            c.variables
                .contains(&"workspace.postal_address".to_string())
        );
    }

    #[test]
    fn renders_with_tracking_and_without() {
        let keys = LinkKeys::parse(KEYS).unwrap();
        let c = compile(&source(PAGE), &no_components).unwrap();
        let mut vars = sample_variables();
        vars.insert("cta_url".into(), json!("https://go.example/start?a=1&b=2"));
        let r = render(&c, vars.clone(), &keys, true);
        assert_eq!(r.subject, "Hi Ana");
        let links = hrefs(&r.html);
        assert!(links[0].starts_with("https://t.example/t/c/"), "{links:?}");
        let urls: Vec<_> = links[..2]
            .iter()
            .map(
                |l| match keys.verify(l.rsplit('/').next().unwrap()).unwrap() {
                    LinkToken::Click {
                        url, link_index, ..
                    } => (link_index, url),
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(
            urls,
            [
                (0, "https://shop.example/a?x=1&y=2".to_string()),
                (1, "https://go.example/start?a=1&b=2".to_string())
            ]
        );
        assert_eq!(links[2], "https://keep.example/");
        assert_eq!(links[3], "mailto:help@acme.example");
        assert_eq!(links[4], r.unsubscribe_url);
        assert!(r.unsubscribe_url.starts_with("https://t.example/u/"));
        assert!(r.html.contains("https://t.example/t/o/"), "pixel");
        assert!(r.html.contains(">News for Ana</div>"), "preheader");
        assert!(r.missing.is_empty(), "{:?}", r.missing);
        assert!(
            r.text.contains("Go (https://go.example/start?a=1&b=2)"),
            "{}",
            r.text
        );

        let r = render(&c, vars, &keys, false);
        let links = hrefs(&r.html);
        assert_eq!(links[0], "https://shop.example/a?x=1&y=2");
        assert_eq!(links[1], "https://go.example/start?a=1&b=2");
        assert!(!r.html.contains("/t/o/"));
        assert!(r.html.contains("/u/"), "the unsubscribe link stays");
    }

    #[test]
    fn missing_variables_are_listed_and_defaults_cover_them() {
        let keys = LinkKeys::parse(KEYS).unwrap();
        let c = compile(&source(PAGE), &no_components).unwrap();
        let r = render(&c, Map::new(), &keys, false);
        assert_eq!(r.subject, "Hi there");
        assert_eq!(
            r.missing,
            ["cta_url", "first_name", "workspace.postal_address"]
        );
    }

    #[test]
    fn syntax_errors_have_positions_and_all_are_listed() {
        let mut s = source("<p>\n  {{#if x}}oops</p>");
        s.subject = "{{".into();
        let e = compile(&s, &no_components).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].field, "/subject");
        assert_eq!(e[1].field, "/html");
        assert!(e[1].line.is_some() && e[1].column.is_some(), "{e:?}");
        let e = compile(&source("{{mp_open}}"), &no_components).unwrap_err();
        assert!(e[0].reason.contains("reserved"));
    }

    #[test]
    fn mjml_compiles_and_reports_positions() {
        let mut s = source(
            "<mjml><mj-body><mj-section><mj-column>\n<mj-text>Hi {{first_name}}</mj-text>\n<mj-button href=\"{{cta_url}}\">Go</mj-button>\n</mj-column></mj-section></mj-body></mjml>",
        );
        s.format = Format::Mjml;
        let c = compile(&s, &no_components).unwrap();
        assert!(c.html.contains("{{first_name}}"));
        assert_eq!(c.links.len(), 1);
        assert!(c.links[0].tracked);
        assert!(c.text.starts_with("Hi {{first_name}}\n"), "{}", c.text);
        s.html = "<mjml><mj-body>\n  <mj-section><mj-column></mj-section></mj-body></mjml>".into();
        let e = compile(&s, &no_components).unwrap_err();
        assert_eq!(e[0].field, "/html");
        assert!(e[0].reason.starts_with("MJML"), "{e:?}");
        assert_eq!(e[0].line, Some(2), "{e:?}");
    }

    #[test]
    fn date_and_attribute_helpers() {
        let keys = LinkKeys::parse(KEYS).unwrap();
        let c = compile(
            &source(
                r#"{{date signed_up "%Y-%m-%d %H:%M"}} {{#if_attr "plan" "pro"}}PRO{{else}}FREE{{/if_attr}} {{#if_attr "seats"}}S{{/if_attr}}"#,
            ),
            &no_components,
        )
        .unwrap();
        let mut vars = Map::new();
        vars.insert("signed_up".into(), json!("2026-01-01T23:30:00Z"));
        vars.insert("time_zone".into(), json!("Europe/Madrid"));
        vars.insert("attributes".into(), json!({"plan": "pro", "seats": 3}));
        let r = render(&c, vars, &keys, false);
        assert!(r.html.contains("2026-01-02 00:30 PRO S"), "{}", r.html);
    }

    #[test]
    fn dangerous_schemes_from_data_are_neutralised() {
        let keys = LinkKeys::parse(KEYS).unwrap();
        let c = compile(&source(r#"<a href="{{site}}">x</a>"#), &no_components).unwrap();
        let mut vars = Map::new();
        vars.insert("site".into(), json!(" JavaScript:alert(1)"));
        let r = render(&c, vars, &keys, true);
        assert_eq!(hrefs(&r.html), ["#"]);
    }

    fn tag_shape(html: &str) -> Vec<(String, bool, Vec<String>)> {
        // Rendered output is HTML, not a template: braces mean nothing there.
        tokenize(&html.replace('{', "_"))
            .into_iter()
            .filter_map(|t| match t {
                Token::Tag(t) => Some((
                    t.name.clone(),
                    t.closing,
                    t.attrs.iter().map(|a| a.name.clone()).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever a contact's fields hold, the HTML has exactly the structure of the
        /// template: user input never opens a tag, closes an attribute or adds one.
        #[test]
        fn user_input_never_reaches_the_html_unescaped(value in "\\PC{0,40}", attr in "[<>\"'&=` a-z/]{0,20}") {
            let keys = LinkKeys::parse(KEYS).unwrap();
            let c = compile(&source(
                r#"<p title="{{first_name}}" class='{{attributes.x}}'>{{first_name}} {{attributes.x}}</p><a href="https://a.example/?q={{first_name}}">l</a>"#,
            ), &no_components).unwrap();
            let mut vars = Map::new();
            vars.insert("first_name".into(), json!(value));
            vars.insert("attributes".into(), json!({"x": attr}));
            let r = render(&c, vars, &keys, false);
            let mut plain = Map::new();
            plain.insert("first_name".into(), json!("a"));
            plain.insert("attributes".into(), json!({"x": "b"}));
            let baseline = render(&c, plain, &keys, false);
            prop_assert_eq!(tag_shape(&r.html), tag_shape(&baseline.html));
            let text = format!(
                ">{} {}</p>",
                handlebars::html_escape(&value),
                handlebars::html_escape(&attr)
            );
            prop_assert!(r.html.contains(&text), "{} not in {}", text, r.html);
        }

        /// Every rewritten link's token verifies back to the URL the template pointed at.
        #[test]
        fn every_rewritten_link_verifies_back_to_its_url(
            path in "[a-zA-Z0-9/_.~-]{0,30}",
            query in proptest::collection::vec(("[a-z]{1,5}", "[a-zA-Z0-9 &<>\"'=%-]{0,12}"), 0..4),
        ) {
            let keys = LinkKeys::parse(KEYS).unwrap();
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let url = format!("https://shop.example/{path}?{}", q.join("&"));
            let literal = format!("https://lit.example/{path}");
            let c = compile(&source(&format!(
                r#"<a href="{literal}">a</a><a href="{{{{target}}}}">b</a><a href="https://x.example/?u={{{{target}}}}&amp;z=1">c</a>"#
            )), &no_components).unwrap();
            let mut vars = Map::new();
            vars.insert("target".into(), json!(url));
            let r = render(&c, vars, &keys, true);
            let expected = [literal.clone(), url.clone(), format!("https://x.example/?u={url}&z=1")];
            let links = hrefs(&r.html);
            prop_assert_eq!(links.len(), 3);
            for (i, (link, want)) in links.iter().zip(expected.iter()).enumerate() {
                let token = link.strip_prefix("https://t.example/t/c/").expect("rewritten");
                match keys.verify(token) {
                    Ok(LinkToken::Click { url, link_index, workspace_id, message_id }) => {
                        prop_assert_eq!(url.as_str(), want.trim());
                        prop_assert_eq!(link_index as usize, i);
                        prop_assert_eq!(workspace_id, "ws_1");
                        prop_assert_eq!(message_id, "msg_1");
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
