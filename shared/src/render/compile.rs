//! Compiling a template version when it is saved: component uses expanded, MJML
//! compiled to HTML, Handlebars syntax checked (errors with line and column), the
//! preheader and the open pixel placed, every rewritable link wrapped in the link helper
//! (so a send only fills in variables), the text part derived when none is given, and
//! the warnings a sender should see.

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Path, Template};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::components::{ComponentDef, Expanded, Format, expand};
use super::engine::{LINK_HELPER, PIXEL_HELPER, Prepared};
use super::html::{Token, line_col, to_text_template, tokenize};

/// What a version is written as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub format: Format,
    pub subject: String,
    pub preheader: Option<String>,
    pub html: String,
    pub text: Option<String>,
}

/// One problem that makes a version invalid: the field (a JSON Pointer) and, for
/// syntax errors, where.
/// `TemplateProblem` in the OpenAPI (`Problem` is the RFC 9457 error document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = TemplateProblem)]
pub struct Problem {
    pub field: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// Something a sender should know; the version is still saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    /// `no_unsubscribe_link`, `no_postal_address`, `html_too_large`,
    /// `image_without_alt`, `insecure_link`.
    pub code: String,
    pub message: String,
}

impl Warning {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A link of the compiled HTML, in order: `index` is what its click token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkInfo {
    pub index: u32,
    /// The href as written (may hold variables).
    pub href: String,
    /// False for mailto:, tel:, the unsubscribe and preferences links, anchors, and
    /// links marked `data-no-track`.
    pub tracked: bool,
}

/// A compiled version: what is stored, and what a send renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiled {
    pub subject: String,
    /// The HTML template with links wrapped, the preheader and the pixel placed.
    pub html: String,
    pub text: String,
    pub links: Vec<LinkInfo>,
    /// Root variable paths used (`first_name`, `attributes.plan`, `workspace.postal_address`).
    pub variables: Vec<String>,
    /// Warnings found from the source alone (size is checked on a render).
    pub warnings: Vec<Warning>,
}

/// Gmail clips messages whose HTML is larger than this.
pub const GMAIL_CLIP_BYTES: usize = 102 * 1024;

fn problem(field: &str, src: &str, offset: Option<usize>, reason: impl Into<String>) -> Problem {
    let (line, column) = match offset {
        Some(o) => {
            let (l, c) = line_col(src, o);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    Problem {
        field: field.into(),
        reason: reason.into(),
        line,
        column,
    }
}

fn hbs_problem(field: &str, e: &handlebars::TemplateError) -> Problem {
    let (line, column) = match e.pos() {
        Some((l, c)) => (Some(l as u32), Some(c as u32)),
        None => (None, None),
    };
    Problem {
        field: field.into(),
        reason: format!("template syntax: {}", e.reason()),
        line,
        column,
    }
}

/// Compiles a version. Every problem is listed, not just the first.
pub fn compile(
    src: &Source,
    lookup: &dyn Fn(&str) -> Option<ComponentDef>,
) -> Result<Compiled, Vec<Problem>> {
    let mut problems = vec![];
    // Handlebars syntax of what the user wrote, so positions are theirs.
    let mut check = |field: &str, text: &str| match Template::compile(text) {
        Ok(t) => {
            reserved_helpers(&t, field, &mut problems);
            true
        }
        Err(e) => {
            problems.push(hbs_problem(field, &e));
            false
        }
    };
    check("/subject", &src.subject);
    if let Some(p) = &src.preheader {
        check("/preheader", p);
    }
    let html_ok = check("/html", &src.html);
    if let Some(t) = &src.text {
        check("/text", t);
    }
    if !html_ok {
        return Err(problems);
    }
    let expanded = match expand(&src.html, src.format, lookup) {
        Ok(e) => e,
        Err(errors) => {
            for e in errors {
                problems.push(problem("/html", &src.html, Some(e.offset), e.message));
            }
            return Err(problems);
        }
    };
    let html = match src.format {
        Format::Handlebars => expanded.text.clone(),
        Format::Mjml => match mjml_to_html(&expanded) {
            Ok(h) => h,
            Err((offset, reason)) => {
                problems.push(match offset {
                    Some(o) => {
                        let (o, component) = expanded.source_offset(o);
                        let reason = match component {
                            Some(c) => format!("{reason} (in component {c})"),
                            None => reason,
                        };
                        problem("/html", &src.html, Some(o), reason)
                    }
                    None => problem("/html", &src.html, None, reason),
                });
                return Err(problems);
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let (instrumented, links, mut warnings) = instrument(&html, src.preheader.as_deref());
    let text = match &src.text {
        Some(t) => t.clone(),
        None => to_text_template(&html),
    };
    // The compiled pieces must parse too (a component body could break them).
    let mut variables = vec![];
    let mut html_vars = vec![];
    for (field, t) in [
        ("/subject", &src.subject),
        ("/html", &instrumented),
        ("/text", &text),
    ] {
        let vars = if field == "/html" {
            &mut html_vars
        } else {
            &mut variables
        };
        match Template::compile(t) {
            Ok(t) => collect_variables(&t.elements, vars),
            Err(e) => problems.push(Problem {
                reason: format!("after expanding components: {}", e.reason()),
                ..hbs_problem(field, &e)
            }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let has = |vars: &[String], name: &str| vars.iter().any(|v| v == name);
    if !has(&html_vars, "unsubscribe_url") && !has(&html_vars, "preferences_url") {
        warnings.push(Warning::new(
            "no_unsubscribe_link",
            "the HTML has no {{unsubscribe_url}} link: bulk mail must offer one (CAN-SPAM, Gmail and Yahoo sender rules)",
        ));
    }
    if !has(&html_vars, "workspace.postal_address") {
        warnings.push(Warning::new(
            "no_postal_address",
            "the HTML does not show {{workspace.postal_address}}: commercial mail must carry a postal address (CAN-SPAM)",
        ));
    }
    variables.extend(html_vars.iter().cloned());
    variables.sort();
    variables.dedup();
    variables.retain(|v| v != "unsubscribe_url" && v != "preferences_url" && !v.starts_with("mp_"));
    Ok(Compiled {
        subject: src.subject.clone(),
        html: instrumented,
        text,
        links,
        variables,
        warnings,
    })
}

fn mjml_to_html(expanded: &Expanded) -> Result<String, (Option<usize>, String)> {
    use mrml::prelude::parser::Error as E;
    let parsed = mrml::parse(&expanded.text).map_err(|e| {
        let offset = match &e {
            E::UnexpectedElement { position, .. }
            | E::UnexpectedToken { position, .. }
            | E::MissingAttribute { position, .. }
            | E::InvalidAttribute { position, .. }
            | E::InvalidFormat { position, .. }
            | E::IncludeLoaderError { position, .. } => Some(position.start),
            E::EndOfStream { .. } => Some(expanded.text.len()),
            _ => None,
        };
        let reason = match &e {
            E::IncludeLoaderError { .. } => {
                "mj-include is not supported: use a component".to_string()
            }
            other => format!("MJML: {}", strip_position(&other.to_string())),
        };
        (offset, reason)
    })?;
    let opts = mrml::prelude::render::RenderOptions {
        disable_comments: true,
        fonts: Default::default(),
        ..Default::default()
    };
    parsed
        .element
        .render(&opts)
        .map_err(|e| (None, format!("MJML: {e}")))
}

fn strip_position(s: &str) -> String {
    match s.find(" at position ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Helper names a template may not use itself.
fn reserved_helpers(t: &Template, field: &str, problems: &mut Vec<Problem>) {
    fn walk(elements: &[TemplateElement], found: &mut bool) {
        for e in elements {
            let (name, children) = match e {
                TemplateElement::Expression(h)
                | TemplateElement::HtmlExpression(h)
                | TemplateElement::HelperBlock(h) => {
                    (&h.name, [h.template.as_ref(), h.inverse.as_ref()])
                }
                _ => continue,
            };
            if let Parameter::Name(n) | Parameter::Path(Path::Relative((_, n))) = name
                && n.starts_with("mp_")
            {
                *found = true;
            }
            for c in children.into_iter().flatten() {
                walk(&c.elements, found);
            }
        }
    }
    let mut found = false;
    walk(&t.elements, &mut found);
    if found {
        problems.push(Problem {
            field: field.into(),
            reason: "helpers named mp_… are reserved for Mailpilot".into(),
            line: None,
            column: None,
        });
    }
}

/// Root-level variable paths: expressions and helper arguments outside `each`/`with`
/// blocks (which change the context), except the value a `default` covers.
fn collect_variables(elements: &[TemplateElement], out: &mut Vec<String>) {
    fn param(p: &Parameter, out: &mut Vec<String>) {
        match p {
            Parameter::Path(Path::Relative((_, raw))) => {
                let raw = raw.strip_prefix("@root.").unwrap_or(raw);
                if !raw.is_empty()
                    && raw != "this"
                    && !raw.starts_with("this.")
                    && !raw.starts_with("../")
                    && !raw.starts_with('@')
                    && !raw.contains('[')
                {
                    out.push(raw.replace('/', "."));
                }
            }
            Parameter::Subexpression(s) => {
                if let Some(params) = s.params() {
                    for p in params {
                        param(p, out);
                    }
                }
            }
            _ => {}
        }
    }
    for e in elements {
        let h = match e {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => h,
            _ => continue,
        };
        let helper = match &h.name {
            Parameter::Name(n) => Some(n.as_str()),
            Parameter::Path(Path::Relative((segs, n)))
                if segs.len() == 1 && (!h.params.is_empty() || h.block) =>
            {
                Some(n.as_str())
            }
            _ => None,
        };
        match helper {
            None => param(&h.name, out),
            Some("default") => {}
            Some(_) => {
                for p in &h.params {
                    param(p, out);
                }
                for p in h.hash.values() {
                    param(p, out);
                }
            }
        }
        if matches!(helper, Some("each" | "with")) {
            if let Some(inv) = &h.inverse {
                collect_variables(&inv.elements, out);
            }
            continue;
        }
        for t in [&h.template, &h.inverse].into_iter().flatten() {
            collect_variables(&t.elements, out);
        }
    }
}

/// Wraps every rewritable link in the link helper, places the preheader after `<body>`
/// and the pixel before `</body>`, and notes images without alt and plain-http links.
pub fn instrument(html: &str, preheader: Option<&str>) -> (String, Vec<LinkInfo>, Vec<Warning>) {
    let tokens = tokenize(html);
    let mut out = String::with_capacity(html.len() + 1024);
    let mut links = vec![];
    let mut warnings = vec![];
    let mut last = 0;
    let mut missing_alt = vec![];
    let mut insecure = vec![];
    for t in &tokens {
        let Token::Tag(tag) = t else { continue };
        match (tag.name.as_str(), tag.closing) {
            ("img", false) if tag.attr("alt").is_none() => {
                let src = tag
                    .attr("src")
                    .and_then(|a| a.value.clone())
                    .map(|r| html[r].to_string())
                    .unwrap_or_default();
                missing_alt.push(src);
            }
            ("a", false) => {
                let Some(range) = tag.attr("href").and_then(|a| a.value.clone()) else {
                    continue;
                };
                let href = html[range.clone()].trim();
                let lower = href.to_ascii_lowercase();
                if lower.starts_with("http://") {
                    insecure.push(href.to_string());
                }
                let untracked = tag.attr("data-no-track").is_some()
                    || lower.starts_with("mailto:")
                    || lower.starts_with("tel:")
                    || lower.starts_with('#')
                    || lower.contains("unsubscribe_url")
                    || lower.contains("preferences_url")
                    || href.is_empty()
                    || !(lower.starts_with("http://")
                        || lower.starts_with("https://")
                        || lower.starts_with("{{"));
                let index = links.len() as u32;
                links.push(LinkInfo {
                    index,
                    href: href.to_string(),
                    tracked: !untracked,
                });
                if !untracked {
                    out.push_str(&html[last..range.start]);
                    out.push_str(&format!("{{{{#{LINK_HELPER} {index}}}}}"));
                    out.push_str(&html[range.clone()]);
                    out.push_str(&format!("{{{{/{LINK_HELPER}}}}}"));
                    last = range.end;
                }
            }
            _ => {}
        }
    }
    out.push_str(&html[last..]);
    // The body tags' offsets moved with the wrapping: find them in the output.
    let out_tokens = tokenize(&out);
    let mut body_open_out = None;
    let mut body_close_out = None;
    for t in &out_tokens {
        if let Token::Tag(tag) = t {
            match (tag.name.as_str(), tag.closing) {
                ("body", false) if body_open_out.is_none() => body_open_out = Some(tag.range.end),
                ("body", true) => body_close_out = Some(tag.range.start),
                _ => {}
            }
        }
    }
    let pixel = format!("{{{{{PIXEL_HELPER}}}}}");
    match body_close_out {
        Some(at) => out.insert_str(at, &pixel),
        None => out.push_str(&pixel),
    }
    if let Some(p) = preheader.filter(|p| !p.trim().is_empty()) {
        let block = format!(
            "<div style=\"display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;opacity:0;overflow:hidden;mso-hide:all\">{p}</div>"
        );
        out.insert_str(body_open_out.unwrap_or(0), &block);
    }
    if !missing_alt.is_empty() {
        warnings.push(Warning::new(
            "image_without_alt",
            format!(
                "{} image(s) without alt text (first: {:?}); clients that block images show the alt text",
                missing_alt.len(),
                missing_alt[0]
            ),
        ));
    }
    if !insecure.is_empty() {
        warnings.push(Warning::new(
            "insecure_link",
            format!(
                "{} link(s) without https (first: {:?})",
                insecure.len(),
                insecure[0]
            ),
        ));
    }
    (out, links, warnings)
}

impl Compiled {
    /// Parses the compiled templates for rendering (done once per version and cached).
    pub fn prepare(&self) -> Result<Prepared, String> {
        let parse = |t: &str| Template::compile(t).map_err(|e| e.to_string());
        Ok(Prepared {
            subject: parse(&self.subject)?,
            html: parse(&self.html)?,
            text: parse(&self.text)?,
            variables: self
                .variables
                .iter()
                .map(|v| v.split('.').map(str::to_owned).collect())
                .collect(),
        })
    }
}
