//! Short human text (names, sources, addresses): trimmed, 1 to `max` characters, no
//! control characters. The OpenAPI schemas state the same rule as a pattern.

/// The trimmed text, or the reason it is not acceptable.
pub fn parse_text(value: &str, max: usize) -> Result<String, String> {
    let t = value.trim();
    // The bound is on the value as sent (what the schema's maxLength states); the stored
    // text is trimmed.
    if t.is_empty() || value.chars().count() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if t.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_printable() {
        assert_eq!(parse_text("  Acme ", 10).unwrap(), "Acme");
        assert!(parse_text("   ", 10).is_err());
        assert!(parse_text("abcdef", 5).is_err());
        // Spaces count toward the bound as sent (the schema's maxLength), then are trimmed.
        assert!(parse_text(" abcde", 5).is_err());
        assert_eq!(parse_text("ñandú", 5).unwrap(), "ñandú");
        assert!(parse_text("a\u{0}b", 10).is_err());
        assert!(parse_text("a\u{85}b", 10).is_err());
    }
}
