//! Contact fields that parse their input: time zone, locale, consent; and the
//! suppression reasons from which a contact's status is derived.

use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An IANA time zone name (`Europe/Madrid`), checked against the tz database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZone(String);

impl TimeZone {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        chrono_tz::Tz::from_str(s.trim())
            .map(|tz| Self(tz.name().to_string()))
            .map_err(|_| "is not an IANA time zone name (like Europe/Madrid)")
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag in its common shapes (`en`, `pt-BR`, `zh-Hant-TW`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        const REASON: &str = "is not a language tag (like en or pt-BR)";
        let s = s.trim().replace('_', "-");
        let mut parts = s.split('-');
        let lang = parts.next().unwrap_or_default();
        if !(2..=3).contains(&lang.len()) || !lang.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(REASON);
        }
        let mut out = lang.to_ascii_lowercase();
        for part in parts {
            let ok =
                (2..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(REASON);
            }
            out.push('-');
            match part.len() {
                2 => out.push_str(&part.to_ascii_uppercase()),
                4 => {
                    let mut c = part.chars();
                    out.extend(c.next().map(|f| f.to_ascii_uppercase()));
                    out.push_str(&c.as_str().to_ascii_lowercase());
                }
                _ => out.push_str(part),
            }
        }
        Ok(Self(out))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Evidence of consent (CASL/GDPR): where it was given, when, and from which address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Consent {
    /// Where consent was collected (`signup_form`, `checkout`, `import:<file>`…).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub source: String,
    /// When consent was given.
    pub at: DateTime<Utc>,
    /// The IP address consent came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::IpAddress>)]
    pub ip: Option<IpAddr>,
}

/// Why an address is suppressed. One suppression item per (workspace, email) is the one
/// truth that imports, sends and events read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    Unsubscribed,
    HardBounce,
    Complaint,
    Manual,
}

/// A contact's status, derived from its suppression (never stored twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    Active,
    Unsubscribed,
    Bounced,
    Complained,
    Suppressed,
}

impl ContactStatus {
    pub fn from_suppression(reason: Option<SuppressionReason>) -> Self {
        match reason {
            None => ContactStatus::Active,
            Some(SuppressionReason::Unsubscribed) => ContactStatus::Unsubscribed,
            Some(SuppressionReason::HardBounce) => ContactStatus::Bounced,
            Some(SuppressionReason::Complaint) => ContactStatus::Complained,
            Some(SuppressionReason::Manual) => ContactStatus::Suppressed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_checked_against_the_database() {
        assert_eq!(
            TimeZone::parse("Europe/Madrid").unwrap().as_str(),
            "Europe/Madrid"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert!(TimeZone::parse("").is_err());
    }

    #[test]
    fn locales_are_canonicalised() {
        assert_eq!(Locale::parse("pt_br").unwrap().as_str(), "pt-BR");
        assert_eq!(Locale::parse("zh-hant-tw").unwrap().as_str(), "zh-Hant-TW");
        assert!(Locale::parse("english").is_err());
        assert!(Locale::parse("e").is_err());
    }

    #[test]
    fn status_derives_from_suppression() {
        assert_eq!(ContactStatus::from_suppression(None), ContactStatus::Active);
        assert_eq!(
            ContactStatus::from_suppression(Some(SuppressionReason::HardBounce)),
            ContactStatus::Bounced
        );
    }
}
