//! Provider connections: the credentials and the rate of one way out (Amazon SES v2,
//! Resend, SMTP, or the local outbox). Secrets are sealed with AES-256-GCM before they are
//! stored, never logged (redacting `Debug`) and never returned (reads show `********`,
//! an API key's last four characters at most). [`Providers`] turns a stored connection
//! into a ready [`Provider`], cached per connection version.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Paged, from_item, page_of, to_item};
use crate::adapters::mail;
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::model::Id;
use crate::ports::provider::{Provider, SendError};
use crate::ports::store::{Cond, Key, Store, StoreError};
use crate::secrets::Sealer;

/// What a redacted secret reads as.
pub const REDACTED: &str = "********";

// ---- secrets ------------------------------------------------------------------------

/// A secret as a request carries it: kept out of `Debug` output and logs.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A secret as stored: AES-256-GCM sealed, with an optional hint (the last four
/// characters of an API key) that reads may show.
#[derive(Clone, Serialize, Deserialize)]
pub struct SealedSecret {
    sealed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret(<redacted>)")
    }
}

impl SealedSecret {
    fn seal(sealer: &Sealer, secret: &Secret, with_hint: bool) -> Self {
        let value = secret.expose();
        let chars: Vec<char> = value.chars().collect();
        // A hint only where the secret is long enough that four characters give nothing away.
        let hint = (with_hint && chars.len() >= 16)
            .then(|| chars[chars.len() - 4..].iter().collect::<String>());
        Self {
            sealed: sealer.seal(value.as_bytes()),
            hint,
        }
    }

    /// The plaintext, for building a provider. Never log it.
    pub fn open(&self, sealer: &Sealer) -> AppResult<Secret> {
        let bytes = sealer.open(&self.sealed).map_err(|_| {
            AppError::internal("a stored provider secret does not decrypt (was the key changed?)")
        })?;
        String::from_utf8(bytes)
            .map(Secret)
            .map_err(|_| AppError::internal("a stored provider secret is not UTF-8"))
    }

    fn redacted(&self) -> String {
        match &self.hint {
            Some(h) => format!("{REDACTED}{h}"),
            None => REDACTED.into(),
        }
    }
}

// ---- stored records -----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Ses,
    Resend,
    Smtp,
    Outbox,
}

impl ProviderKind {
    /// The rate a new connection gets when none is given: SES's sandbox rate (1/s),
    /// Resend's default account rate (2/s), a conservative SMTP relay rate.
    pub fn default_rate(self) -> u32 {
        match self {
            ProviderKind::Ses => 1,
            ProviderKind::Resend => 2,
            ProviderKind::Smtp => 5,
            ProviderKind::Outbox => 1000,
        }
    }
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain text (a local relay or catcher only).
    None,
    /// Plain text upgraded with STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl SmtpSecurity {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::None => 25,
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SesSettings {
    pub region: String,
    #[serde(default)]
    pub configuration_set: Option<String>,
    /// Static credentials; without them the function's own role is used.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<SealedSecret>,
    /// SNS topics allowed to post this connection's SES events to `/webhooks/ses/…`
    /// (any AWS account can produce validly signed SNS messages).
    #[serde(default)]
    pub sns_topic_arns: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResendSettings {
    pub api_key: SealedSecret,
    #[serde(default)]
    pub webhook_secret: Option<SealedSecret>,
    #[serde(default)]
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkimSettings {
    pub selector: String,
    pub domain: String,
    pub private_key: SealedSecret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SealedSecret>,
    #[serde(default)]
    pub dkim: Option<DkimSettings>,
    /// An extra CA certificate (PEM) to trust, for a relay with a private certificate.
    #[serde(default)]
    pub ca_certificate: Option<String>,
}

/// A connection's settings as stored (secrets sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredSettings {
    Ses(SesSettings),
    Resend(ResendSettings),
    Smtp(SmtpSettings),
    Outbox,
}

impl StoredSettings {
    pub fn kind(&self) -> ProviderKind {
        match self {
            StoredSettings::Ses(_) => ProviderKind::Ses,
            StoredSettings::Resend(_) => ProviderKind::Resend,
            StoredSettings::Smtp(_) => ProviderKind::Smtp,
            StoredSettings::Outbox => ProviderKind::Outbox,
        }
    }
}

/// A provider connection as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderConnection {
    pub id: String,
    pub name: String,
    /// Sends per second over this connection, shared by every sender on it.
    pub rate_per_second: u32,
    pub settings: StoredSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProviderConnection {
    pub fn kind(&self) -> ProviderKind {
        self.settings.kind()
    }
}

// ---- API shapes ---------------------------------------------------------------------

/// A connection's settings as reads show them: secrets redacted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SettingsView {
    Ses {
        region: String,
        configuration_set: Option<String>,
        access_key_id: Option<String>,
        /// Redacted.
        secret_access_key: Option<String>,
        sns_topic_arns: Vec<String>,
    },
    Resend {
        /// Redacted (`********` and the key's last four characters).
        api_key: String,
        /// Redacted.
        webhook_secret: Option<String>,
        base_url: Option<String>,
    },
    Smtp {
        host: String,
        port: u16,
        security: SmtpSecurity,
        username: Option<String>,
        /// Redacted.
        password: Option<String>,
        dkim: Option<DkimView>,
        ca_certificate: Option<String>,
    },
    Outbox {},
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DkimView {
    pub selector: String,
    pub domain: String,
    /// Redacted.
    pub private_key: String,
}

/// A provider connection as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub rate_per_second: u32,
    pub settings: SettingsView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&ProviderConnection> for ProviderView {
    fn from(c: &ProviderConnection) -> Self {
        let settings = match &c.settings {
            StoredSettings::Ses(s) => SettingsView::Ses {
                region: s.region.clone(),
                configuration_set: s.configuration_set.clone(),
                access_key_id: s.access_key_id.as_deref().map(redact_id),
                secret_access_key: s.secret_access_key.as_ref().map(SealedSecret::redacted),
                sns_topic_arns: s.sns_topic_arns.clone(),
            },
            StoredSettings::Resend(s) => SettingsView::Resend {
                api_key: s.api_key.redacted(),
                webhook_secret: s.webhook_secret.as_ref().map(SealedSecret::redacted),
                base_url: s.base_url.clone(),
            },
            StoredSettings::Smtp(s) => SettingsView::Smtp {
                host: s.host.clone(),
                port: s.port,
                security: s.security,
                username: s.username.clone(),
                password: s.password.as_ref().map(SealedSecret::redacted),
                dkim: s.dkim.as_ref().map(|d| DkimView {
                    selector: d.selector.clone(),
                    domain: d.domain.clone(),
                    private_key: d.private_key.redacted(),
                }),
                ca_certificate: s.ca_certificate.clone(),
            },
            StoredSettings::Outbox => SettingsView::Outbox {},
        };
        ProviderView {
            id: c.id.clone(),
            name: c.name.clone(),
            kind: c.kind(),
            rate_per_second: c.rate_per_second,
            settings,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// An access key id is not a secret, but only its last four characters are shown.
fn redact_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("{REDACTED}{tail}")
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct DkimInput {
    /// The DNS selector (`<selector>._domainkey.<domain>`).
    #[schema(min_length = 1, max_length = 63)]
    pub selector: String,
    /// The signing domain (`d=`).
    #[schema(min_length = 1, max_length = 253)]
    pub domain: String,
    /// RSA private key, PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`).
    pub private_key: Secret,
}

/// A connection's settings in a create request, by `kind`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SettingsInput {
    Ses {
        /// AWS region of the SES account (`eu-west-1`).
        #[schema(pattern = r"^[a-z0-9]+(-[a-z0-9]+)+-[0-9]+$")]
        region: String,
        #[serde(default)]
        #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
        configuration_set: Option<String>,
        /// Static credentials (both or neither); without them the function's role is used.
        #[serde(default)]
        access_key_id: Option<String>,
        #[serde(default)]
        secret_access_key: Option<Secret>,
        /// SNS topic ARNs allowed to post SES events to `/webhooks/ses/{workspace}/{connection}`.
        #[serde(default)]
        #[schema(max_items = 10)]
        sns_topic_arns: Vec<String>,
    },
    Resend {
        api_key: Secret,
        /// The signing secret of the Resend webhook (`whsec_…`).
        #[serde(default)]
        webhook_secret: Option<Secret>,
        /// Resend's API base URL; `https://api.resend.com` when unset.
        #[serde(default)]
        base_url: Option<String>,
    },
    Smtp {
        host: String,
        /// Defaults by security: 25 (none), 587 (starttls), 465 (tls).
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        security: SmtpSecurity,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        #[serde(default)]
        dkim: Option<DkimInput>,
        #[serde(default)]
        ca_certificate: Option<String>,
    },
    Outbox {},
}

/// `POST /v1/providers` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProvider {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Sends per second shared by every sender on the connection; a default per kind.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_per_second: Option<u32>,
    pub settings: SettingsInput,
}

/// Changes to a connection's settings; `kind` must be the connection's. Absent fields
/// stay; a secret given replaces the stored one; `null` removes an optional field.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SettingsPatch {
    Ses {
        #[serde(default)]
        region: Option<String>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        configuration_set: Option<Option<String>>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        access_key_id: Option<Option<String>>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        secret_access_key: Option<Option<Secret>>,
        #[serde(default)]
        #[schema(max_items = 10)]
        sns_topic_arns: Option<Vec<String>>,
    },
    Resend {
        #[serde(default)]
        api_key: Option<Secret>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        webhook_secret: Option<Option<Secret>>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        base_url: Option<Option<String>>,
    },
    Smtp {
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        security: Option<SmtpSecurity>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        username: Option<Option<String>>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        password: Option<Option<Secret>>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<DkimInput>)]
        dkim: Option<Option<DkimInput>>,
        #[serde(default, deserialize_with = "crate::serde_util::double_option")]
        #[schema(value_type = Option<String>)]
        ca_certificate: Option<Option<String>>,
    },
    Outbox {},
}

/// `PATCH /v1/providers/{id}` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ProviderPatch {
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_per_second: Option<u32>,
    #[serde(default)]
    pub settings: Option<SettingsPatch>,
}

/// The answer to `POST /v1/providers/{id}/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// Whether the provider accepted the connection's credentials.
    pub ok: bool,
    /// `transient`, `throttled`, `permanent` or `sender` when not ok.
    pub class: Option<String>,
    /// The provider's code (`InvalidClientTokenId`, `535`, `restricted_api_key`…).
    pub code: Option<String>,
    pub detail: Option<String>,
    pub checked_at: DateTime<Utc>,
}

// ---- the factory --------------------------------------------------------------------

/// Built providers by (workspace, connection id), with the connection version they match.
type ProviderCache = HashMap<(String, String), (DateTime<Utc>, Arc<dyn Provider>)>;

/// Builds a [`Provider`] for a stored connection, and caches it per connection version
/// (so an SMTP pool or an SES client is built once, not per message).
#[derive(Clone)]
pub struct Providers {
    sealer: Sealer,
    outbox_root: Option<PathBuf>,
    replace_with: Option<Arc<dyn Provider>>,
    cache: Arc<Mutex<ProviderCache>>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Providers")
            .field("outbox_root", &self.outbox_root)
            .field("replaced", &self.replace_with.is_some())
            .finish_non_exhaustive()
    }
}

impl Providers {
    /// `outbox_root` is where the outbox writes (`$MAILPILOT_DATA/outbox`); `None` (AWS)
    /// refuses outbox connections.
    pub fn new(sealer: Sealer, outbox_root: Option<PathBuf>) -> Self {
        Self {
            sealer,
            outbox_root,
            replace_with: None,
            cache: Arc::default(),
        }
    }

    /// Sends everything through `provider` instead of each connection's own (the
    /// benchmarks' null provider, the fault suite's failing wrapper).
    pub fn replaced_by(mut self, provider: Arc<dyn Provider>) -> Self {
        self.replace_with = Some(provider);
        self
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn outbox_root(&self) -> Option<&PathBuf> {
        self.outbox_root.as_ref()
    }

    /// The provider for a connection of workspace `ws`.
    pub async fn build(&self, ws: &str, conn: &ProviderConnection) -> AppResult<Arc<dyn Provider>> {
        if let Some(p) = &self.replace_with {
            return Ok(p.clone());
        }
        let key = (ws.to_string(), conn.id.clone());
        if let Some((version, p)) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned())
            && version == conn.updated_at
        {
            return Ok(p);
        }
        let provider = self.build_uncached(ws, conn).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (conn.updated_at, provider.clone()));
        }
        Ok(provider)
    }

    async fn build_uncached(
        &self,
        ws: &str,
        conn: &ProviderConnection,
    ) -> AppResult<Arc<dyn Provider>> {
        Ok(match &conn.settings {
            StoredSettings::Outbox => {
                let root = self
                    .outbox_root
                    .as_ref()
                    .ok_or_else(|| AppError::invalid("/settings/kind", OUTBOX_ONLY_LOCAL))?;
                Arc::new(mail::outbox::OutboxProvider::new(root.join(ws)))
            }
            // Without a webhook secret no Resend webhook can be verified: its mail is polled.
            StoredSettings::Resend(s) => Arc::new(
                mail::resend::ResendProvider::new(
                    s.base_url.as_deref(),
                    s.api_key.open(&self.sealer)?.expose(),
                )
                .polled(s.webhook_secret.is_none()),
            ),
            StoredSettings::Smtp(s) => {
                let password = s
                    .password
                    .as_ref()
                    .map(|p| p.open(&self.sealer))
                    .transpose()?;
                let dkim = match &s.dkim {
                    Some(d) => Some(mail::smtp::Dkim {
                        selector: d.selector.clone(),
                        domain: d.domain.clone(),
                        private_key_pem: d.private_key.open(&self.sealer)?.expose().to_string(),
                    }),
                    None => None,
                };
                let config = mail::smtp::SmtpConfig {
                    host: s.host.clone(),
                    port: s.port,
                    security: s.security,
                    credentials: s
                        .username
                        .clone()
                        .zip(password.map(|p| p.expose().to_string())),
                    dkim,
                    ca_certificate: s.ca_certificate.clone(),
                };
                Arc::new(
                    mail::smtp::SmtpProvider::new(config)
                        .map_err(|e| AppError::invalid("/settings", e))?,
                )
            }
            StoredSettings::Ses(s) => self.build_ses(s).await?,
        })
    }

    #[cfg(feature = "ses")]
    async fn build_ses(&self, s: &SesSettings) -> AppResult<Arc<dyn Provider>> {
        let credentials = match (&s.access_key_id, &s.secret_access_key) {
            (Some(id), Some(secret)) => {
                Some((id.clone(), secret.open(&self.sealer)?.expose().to_string()))
            }
            _ => None,
        };
        Ok(Arc::new(
            mail::ses::SesProvider::connect(&s.region, s.configuration_set.clone(), credentials)
                .await,
        ))
    }

    #[cfg(not(feature = "ses"))]
    async fn build_ses(&self, _: &SesSettings) -> AppResult<Arc<dyn Provider>> {
        Err(AppError::invalid(
            "/settings/kind",
            "this build has no Amazon SES support (the `ses` feature)",
        ))
    }
}

const OUTBOX_ONLY_LOCAL: &str = "the outbox keeps mail as files on the machine running Mailpilot: it exists in the local runner only";

// ---- use cases ----------------------------------------------------------------------

fn providers_pk(ws: &str) -> String {
    keys::ws(ws, keys::PROVIDERS)
}

fn check_name(field: &str, v: &str, errors: &mut Vec<FieldError>) -> String {
    match crate::model::parse_text(v, 200) {
        Ok(t) => t,
        Err(reason) => {
            errors.push(FieldError::new(field, reason));
            String::new()
        }
    }
}

fn check_rate(v: u32, errors: &mut Vec<FieldError>) {
    if !(1..=100_000).contains(&v) {
        errors.push(FieldError::new("/rate_per_second", "must be 1 to 100000"));
    }
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_secret(field: &str, s: &Secret, errors: &mut Vec<FieldError>) {
    let v = s.expose();
    if v.trim().is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if v.len() > 8000 {
        errors.push(FieldError::new(field, "must be at most 8000 characters"));
    } else if v.chars().any(|c| c.is_control() && c != '\n' && c != '\r') {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
}

fn check_token(field: &str, s: &Secret, errors: &mut Vec<FieldError>) {
    check_secret(field, s, errors);
    if s.expose().chars().any(char::is_whitespace) {
        errors.push(FieldError::new(field, "must not contain spaces"));
    }
}

fn check_region(v: &str, errors: &mut Vec<FieldError>) {
    let parts: Vec<&str> = v.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        errors.push(FieldError::new(
            "/settings/region",
            "is not an AWS region (like eu-west-1)",
        ));
    }
}

fn check_configuration_set(v: &str, errors: &mut Vec<FieldError>) {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        errors.push(FieldError::new(
            "/settings/configuration_set",
            "must be 1 to 64 letters, digits, - or _",
        ));
    }
}

/// `arn:aws:sns:<region>:<account>:<name>`, at most 10.
fn check_topic_arns(arns: &[String], errors: &mut Vec<FieldError>) {
    if arns.len() > 10 {
        errors.push(FieldError::new(
            "/settings/sns_topic_arns",
            "at most 10 topics",
        ));
    }
    for (i, arn) in arns.iter().enumerate() {
        let parts: Vec<&str> = arn.split(':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "sns"
            && !parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].bytes().all(|b| b.is_ascii_digit())
            && !parts[5].is_empty()
            && parts[5].len() <= 256
            && parts[5]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            errors.push(FieldError::new(
                format!("/settings/sns_topic_arns/{i}"),
                "not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)",
            ));
        }
    }
}

fn check_access_key_id(v: &str, errors: &mut Vec<FieldError>) {
    if !(16..=128).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        errors.push(FieldError::new(
            "/settings/access_key_id",
            "is not an AWS access key id (16 to 128 letters and digits)",
        ));
    }
}

fn check_base_url(v: &str, errors: &mut Vec<FieldError>) -> String {
    let t = v.trim().trim_end_matches('/');
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) && t.len() <= 2000 => {
            t.to_string()
        }
        _ => {
            errors.push(FieldError::new(
                "/settings/base_url",
                "must be an http(s) URL like https://api.resend.com",
            ));
            String::new()
        }
    }
}

fn check_smtp_host(v: &str, errors: &mut Vec<FieldError>) -> String {
    let h = v.trim().to_ascii_lowercase();
    if !is_hostname(&h) && h.parse::<std::net::IpAddr>().is_err() {
        errors.push(FieldError::new(
            "/settings/host",
            "must be a host name or an IP address",
        ));
    }
    h
}

fn check_port(v: u16, errors: &mut Vec<FieldError>) {
    if v == 0 {
        errors.push(FieldError::new("/settings/port", "must be 1 to 65535"));
    }
}

fn check_username(v: &str, errors: &mut Vec<FieldError>) {
    if let Err(reason) = crate::model::parse_text(v, 500) {
        errors.push(FieldError::new("/settings/username", reason));
    }
}

fn check_ca(v: &str, errors: &mut Vec<FieldError>) {
    if let Err(e) = mail::smtp::parse_certificate(v) {
        errors.push(FieldError::new("/settings/ca_certificate", e));
    }
}

fn dkim_settings(sealer: &Sealer, d: &DkimInput, errors: &mut Vec<FieldError>) -> DkimSettings {
    let selector = d.selector.trim().to_ascii_lowercase();
    if !is_hostname(&selector) || selector.len() > 63 {
        errors.push(FieldError::new(
            "/settings/dkim/selector",
            "must be a DNS label (letters, digits, -)",
        ));
    }
    let domain = d.domain.trim().to_ascii_lowercase();
    if !is_hostname(&domain) || !domain.contains('.') {
        errors.push(FieldError::new(
            "/settings/dkim/domain",
            "must be a domain name (like example.com)",
        ));
    }
    if let Err(e) = mail::smtp::parse_dkim_key(d.private_key.expose()) {
        errors.push(FieldError::new("/settings/dkim/private_key", e));
    }
    DkimSettings {
        selector,
        domain,
        private_key: SealedSecret::seal(sealer, &d.private_key, false),
    }
}

fn settings_from_input(
    p: &Providers,
    input: &SettingsInput,
    errors: &mut Vec<FieldError>,
) -> StoredSettings {
    let sealer = &p.sealer;
    match input {
        SettingsInput::Ses {
            region,
            configuration_set,
            access_key_id,
            secret_access_key,
            sns_topic_arns,
        } => {
            check_topic_arns(sns_topic_arns, errors);
            let region = region.trim().to_string();
            check_region(&region, errors);
            if let Some(c) = configuration_set {
                check_configuration_set(c, errors);
            }
            if let Some(id) = access_key_id {
                check_access_key_id(id, errors);
            }
            if let Some(s) = secret_access_key {
                check_token("/settings/secret_access_key", s, errors);
            }
            check_key_pair(access_key_id.is_some(), secret_access_key.is_some(), errors);
            StoredSettings::Ses(SesSettings {
                region,
                configuration_set: configuration_set.clone(),
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key
                    .as_ref()
                    .map(|s| SealedSecret::seal(sealer, s, false)),
                sns_topic_arns: sns_topic_arns.clone(),
            })
        }
        SettingsInput::Resend {
            api_key,
            webhook_secret,
            base_url,
        } => {
            check_token("/settings/api_key", api_key, errors);
            if let Some(w) = webhook_secret {
                check_token("/settings/webhook_secret", w, errors);
            }
            let base_url = base_url.as_deref().map(|u| check_base_url(u, errors));
            StoredSettings::Resend(ResendSettings {
                api_key: SealedSecret::seal(sealer, api_key, true),
                webhook_secret: webhook_secret
                    .as_ref()
                    .map(|w| SealedSecret::seal(sealer, w, false)),
                base_url,
            })
        }
        SettingsInput::Smtp {
            host,
            port,
            security,
            username,
            password,
            dkim,
            ca_certificate,
        } => {
            let host = check_smtp_host(host, errors);
            let port = port.unwrap_or(security.default_port());
            check_port(port, errors);
            if let Some(u) = username {
                check_username(u, errors);
            }
            if let Some(pw) = password {
                check_secret("/settings/password", pw, errors);
            }
            if username.is_some() != password.is_some() {
                errors.push(FieldError::new(
                    if username.is_some() {
                        "/settings/password"
                    } else {
                        "/settings/username"
                    },
                    "username and password go together",
                ));
            }
            if let Some(ca) = ca_certificate {
                check_ca(ca, errors);
            }
            StoredSettings::Smtp(SmtpSettings {
                host,
                port,
                security: *security,
                username: username.as_ref().map(|u| u.trim().to_string()),
                password: password
                    .as_ref()
                    .map(|pw| SealedSecret::seal(sealer, pw, false)),
                dkim: dkim.as_ref().map(|d| dkim_settings(sealer, d, errors)),
                ca_certificate: ca_certificate.clone(),
            })
        }
        SettingsInput::Outbox {} => {
            if p.outbox_root.is_none() {
                errors.push(FieldError::new("/settings/kind", OUTBOX_ONLY_LOCAL));
            }
            StoredSettings::Outbox
        }
    }
}

fn check_key_pair(has_id: bool, has_secret: bool, errors: &mut Vec<FieldError>) {
    if has_id != has_secret {
        errors.push(FieldError::new(
            if has_id {
                "/settings/secret_access_key"
            } else {
                "/settings/access_key_id"
            },
            "access_key_id and secret_access_key go together (leave both out to use the function's role)",
        ));
    }
}

/// Creates a connection.
pub async fn create(
    store: &dyn Store,
    p: &Providers,
    ws: &str,
    input: CreateProvider,
) -> AppResult<ProviderConnection> {
    let mut errors = vec![];
    let name = check_name("/name", &input.name, &mut errors);
    let settings = settings_from_input(p, &input.settings, &mut errors);
    let rate = input
        .rate_per_second
        .unwrap_or(settings.kind().default_rate());
    check_rate(rate, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let now = Utc::now();
    let conn = ProviderConnection {
        id: Id::generate(Id::PROVIDER),
        name,
        rate_per_second: rate,
        settings,
        created_at: now,
        updated_at: now,
    };
    store
        .put(
            to_item(&providers_pk(ws), &conn.id, &conn)?,
            Some(Cond::ItemNotExists),
        )
        .await?;
    Ok(conn)
}

/// Loads a connection of workspace `ws` (404 for another workspace's id).
pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<ProviderConnection> {
    if !Id::is_valid(Id::PROVIDER, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&Key::new(providers_pk(ws), id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

/// Loads a connection and its ready provider: what the sender calls per batch.
pub async fn provider_for(
    store: &dyn Store,
    p: &Providers,
    ws: &str,
    connection_id: &str,
) -> AppResult<(ProviderConnection, Arc<dyn Provider>)> {
    let conn = get(store, ws, connection_id).await?;
    let provider = p.build(ws, &conn).await?;
    Ok((conn, provider))
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<ProviderConnection>> {
    page_of(store, &providers_pk(ws), limit, cursor).await
}

/// Applies a patch. A `settings` patch must name the connection's own kind.
pub async fn patch(
    store: &dyn Store,
    p: &Providers,
    ws: &str,
    id: &str,
    patch: ProviderPatch,
) -> AppResult<ProviderConnection> {
    let mut conn = get(store, ws, id).await?;
    let before = conn.updated_at;
    let mut errors = vec![];
    if let Some(name) = &patch.name {
        conn.name = check_name("/name", name, &mut errors);
    }
    if let Some(rate) = patch.rate_per_second {
        check_rate(rate, &mut errors);
        conn.rate_per_second = rate;
    }
    if let Some(sp) = &patch.settings {
        apply_settings_patch(p, &mut conn.settings, sp, &mut errors);
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    // Strictly later than the version the cache may hold.
    conn.updated_at = Utc::now().max(before + chrono::Duration::microseconds(1));
    // Optimistic concurrency: the record is replaced only if nobody changed it meanwhile.
    let cond = Cond::eq("updated_at", serde_dynamo::to_attribute_value(before)?);
    match store
        .put(to_item(&providers_pk(ws), id, &conn)?, Some(cond))
        .await
    {
        Ok(()) => Ok(conn),
        Err(StoreError::ConditionFailed) => Err(AppError::conflict(
            "/",
            "the connection changed while this request ran; read it and try again",
        )),
        Err(e) => Err(e.into()),
    }
}

fn apply_settings_patch(
    p: &Providers,
    settings: &mut StoredSettings,
    patch: &SettingsPatch,
    errors: &mut Vec<FieldError>,
) {
    let sealer = &p.sealer;
    match (settings, patch) {
        (
            StoredSettings::Ses(s),
            SettingsPatch::Ses {
                region,
                configuration_set,
                access_key_id,
                secret_access_key,
                sns_topic_arns,
            },
        ) => {
            if let Some(t) = sns_topic_arns {
                check_topic_arns(t, errors);
                s.sns_topic_arns = t.clone();
            }
            if let Some(r) = region {
                s.region = r.trim().to_string();
                check_region(&s.region, errors);
            }
            if let Some(c) = configuration_set {
                if let Some(c) = c {
                    check_configuration_set(c, errors);
                }
                s.configuration_set = c.clone();
            }
            if let Some(id) = access_key_id {
                if let Some(id) = id {
                    check_access_key_id(id, errors);
                }
                s.access_key_id = id.clone();
            }
            if let Some(secret) = secret_access_key {
                if let Some(secret) = secret {
                    check_token("/settings/secret_access_key", secret, errors);
                }
                s.secret_access_key = secret
                    .as_ref()
                    .map(|x| SealedSecret::seal(sealer, x, false));
            }
            check_key_pair(
                s.access_key_id.is_some(),
                s.secret_access_key.is_some(),
                errors,
            );
        }
        (
            StoredSettings::Resend(s),
            SettingsPatch::Resend {
                api_key,
                webhook_secret,
                base_url,
            },
        ) => {
            if let Some(k) = api_key {
                check_token("/settings/api_key", k, errors);
                s.api_key = SealedSecret::seal(sealer, k, true);
            }
            if let Some(w) = webhook_secret {
                if let Some(w) = w {
                    check_token("/settings/webhook_secret", w, errors);
                }
                s.webhook_secret = w.as_ref().map(|x| SealedSecret::seal(sealer, x, false));
            }
            if let Some(u) = base_url {
                s.base_url = u.as_deref().map(|u| check_base_url(u, errors));
            }
        }
        (
            StoredSettings::Smtp(s),
            SettingsPatch::Smtp {
                host,
                port,
                security,
                username,
                password,
                dkim,
                ca_certificate,
            },
        ) => {
            if let Some(h) = host {
                s.host = check_smtp_host(h, errors);
            }
            if let Some(sec) = security {
                // A new security mode without a port moves to that mode's port.
                if port.is_none() && s.port == s.security.default_port() {
                    s.port = sec.default_port();
                }
                s.security = *sec;
            }
            if let Some(port) = port {
                check_port(*port, errors);
                s.port = *port;
            }
            if let Some(u) = username {
                if let Some(u) = u {
                    check_username(u, errors);
                }
                s.username = u.as_ref().map(|u| u.trim().to_string());
            }
            if let Some(pw) = password {
                if let Some(pw) = pw {
                    check_secret("/settings/password", pw, errors);
                }
                s.password = pw.as_ref().map(|x| SealedSecret::seal(sealer, x, false));
            }
            if s.username.is_some() != s.password.is_some() {
                errors.push(FieldError::new(
                    if s.username.is_some() {
                        "/settings/password"
                    } else {
                        "/settings/username"
                    },
                    "username and password go together",
                ));
            }
            if let Some(d) = dkim {
                s.dkim = d.as_ref().map(|d| dkim_settings(sealer, d, errors));
            }
            if let Some(ca) = ca_certificate {
                if let Some(ca) = ca {
                    check_ca(ca, errors);
                }
                s.ca_certificate = ca.clone();
            }
        }
        (StoredSettings::Outbox, SettingsPatch::Outbox {}) => {}
        (current, _) => errors.push(FieldError::new(
            "/settings/kind",
            format!(
                "must be this connection's kind ({}); create a new connection to change provider",
                serde_json::to_value(current.kind())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        )),
    }
}

/// Deletes a connection; refused (409) while a sender profile uses it.
pub async fn delete(store: &dyn Store, ws: &str, id: &str) -> AppResult<()> {
    get(store, ws, id).await?;
    let users = super::senders::using_connection(store, ws, id).await?;
    if let Some(first) = users.first() {
        return Err(AppError::conflict(
            "id",
            format!(
                "sender profile {first} (and {} more) sends through this connection; move or delete them first",
                users.len() - 1
            ),
        ));
    }
    match store
        .delete(&Key::new(providers_pk(ws), id), Some(Cond::ItemExists))
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::ConditionFailed) => Err(AppError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// How long `verify` waits for a provider.
pub const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// Checks the connection's credentials with the provider, without sending mail.
pub async fn verify(
    store: &dyn Store,
    p: &Providers,
    ws: &str,
    id: &str,
) -> AppResult<Verification> {
    let (_, provider) = provider_for(store, p, ws, id).await?;
    let checked_at = Utc::now();
    // Bounded, so a connection pointing at a host that never answers cannot hold the request.
    let outcome = tokio::time::timeout(VERIFY_TIMEOUT, provider.verify())
        .await
        .unwrap_or_else(|_| {
            Err(SendError::Transient {
                code: "timeout".into(),
                detail: format!(
                    "the provider did not answer within {} seconds",
                    VERIFY_TIMEOUT.as_secs()
                ),
                retry_after: None,
            })
        });
    Ok(match outcome {
        Ok(()) => Verification {
            ok: true,
            class: None,
            code: None,
            detail: None,
            checked_at,
        },
        Err(e) => {
            let (class, code, detail) = match &e {
                SendError::Transient { code, detail, .. } => ("transient", code, detail.clone()),
                SendError::Throttled { code, .. } => ("throttled", code, e.to_string()),
                SendError::Permanent { code, detail } => ("permanent", code, detail.clone()),
                SendError::Sender { code, detail } => ("sender", code, detail.clone()),
            };
            Verification {
                ok: false,
                class: Some(class.into()),
                code: Some(code.clone()),
                detail: Some(detail),
                checked_at,
            }
        }
    })
}

/// The id of the outbox connection the local runner gives every workspace.
pub const LOCAL_OUTBOX_ID: &str = "pc_00000000000000000000000000";

/// Creates the workspace's default outbox connection if it is missing (the local
/// runner, so a newcomer can send without configuring anything). Idempotent.
pub async fn ensure_local_outbox(store: &dyn Store, ws: &str) -> AppResult<ProviderConnection> {
    let now = Utc::now();
    let conn = ProviderConnection {
        id: LOCAL_OUTBOX_ID.into(),
        name: "Local outbox".into(),
        rate_per_second: ProviderKind::Outbox.default_rate(),
        settings: StoredSettings::Outbox,
        created_at: now,
        updated_at: now,
    };
    match store
        .put(
            to_item(&providers_pk(ws), &conn.id, &conn)?,
            Some(Cond::ItemNotExists),
        )
        .await
    {
        Ok(()) => Ok(conn),
        Err(StoreError::ConditionFailed) => get(store, ws, LOCAL_OUTBOX_ID).await,
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_views() {
        let sealer = Sealer::new("k");
        let key = Secret::new("re_live_abcdefghijklmnop1234");
        let sealed = SealedSecret::seal(&sealer, &key, true);
        assert!(!format!("{key:?}{sealed:?}").contains("abcdef"));
        assert_eq!(sealed.redacted(), "********1234");
        assert_eq!(sealed.open(&sealer).unwrap().expose(), key.expose());
        let short = SealedSecret::seal(&sealer, &Secret::new("pw"), true);
        assert_eq!(short.redacted(), REDACTED);
    }

    #[test]
    fn the_local_outbox_id_is_a_valid_id() {
        assert!(Id::is_valid(Id::PROVIDER, LOCAL_OUTBOX_ID));
    }
}
