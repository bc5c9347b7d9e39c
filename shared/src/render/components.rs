//! Components: named reusable blocks with declared parameters, used in a template as
//! `{{> button label="Start" url=cta_url}}`.
//!
//! A use is expanded when the template version is saved (the version keeps a snapshot
//! of every component it used): the component's body replaces the `{{> …}}`, with each
//! parameter substituted. A literal argument (`label="Start"`) becomes text (escaped
//! for HTML where the body writes `{{label}}`); a variable argument (`url=cta_url`)
//! becomes that variable (`{{cta_url}}`), so it is filled in at send. Expanding before
//! the MJML compile is what lets an MJML component be a fragment of MJML, and it makes
//! a saved version self-contained.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

use super::html::skip_mustache;

/// Template and component body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// HTML with Handlebars.
    #[default]
    Handlebars,
    /// MJML with Handlebars, compiled to HTML when the version is saved.
    Mjml,
}

/// The type of a component parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    /// An absolute http(s) URL, `mailto:` or `tel:` when given literally.
    Url,
    Number,
    Boolean,
}

/// A declared parameter of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ParamDef {
    /// `[a-z][a-z0-9_]{0,39}`, not a Handlebars keyword or helper name.
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,39}$")]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Used when a use leaves the parameter out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Any JSON value (a string, number, boolean, object or array).
    #[schema(value_type = Value)]
    pub default: Option<Json>,
    /// A use that leaves a required parameter out (and it has no default) is rejected.
    #[serde(default)]
    pub required: bool,
}

/// What expansion needs of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentDef {
    pub name: String,
    pub format: Format,
    pub body: String,
    pub parameters: Vec<ParamDef>,
}

/// Names a parameter may not take: Handlebars keywords and our helpers.
const RESERVED: [&str; 14] = [
    "if", "unless", "each", "with", "else", "this", "lookup", "log", "default", "date", "if_attr",
    "true", "false", "null",
];

/// The reason a parameter name is not acceptable, if it is not.
pub fn check_param_name(name: &str) -> Result<(), &'static str> {
    let ok = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err("must match [a-z][a-z0-9_]{0,39}");
    }
    if RESERVED.contains(&name) || name.starts_with("mp_") {
        return Err("is a reserved name");
    }
    Ok(())
}

/// The reason a literal value does not fit a parameter type, if it does not.
pub fn check_value(kind: ParamType, v: &Json) -> Result<(), &'static str> {
    match (kind, v) {
        (ParamType::String, Json::String(_)) => Ok(()),
        (ParamType::Url, Json::String(s)) => {
            let l = s.to_ascii_lowercase();
            if l.starts_with("https://")
                || l.starts_with("http://")
                || l.starts_with("mailto:")
                || l.starts_with("tel:")
            {
                Ok(())
            } else {
                Err("must be an http(s), mailto: or tel: URL")
            }
        }
        (ParamType::Number, Json::Number(_)) => Ok(()),
        (ParamType::Boolean, Json::Bool(_)) => Ok(()),
        (ParamType::String | ParamType::Url, _) => Err("must be a string"),
        (ParamType::Number, _) => Err("must be a number"),
        (ParamType::Boolean, _) => Err("must be true or false"),
    }
}

/// An argument of a component use.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Literal(Json),
    /// A variable path (`cta_url`, `attributes.plan`, `@root.x`).
    Path(String),
}

/// One `{{> name …}}` in a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Use {
    pub range: std::ops::Range<usize>,
    pub name: String,
    pub args: BTreeMap<String, Arg>,
}

/// A problem found while expanding, at a byte offset of the source being expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub offset: usize,
    pub message: String,
}

/// Finds the component uses in a source.
pub fn find_uses(src: &str) -> Result<Vec<Use>, ExpandError> {
    let s = src.as_bytes();
    let mut uses = vec![];
    let mut i = 0;
    while i + 1 < s.len() {
        if !s[i..].starts_with(b"{{") {
            i += 1;
            continue;
        }
        let end = skip_mustache(s, i);
        let inner = &src[i + 2..end.saturating_sub(2).max(i + 2)];
        let trimmed = inner.trim_start_matches('~').trim_start();
        if let Some(call) = trimmed.strip_prefix('>') {
            let call = call.trim_end_matches('~');
            uses.push(
                parse_use(call, i..end).map_err(|message| ExpandError { offset: i, message })?,
            );
        }
        i = end;
    }
    Ok(uses)
}

fn parse_use(call: &str, range: std::ops::Range<usize>) -> Result<Use, String> {
    let mut rest = call.trim();
    let name_len = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    let name = &rest[..name_len];
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!("{name:?} is not a component name"));
    }
    rest = rest[name_len..].trim_start();
    let mut args = BTreeMap::new();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return Err(format!(
                "component {name}: arguments must be named (key=value), found {:?}",
                rest.split_whitespace().next().unwrap_or(rest)
            ));
        };
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "component {name}: arguments must be named (key=value)"
            ));
        }
        rest = rest[eq + 1..].trim_start();
        let (value, len) = parse_value(rest)
            .ok_or_else(|| format!("component {name}: the value of {key} is not valid"))?;
        if args.insert(key.to_string(), value).is_some() {
            return Err(format!("component {name}: {key} is given twice"));
        }
        rest = rest[len..].trim_start();
    }
    Ok(Use {
        range,
        name: name.to_string(),
        args,
    })
}

fn parse_value(s: &str) -> Option<(Arg, usize)> {
    let first = s.chars().next()?;
    if first == '"' || first == '\'' {
        let mut out = String::new();
        let mut chars = s.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            } else if c == first {
                return Some((Arg::Literal(Json::String(out)), i + 1));
            } else {
                out.push(c);
            }
        }
        return None;
    }
    let len = s.find(char::is_whitespace).unwrap_or(s.len());
    let tok = &s[..len];
    let value = match tok {
        "true" => Arg::Literal(Json::Bool(true)),
        "false" => Arg::Literal(Json::Bool(false)),
        "null" => Arg::Literal(Json::Null),
        _ if tok.parse::<f64>().is_ok()
            && tok.starts_with(|c: char| c.is_ascii_digit() || c == '-') =>
        {
            Arg::Literal(serde_json::from_str(tok).ok()?)
        }
        _ if tok
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@/-[]".contains(&b)) =>
        {
            Arg::Path(tok.to_string())
        }
        _ => return None,
    };
    Some((value, len))
}

/// One expanded use: where it was in the source and where its body is in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub source: std::ops::Range<usize>,
    pub output: std::ops::Range<usize>,
    pub component: String,
}

/// A source with its component uses expanded, and the names of the components used
/// (nested ones included).
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    pub text: String,
    pub splices: Vec<Splice>,
    pub used: Vec<String>,
}

impl Expanded {
    /// Maps an offset of the expanded text back to the source: an offset inside an
    /// expanded component is reported at its use, with the component's name.
    pub fn source_offset(&self, out: usize) -> (usize, Option<&str>) {
        let mut shift: isize = 0;
        for s in &self.splices {
            if out < s.output.start {
                break;
            }
            if out < s.output.end {
                return (s.source.start, Some(&s.component));
            }
            shift += s.output.len() as isize - s.source.len() as isize;
        }
        ((out as isize - shift).max(0) as usize, None)
    }
}

/// Deepest nesting of components inside components.
pub const MAX_DEPTH: usize = 4;

/// Expands every component use in `src`; `lookup` finds a component by name. Every
/// problem is reported (with its offset in `src`), not just the first.
pub fn expand(
    src: &str,
    format: Format,
    lookup: &dyn Fn(&str) -> Option<ComponentDef>,
) -> Result<Expanded, Vec<ExpandError>> {
    let mut errors = vec![];
    let mut out = Expanded::default();
    let uses = find_uses(src).map_err(|e| vec![e])?;
    let mut last = 0;
    for u in uses {
        out.text.push_str(&src[last..u.range.start]);
        last = u.range.end;
        let mut stack = vec![];
        match expand_use(&u, format, lookup, &mut stack, &mut out.used) {
            Ok(body) => {
                let start = out.text.len();
                out.text.push_str(&body);
                out.splices.push(Splice {
                    source: u.range.clone(),
                    output: start..out.text.len(),
                    component: u.name.clone(),
                });
            }
            Err(message) => errors.push(ExpandError {
                offset: u.range.start,
                message,
            }),
        }
    }
    out.text.push_str(&src[last..]);
    if errors.is_empty() {
        out.used.sort();
        out.used.dedup();
        Ok(out)
    } else {
        Err(errors)
    }
}

fn expand_use(
    u: &Use,
    format: Format,
    lookup: &dyn Fn(&str) -> Option<ComponentDef>,
    stack: &mut Vec<String>,
    used: &mut Vec<String>,
) -> Result<String, String> {
    if stack.contains(&u.name) {
        return Err(format!(
            "component {} uses itself ({} → {})",
            u.name,
            stack.join(" → "),
            u.name
        ));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(format!(
            "components nest deeper than {MAX_DEPTH} levels at {}",
            u.name
        ));
    }
    let def = lookup(&u.name).ok_or_else(|| format!("there is no component named {}", u.name))?;
    if def.format == Format::Mjml && format == Format::Handlebars {
        return Err(format!(
            "component {} is MJML and can only be used in an MJML template",
            u.name
        ));
    }
    used.push(def.name.clone());
    let values = bind(&def, &u.args)?;
    let body = substitute(&def.body, &values, true);
    // Nested uses, with this component's parameters already substituted.
    stack.push(u.name.clone());
    let nested = find_uses(&body).map_err(|e| format!("in component {}: {}", u.name, e.message))?;
    let mut text = String::with_capacity(body.len());
    let mut last = 0;
    for n in nested {
        text.push_str(&body[last..n.range.start]);
        last = n.range.end;
        text.push_str(&expand_use(&n, format, lookup, stack, used)?);
    }
    text.push_str(&body[last..]);
    stack.pop();
    Ok(text)
}

/// The value of every declared parameter for one use, checked against the declaration.
pub fn bind(
    def: &ComponentDef,
    args: &BTreeMap<String, Arg>,
) -> Result<BTreeMap<String, Arg>, String> {
    let mut problems = vec![];
    let mut values = BTreeMap::new();
    for key in args.keys() {
        if !def.parameters.iter().any(|p| &p.name == key) {
            problems.push(format!("{key} is not a parameter of {}", def.name));
        }
    }
    for p in &def.parameters {
        match (args.get(&p.name), &p.default) {
            (Some(Arg::Literal(v)), _) => match check_value(p.kind, v) {
                Ok(()) => {
                    values.insert(p.name.clone(), Arg::Literal(v.clone()));
                }
                Err(reason) => problems.push(format!("{} {reason}", p.name)),
            },
            (Some(path @ Arg::Path(_)), _) => {
                values.insert(p.name.clone(), path.clone());
            }
            (None, Some(d)) => {
                values.insert(p.name.clone(), Arg::Literal(d.clone()));
            }
            (None, None) if p.required => {
                problems.push(format!("{} is required by {}", p.name, def.name))
            }
            (None, None) => {
                values.insert(p.name.clone(), Arg::Literal(Json::String(String::new())));
            }
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(format!("component {}: {}", def.name, problems.join("; ")))
    }
}

/// Replaces parameter references inside the mustaches of a body. `{{p}}` and `{{{p}}}`
/// with a literal become text; anywhere else a parameter token becomes the variable
/// path or a Handlebars literal.
pub fn substitute(body: &str, values: &BTreeMap<String, Arg>, escape_html: bool) -> String {
    let s = body.as_bytes();
    let mut out = String::with_capacity(body.len() + 64);
    let mut i = 0;
    let mut last = 0;
    while i < s.len() {
        if !s[i..].starts_with(b"{{") {
            i += 1;
            continue;
        }
        let end = skip_mustache(s, i);
        out.push_str(&body[last..i]);
        last = end;
        let whole = &body[i..end];
        let triple = whole.starts_with("{{{");
        let open = if triple { 3 } else { 2 };
        let inner = whole
            .get(open..whole.len().saturating_sub(open))
            .unwrap_or("");
        let name = inner.trim().trim_matches('~').trim();
        if let Some(Arg::Literal(v)) = values.get(name) {
            let text = match v {
                Json::String(s) => s.clone(),
                Json::Null => String::new(),
                other => other.to_string(),
            };
            let text = if triple || !escape_html {
                text
            } else {
                handlebars::html_escape(&text)
            };
            out.push_str(&text.replace("{{", "\\{{"));
        } else {
            out.push_str(&replace_tokens(whole, values));
        }
        i = end;
    }
    out.push_str(&body[last..]);
    out
}

fn replace_tokens(mustache: &str, values: &BTreeMap<String, Arg>) -> String {
    let b = mustache.as_bytes();
    let mut out = String::with_capacity(mustache.len());
    let mut i = 0;
    let is_tok = |c: u8| c.is_ascii_alphanumeric() || b"_.@/-[]".contains(&c);
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            // A string literal: copied as is.
            let mut j = i + 1;
            while j < b.len() && b[j] != c {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let j = (j + 1).min(b.len());
            out.push_str(&mustache[i..j]);
            i = j;
        } else if is_tok(c) {
            let mut j = i;
            while j < b.len() && is_tok(b[j]) {
                j += 1;
            }
            let tok = &mustache[i..j];
            let is_key = b.get(j) == Some(&b'=');
            match values.get(tok) {
                Some(Arg::Path(p)) if !is_key => out.push_str(p),
                Some(Arg::Literal(v)) if !is_key => out.push_str(&literal(v)),
                _ => out.push_str(tok),
            }
            i = j;
        } else {
            let ch = mustache[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// A value as a Handlebars literal.
fn literal(v: &Json) -> String {
    match v {
        Json::String(s) => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn button() -> ComponentDef {
        ComponentDef {
            name: "button".into(),
            format: Format::Handlebars,
            body: r#"<a href="{{url}}" style="color:{{color}}">{{label}}</a>{{#if note}}<small>{{note}}</small>{{/if}}"#.into(),
            parameters: vec![
                ParamDef { name: "label".into(), kind: ParamType::String, default: None, required: true },
                ParamDef { name: "url".into(), kind: ParamType::Url, default: None, required: true },
                ParamDef { name: "color".into(), kind: ParamType::String, default: Some(json!("#333")), required: false },
                ParamDef { name: "note".into(), kind: ParamType::String, default: None, required: false },
            ],
        }
    }

    fn lookup(name: &str) -> Option<ComponentDef> {
        match name {
            "button" => Some(button()),
            "loop" => Some(ComponentDef {
                name: "loop".into(),
                format: Format::Handlebars,
                body: "{{> loop}}".into(),
                parameters: vec![],
            }),
            _ => None,
        }
    }

    #[test]
    fn expands_literals_as_text_and_variables_as_mustaches() {
        let src = r#"<p>{{> button label="Start <now>" url=cta_url}}</p>"#;
        let e = expand(src, Format::Handlebars, &lookup).unwrap();
        assert_eq!(
            e.text,
            r#"<p><a href="{{cta_url}}" style="color:#333">Start &lt;now&gt;</a>{{#if ""}}<small></small>{{/if}}</p>"#
        );
        assert_eq!(e.used, ["button"]);
        assert_eq!(e.source_offset(1), (1, None));
        assert_eq!(e.source_offset(5), (3, Some("button")));
        assert_eq!(e.source_offset(e.text.len() - 1), (src.len() - 1, None));
    }

    #[test]
    fn reports_missing_unknown_and_mistyped_arguments() {
        let e = expand(
            r#"{{> button label=1 colour="red"}} {{> nope}}"#,
            Format::Handlebars,
            &lookup,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(
            e[0].message.contains("colour is not a parameter"),
            "{:?}",
            e[0]
        );
        assert!(
            e[0].message.contains("label must be a string"),
            "{:?}",
            e[0]
        );
        assert!(e[0].message.contains("url is required"), "{:?}", e[0]);
        assert_eq!(e[1].offset, 34);
        assert!(e[1].message.contains("no component named nope"));
        let e = expand(
            r#"{{> button label="x" url="javascript:alert(1)"}}"#,
            Format::Handlebars,
            &lookup,
        )
        .unwrap_err();
        assert!(e[0].message.contains("url must be an http(s)"));
    }

    #[test]
    fn rejects_cycles_and_positional_arguments() {
        let e = expand("{{> loop}}", Format::Handlebars, &lookup).unwrap_err();
        assert!(e[0].message.contains("uses itself"), "{:?}", e);
        let e = expand("{{> button ctx}}", Format::Handlebars, &lookup).unwrap_err();
        assert!(e[0].message.contains("must be named"), "{:?}", e);
    }

    #[test]
    fn parameter_names_are_checked() {
        assert!(check_param_name("cta_url").is_ok());
        for bad in ["If", "if", "1a", "a-b", "mp_x", ""] {
            assert!(check_param_name(bad).is_err(), "{bad}");
        }
    }
}
