//! A small, careful scanner for the HTML of a template: it knows Handlebars mustaches
//! (`{{…}}`, `{{{…}}}`, which may hold quotes and `>`), comments, and raw-text elements
//! (`<style>`, `<script>`), and yields tags with the byte ranges of their attributes.
//! Enough to find the links and images of an email and to derive its text part; not a
//! general HTML parser.

use std::ops::Range;

/// One token of a template's HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Text between tags (may contain entities).
    Text(Range<usize>),
    /// A Handlebars mustache in text position, braces included.
    Mustache(Range<usize>),
    /// A comment (`<!-- … -->`, including MSO conditional comments).
    Comment(Range<usize>),
    /// A start or end tag.
    Tag(Tag),
    /// The content of a raw-text element (`style`, `script`, `title`).
    RawText(Range<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The whole tag, `<` to `>`.
    pub range: Range<usize>,
    /// The tag name, lowercased.
    pub name: String,
    pub closing: bool,
    pub attrs: Vec<Attr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The attribute name, lowercased.
    pub name: String,
    /// The value's bytes, inside the quotes (None for a bare attribute).
    pub value: Option<Range<usize>>,
}

impl Tag {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

/// Where a mustache starting at `i` ends (the byte after its closing braces).
pub fn skip_mustache(s: &[u8], i: usize) -> usize {
    let triple = s[i..].starts_with(b"{{{");
    let close: &[u8] = if triple { b"}}}" } else { b"}}" };
    let from = i + if triple { 3 } else { 2 };
    find(s, from, close).map_or(s.len(), |j| j + close.len())
}

fn find(s: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > s.len() {
        return None;
    }
    s[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn find_ci(s: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > s.len() {
        return None;
    }
    s[from..]
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

/// Tokenises a template's HTML.
pub fn tokenize(src: &str) -> Vec<Token> {
    let s = src.as_bytes();
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let flush = |out: &mut Vec<Token>, start: usize, end: usize| {
        if end > start {
            out.push(Token::Text(start..end));
        }
    };
    while i < s.len() {
        if s[i..].starts_with(b"{{") {
            flush(&mut out, text_start, i);
            let end = skip_mustache(s, i);
            out.push(Token::Mustache(i..end));
            i = end;
            text_start = i;
        } else if s[i..].starts_with(b"<!--") {
            flush(&mut out, text_start, i);
            let end = find(s, i + 4, b"-->").map_or(s.len(), |j| j + 3);
            out.push(Token::Comment(i..end));
            i = end;
            text_start = i;
        } else if s[i..].starts_with(b"<!") || s[i..].starts_with(b"<?") {
            // A declaration (`<!doctype html>`) or processing instruction.
            flush(&mut out, text_start, i);
            let end = find(s, i + 2, b">").map_or(s.len(), |j| j + 1);
            out.push(Token::Comment(i..end));
            i = end;
            text_start = i;
        } else if s[i] == b'<'
            && (s.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
                || (s.get(i + 1) == Some(&b'/')
                    && s.get(i + 2).is_some_and(u8::is_ascii_alphabetic)))
        {
            flush(&mut out, text_start, i);
            let tag = parse_tag(s, i);
            i = tag.range.end;
            let raw = !tag.closing && matches!(tag.name.as_str(), "style" | "script" | "title");
            let name = tag.name.clone();
            out.push(Token::Tag(tag));
            if raw {
                let close = format!("</{name}");
                let end = find_ci(s, i, close.as_bytes()).unwrap_or(s.len());
                if end > i {
                    out.push(Token::RawText(i..end));
                }
                i = end;
            }
            text_start = i;
        } else {
            i += 1;
        }
    }
    flush(&mut out, text_start, s.len());
    out
}

fn parse_tag(s: &[u8], start: usize) -> Tag {
    let mut i = start + 1;
    let closing = s.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'-' || s[i] == b':') {
        i += 1;
    }
    let name = String::from_utf8_lossy(&s[name_start..i]).to_ascii_lowercase();
    let mut attrs = Vec::new();
    loop {
        while i < s.len() && (s[i].is_ascii_whitespace() || s[i] == b'/') {
            i += 1;
        }
        if i >= s.len() {
            break;
        }
        if s[i] == b'>' {
            i += 1;
            break;
        }
        if s[i..].starts_with(b"{{") {
            // A mustache between attributes (`{{#if x}}checked{{/if}}`).
            i = skip_mustache(s, i);
            continue;
        }
        let an_start = i;
        while i < s.len()
            && !s[i].is_ascii_whitespace()
            && !matches!(s[i], b'=' | b'>' | b'/')
            && !s[i..].starts_with(b"{{")
        {
            i += 1;
        }
        let attr_name = String::from_utf8_lossy(&s[an_start..i]).to_ascii_lowercase();
        let mut j = i;
        while j < s.len() && s[j].is_ascii_whitespace() {
            j += 1;
        }
        if s.get(j) != Some(&b'=') {
            if !attr_name.is_empty() {
                attrs.push(Attr {
                    name: attr_name,
                    value: None,
                });
            }
            if i == an_start {
                // Nothing consumed (a stray character): step over it.
                i += 1;
            }
            continue;
        }
        j += 1;
        while j < s.len() && s[j].is_ascii_whitespace() {
            j += 1;
        }
        let value = match s.get(j) {
            Some(&q @ (b'"' | b'\'')) => {
                let v_start = j + 1;
                let mut k = v_start;
                while k < s.len() && s[k] != q {
                    if s[k..].starts_with(b"{{") {
                        k = skip_mustache(s, k);
                    } else {
                        k += 1;
                    }
                }
                let v_end = k.min(s.len());
                i = (k + 1).min(s.len());
                v_start..v_end
            }
            _ => {
                let v_start = j;
                let mut k = j;
                while k < s.len() && !s[k].is_ascii_whitespace() && s[k] != b'>' {
                    if s[k..].starts_with(b"{{") {
                        k = skip_mustache(s, k);
                    } else {
                        k += 1;
                    }
                }
                i = k;
                v_start..k.min(s.len())
            }
        };
        attrs.push(Attr {
            name: attr_name,
            value: Some(value),
        });
    }
    Tag {
        range: start..i.min(s.len()),
        name,
        closing,
        attrs,
    }
}

/// Decodes the common character references (`&amp;`, `&lt;`, `&#39;`, `&#x27;`, …);
/// unknown ones stay as written.
pub fn decode_entities(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('&') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(src.len());
    let before = &src[..src.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map_or(before, |(_, l)| l)
        .chars()
        .count()
        + 1;
    (line as u32, col as u32)
}

/// Derives a plain-text Handlebars template from an HTML Handlebars template: tags go,
/// blocks become line breaks, links become `label (url)`, entities are decoded, and
/// mustaches stay exactly as they were (so the text renders the same variables).
pub fn to_text_template(src: &str) -> String {
    let tokens = tokenize(src);
    let mut out = String::with_capacity(src.len() / 3);
    let mut in_head = false;
    let mut link: Option<String> = None;
    let mut link_text_start = 0;
    for t in &tokens {
        match t {
            Token::Tag(tag) => {
                match (tag.name.as_str(), tag.closing) {
                    ("head", false) => in_head = true,
                    ("head", true) => in_head = false,
                    _ => {}
                }
                if in_head {
                    continue;
                }
                match tag.name.as_str() {
                    "br" => out.push('\n'),
                    "p" | "div" | "tr" | "table" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
                    | "li" | "ul" | "ol" | "section" | "blockquote" | "hr" | "center" => {
                        out.push('\n')
                    }
                    "a" if !tag.closing => {
                        link = tag
                            .attr("href")
                            .and_then(|a| a.value.clone())
                            .map(|r| src[r].trim().to_string());
                        link_text_start = out.len();
                    }
                    "a" => {
                        if let Some(href) = link.take() {
                            let label = out[link_text_start..].trim().to_string();
                            let href_text = decode_text(&href);
                            let skip = href.is_empty()
                                || href.starts_with('#')
                                || label == href_text
                                || href_text.to_ascii_lowercase().starts_with("mailto:")
                                    && label.contains('@');
                            if !skip {
                                out.push_str(" (");
                                out.push_str(&href_text);
                                out.push(')');
                            }
                        }
                    }
                    _ => {}
                }
            }
            Token::Text(r) if !in_head => {
                let text = decode_text(&src[r.clone()]);
                push_collapsed(&mut out, &text);
            }
            Token::Mustache(r) if !in_head => out.push_str(&src[r.clone()]),
            _ => {}
        }
    }
    tidy_lines(&out)
}

/// Decodes entities in static text and keeps decoded braces from becoming mustaches.
fn decode_text(s: &str) -> String {
    // Mustaches inside an attribute value stay untouched.
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    let mut start = 0;
    while i < b.len() {
        if b[i..].starts_with(b"{{") {
            out.push_str(&escape_braces(&decode_entities(&s[start..i])));
            let end = skip_mustache(b, i);
            out.push_str(&s[i..end]);
            i = end;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&escape_braces(&decode_entities(&s[start..])));
    out
}

fn escape_braces(s: &str) -> String {
    s.replace("{{", "\\{{").replace('\u{a0}', " ")
}

fn push_collapsed(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_whitespace() {
            if !out.ends_with([' ', '\n']) && !out.is_empty() {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
}

/// Trims every line, and keeps at most one blank line in a row.
fn tidy_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(src: &str) -> Vec<Tag> {
        tokenize(src)
            .into_iter()
            .filter_map(|t| match t {
                Token::Tag(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn finds_attributes_with_mustaches_and_quotes() {
        let src =
            r#"<a class=x href="{{default url "https://a.example/?q=1"}}" data-no-track>Go</a>"#;
        let t = &tags(src)[0];
        assert_eq!(t.name, "a");
        let href = t.attr("href").unwrap().value.clone().unwrap();
        assert_eq!(&src[href], r#"{{default url "https://a.example/?q=1"}}"#);
        assert!(t.attr("data-no-track").unwrap().value.is_none());
        assert_eq!(&src[t.attr("class").unwrap().value.clone().unwrap()], "x");
    }

    #[test]
    fn skips_comments_mustaches_and_raw_text() {
        let src = "<!-- <a href=\"x\"> --><style>a{}<a href='y'></style>{{> button x=\"<a>\"}}<A HREF='z'>";
        let t = tags(src);
        let names: Vec<_> = t.iter().map(|t| (t.name.as_str(), t.closing)).collect();
        assert_eq!(names, [("style", false), ("style", true), ("a", false)]);
        let href = t[2].attr("href").unwrap().value.clone().unwrap();
        assert_eq!(&src[href], "z");
    }

    #[test]
    fn survives_unterminated_input() {
        for src in [
            "<a href=\"x",
            "<a href=",
            "{{x",
            "<!--",
            "<a {{#if",
            "<",
            "<a b='{{'",
        ] {
            let _ = tokenize(src);
            let _ = to_text_template(src);
        }
    }

    #[test]
    fn decodes_entities() {
        assert_eq!(
            decode_entities("a&amp;b&#39;&#x41;&unknown;&"),
            "a&b'A&unknown;&"
        );
    }

    #[test]
    fn text_keeps_mustaches_and_shows_link_targets() {
        let src = "<html><head><title>T</title><style>p{}</style></head><body><p>Hi {{first_name}},</p>\
                   <p>Read <a href=\"https://x.example/a\">our post</a> &amp; more.</p>\
                   <p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p></body></html>";
        let text = to_text_template(src);
        assert_eq!(
            text,
            "Hi {{first_name}},\n\nRead our post (https://x.example/a) & more.\n\nUnsubscribe ({{unsubscribe_url}})\n"
        );
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }
}
