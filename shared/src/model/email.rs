//! Email addresses, parsed once: normalised (trimmed, lowercased, IDNA ASCII domain)
//! before any comparison or key, as API-CONVENTIONS.md asks.

use std::fmt;

/// A syntactically valid, normalised email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

/// Why an address was rejected, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("is empty")]
    Empty,
    #[error("has no @")]
    MissingAt,
    #[error("has nothing before the @")]
    EmptyLocalPart,
    #[error("has a local part longer than 64 characters")]
    LocalPartTooLong,
    #[error("has a character that is not allowed before the @: {0:?}")]
    BadLocalChar(char),
    #[error("has a dot at the start or end of the local part, or two dots in a row")]
    BadDots,
    #[error("has a domain that is not a valid host name")]
    BadDomain,
    #[error("has a domain without a dot")]
    DomainWithoutDot,
    #[error("is longer than 254 characters")]
    TooLong,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::MissingAt)?;
        if local.is_empty() {
            return Err(EmailError::EmptyLocalPart);
        }
        let local = local.to_lowercase();
        if local.chars().count() > 64 {
            return Err(EmailError::LocalPartTooLong);
        }
        if let Some(c) = local.chars().find(|c| !is_local_char(*c)) {
            return Err(EmailError::BadLocalChar(c));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError::BadDots);
        }
        let domain = normalise_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > 254 {
            return Err(EmailError::TooLong);
        }
        Ok(Self(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

fn is_local_char(c: char) -> bool {
    // RFC 5322 atext plus dots; non-ASCII letters are allowed (RFC 6531, SMTPUTF8).
    c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
}

fn normalise_domain(domain: &str) -> Result<String, EmailError> {
    let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::BadDomain)?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err(EmailError::BadDomain);
    }
    if !ascii.contains('.') {
        return Err(EmailError::DomainWithoutDot);
    }
    for label in ascii.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(EmailError::BadDomain);
        }
    }
    Ok(ascii)
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for EmailAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for EmailAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EmailAddress::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_space_and_idna() {
        let e = EmailAddress::parse("  Ana.Lopez@Bücher.Example ").unwrap();
        assert_eq!(e.as_str(), "ana.lopez@xn--bcher-kva.example");
        assert_eq!(e.domain(), "xn--bcher-kva.example");
    }

    #[test]
    fn rejects_with_a_reason() {
        assert_eq!(EmailAddress::parse(""), Err(EmailError::Empty));
        assert_eq!(EmailAddress::parse("no-at"), Err(EmailError::MissingAt));
        assert_eq!(
            EmailAddress::parse("@x.com"),
            Err(EmailError::EmptyLocalPart)
        );
        assert_eq!(
            EmailAddress::parse("a@localhost"),
            Err(EmailError::DomainWithoutDot)
        );
        assert_eq!(
            EmailAddress::parse("a b@x.com"),
            Err(EmailError::BadLocalChar(' '))
        );
        assert_eq!(EmailAddress::parse("a..b@x.com"), Err(EmailError::BadDots));
        assert_eq!(EmailAddress::parse("a@-x.com"), Err(EmailError::BadDomain));
        assert_eq!(EmailAddress::parse("a@x..com"), Err(EmailError::BadDomain));
    }

    #[test]
    fn parsing_is_idempotent_over_many_inputs() {
        // A cheap property test: whatever parses, re-parses to itself.
        let locals = ["a", "A.b", "x+tag", "Ünï", "o'neil", "_"];
        let domains = ["Example.COM", "bücher.de", "sub.domain.io", "a-b.co"];
        for l in locals {
            for d in domains {
                let input = format!(" {l}@{d} ");
                if let Ok(e) = EmailAddress::parse(&input) {
                    assert_eq!(EmailAddress::parse(e.as_str()), Ok(e.clone()));
                    assert_eq!(e.as_str(), e.as_str().to_lowercase());
                }
            }
        }
    }
}
