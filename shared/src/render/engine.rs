//! Rendering a compiled version for one recipient: Handlebars (HTML-escaped by default,
//! raw only with triple braces) with our helpers, links rewritten to signed click URLs,
//! the open pixel, and the unsubscribe URL.
//!
//! The registries (helpers, escaping) are built once per process. A version's templates
//! are parsed once ([`Prepared`], cached by the use case) and rendered directly; the
//! per-message parts (keys, message id, base URL, tracking) are local helpers of one
//! render, so nothing is shared between renders but immutable data.

use std::fmt::Write as _;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson, Template,
};
use serde_json::{Map, Value as Json};

use super::html::decode_entities;
use crate::model::links::LinkKeys;

/// The local helper that wraps every rewritable link (`{{#mp_link 3}}…{{/mp_link}}`).
pub const LINK_HELPER: &str = "mp_link";
/// The local helper that writes the open pixel.
pub const PIXEL_HELPER: &str = "mp_open";

/// The registry for HTML (escaping on).
pub fn html_registry() -> &'static Handlebars<'static> {
    static R: OnceLock<Handlebars<'static>> = OnceLock::new();
    R.get_or_init(|| registry(true))
}

/// The registry for subjects and text parts (no escaping).
pub fn text_registry() -> &'static Handlebars<'static> {
    static R: OnceLock<Handlebars<'static>> = OnceLock::new();
    R.get_or_init(|| registry(false))
}

fn registry(html: bool) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    if !html {
        r.register_escape_fn(handlebars::no_escape);
    }
    r.register_helper("default", Box::new(DefaultHelper));
    r.register_helper("date", Box::new(DateHelper));
    r.register_helper("if_attr", Box::new(IfAttrHelper));
    // Outside a send (a text part, a subject) the link and pixel helpers do nothing
    // special: a link stays as written, and there is no pixel.
    r.register_helper(LINK_HELPER, Box::new(PassThrough));
    r.register_helper(PIXEL_HELPER, Box::new(Nothing));
    r
}

fn is_empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::String(s) => s.trim().is_empty(),
        Json::Bool(b) => !b,
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
        Json::Number(_) => false,
    }
}

/// `{{default first_name "there"}}`: the value, or the fallback when it is missing or
/// empty.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let value = h.param(0).map(|p| p.value()).filter(|v| !is_empty(v));
        let chosen = value.or_else(|| h.param(1).map(|p| p.value()));
        Ok(ScopedJson::Derived(chosen.cloned().unwrap_or(Json::Null)))
    }
}

/// `{{date value "%e %B %Y"}}`: an RFC 3339 timestamp (or `"now"`) in the contact's
/// time zone (`time_zone`, else `tz="…"`, else UTC), formatted with strftime.
struct DateHelper;

impl HelperDef for DateHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let value = h.param(0).map(|p| p.value()).unwrap_or(&Json::Null);
        let format = h
            .param(1)
            .and_then(|p| p.value().as_str())
            .unwrap_or("%-d %B %Y");
        let at: DateTime<Utc> = match value {
            Json::String(s) if s == "now" => Utc::now(),
            Json::String(s) => match DateTime::parse_from_rfc3339(s) {
                Ok(d) => d.with_timezone(&Utc),
                Err(_) => return Ok(ScopedJson::Derived(Json::String(s.clone()))),
            },
            _ => return Ok(ScopedJson::Derived(Json::Null)),
        };
        let tz = h
            .hash_get("tz")
            .and_then(|v| v.value().as_str().map(str::to_owned))
            .or_else(|| {
                ctx.data()
                    .get("time_zone")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            })
            .and_then(|name| name.parse::<chrono_tz::Tz>().ok())
            .unwrap_or(chrono_tz::UTC);
        let items: Vec<_> = chrono::format::StrftimeItems::new(format).collect();
        if items.contains(&chrono::format::Item::Error) {
            return Err(RenderErrorReason::Other(format!(
                "date: {format:?} is not a valid strftime format"
            ))
            .into());
        }
        let mut out = String::new();
        write!(
            out,
            "{}",
            at.with_timezone(&tz).format_with_items(items.iter())
        )
        .map_err(|_| RenderErrorReason::Other("date: the date could not be formatted".into()))?;
        Ok(ScopedJson::Derived(Json::String(out)))
    }
}

/// `{{#if_attr "plan" "pro"}}…{{else}}…{{/if_attr}}`: true when the contact's attribute
/// equals the value (strings compare as written; other JSON values by value), or, with
/// one argument, when the attribute is present and not empty.
struct IfAttrHelper;

impl HelperDef for IfAttrHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = h.param(0).and_then(|p| p.value().as_str()).ok_or_else(|| {
            RenderErrorReason::Other("if_attr needs an attribute name in quotes".into())
        })?;
        let attr = ctx
            .data()
            .get("attributes")
            .and_then(|a| a.get(name))
            .unwrap_or(&Json::Null);
        let yes = match h.param(1) {
            Some(expected) => match (attr, expected.value()) {
                (Json::String(a), Json::String(e)) => a == e,
                (a, e) => a == e || (a.is_number() && e.as_str() == Some(&a.to_string())),
            },
            None => !is_empty(attr),
        };
        let t = if yes { h.template() } else { h.inverse() };
        match t {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// Renders the block as written.
struct PassThrough;

impl HelperDef for PassThrough {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        match h.template() {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

struct Nothing;

impl HelperDef for Nothing {
    fn call<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        _: &mut dyn Output,
    ) -> HelperResult {
        Ok(())
    }
}

/// A `String` as a Handlebars output.
pub struct Buf(pub String);

impl Output for Buf {
    fn write(&mut self, seg: &str) -> Result<(), std::io::Error> {
        self.0.push_str(seg);
        Ok(())
    }
}

/// What a send adds to a render: who the message is for and how to sign its links.
#[derive(Clone, Copy)]
pub struct LinkContext<'a> {
    pub keys: &'a LinkKeys,
    pub workspace_id: &'a str,
    pub message_id: &'a str,
    /// The public base URL, without a trailing slash.
    pub base_url: &'a str,
    /// Rewrite links and add the open pixel.
    pub track: bool,
}

impl LinkContext<'_> {
    pub fn unsubscribe_url(&self) -> Result<String, RenderError> {
        let token = self
            .keys
            .sign_message(self.workspace_id, self.message_id, true)
            .map_err(|e| RenderErrorReason::Other(e.to_string()))?;
        Ok(format!("{}/u/{token}", self.base_url))
    }
}

/// The send-time link helper: renders the link's href, and when it is an http(s) URL
/// and tracking is on, writes the signed click URL instead.
struct LinkHelper<'a> {
    links: LinkContext<'a>,
}

/// Schemes a link filled in from data may never have.
fn is_dangerous(url: &str) -> bool {
    let head: String = url
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("javascript:") || head.starts_with("vbscript:") || head.starts_with("data:")
}

fn is_http(url: &str) -> bool {
    let l = url.get(..8).unwrap_or(url);
    l.eq_ignore_ascii_case("https://")
        || url
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
}

impl HelperDef for LinkHelper<'_> {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let Some(t) = h.template() else {
            return Ok(());
        };
        let mut buf = Buf(String::with_capacity(128));
        t.render(r, ctx, rc, &mut buf)?;
        let rendered = buf.0.trim();
        let url = decode_entities(rendered);
        if is_dangerous(&url) {
            out.write("#")?;
            return Ok(());
        }
        let index = h.param(0).and_then(|p| p.value().as_u64()).unwrap_or(0) as u32;
        if self.links.track
            && is_http(&url)
            && let Ok(token) = self.links.keys.sign_click(
                self.links.workspace_id,
                self.links.message_id,
                index,
                &url,
            )
        {
            out.write(self.links.base_url)?;
            out.write("/t/c/")?;
            out.write(&token)?;
            return Ok(());
        }
        out.write(rendered)?;
        Ok(())
    }
}

/// The send-time pixel helper.
struct PixelHelper<'a> {
    links: LinkContext<'a>,
}

impl HelperDef for PixelHelper<'_> {
    fn call<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        if !self.links.track {
            return Ok(());
        }
        let token = self
            .links
            .keys
            .sign_message(self.links.workspace_id, self.links.message_id, false)
            .map_err(|e| RenderErrorReason::Other(e.to_string()))?;
        out.write("<img src=\"")?;
        out.write(self.links.base_url)?;
        out.write("/t/o/")?;
        out.write(&token)?;
        out.write("\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;width:1px;height:1px;border:0\">")?;
        Ok(())
    }
}

/// A version's templates, parsed once.
pub struct Prepared {
    pub subject: Template,
    pub html: Template,
    pub text: Template,
    /// Root variable paths the version uses (split on `.`), for the missing list.
    pub variables: Vec<Vec<String>>,
}

/// One message's rendered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
    pub unsubscribe_url: String,
    /// Variables the version uses that the data did not have (or had empty).
    pub missing: Vec<String>,
}

fn lookup<'a>(data: &'a Json, path: &[String]) -> Option<&'a Json> {
    let mut v = data;
    for seg in path {
        v = match v {
            Json::Object(m) => m.get(seg.as_str())?,
            Json::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

impl Prepared {
    /// Renders for one recipient. `data` is the variables object; `unsubscribe_url` and
    /// `preferences_url` are added to it here.
    pub fn render(
        &self,
        mut data: Map<String, Json>,
        links: LinkContext<'_>,
    ) -> Result<Rendered, RenderError> {
        let unsubscribe_url = links.unsubscribe_url()?;
        data.insert(
            "unsubscribe_url".into(),
            Json::String(unsubscribe_url.clone()),
        );
        data.insert(
            "preferences_url".into(),
            Json::String(unsubscribe_url.clone()),
        );
        let data = Json::Object(data);
        let missing = self
            .variables
            .iter()
            .filter(|p| lookup(&data, p).is_none_or(|v| v.is_null() || v.as_str() == Some("")))
            .map(|p| p.join("."))
            .collect();
        let ctx = Context::from(data);

        let subject = render_with(text_registry(), &self.subject, &ctx, None, 128)?;
        let subject = subject.replace(['\r', '\n'], " ").trim().to_string();
        let text = render_with(text_registry(), &self.text, &ctx, None, 4 * 1024)?;
        let html = render_with(html_registry(), &self.html, &ctx, Some(links), 48 * 1024)?;
        Ok(Rendered {
            subject,
            html,
            text,
            unsubscribe_url,
            missing,
        })
    }
}

fn render_with(
    registry: &Handlebars<'static>,
    template: &Template,
    ctx: &Context,
    links: Option<LinkContext<'_>>,
    capacity: usize,
) -> Result<String, RenderError> {
    let mut rc = RenderContext::new(None);
    if let Some(links) = links {
        rc.register_local_helper(LINK_HELPER, Box::new(LinkHelper { links }));
        rc.register_local_helper(PIXEL_HELPER, Box::new(PixelHelper { links }));
    }
    let mut out = Buf(String::with_capacity(capacity));
    template.render(registry, ctx, &mut rc, &mut out)?;
    Ok(out.0)
}
