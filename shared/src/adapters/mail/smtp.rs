//! SMTP through lettre's async transport (pooled connections; none / STARTTLS required /
//! TLS from the first byte; AUTH when credentials are set; DKIM signing when configured).
//!
//! Replies (RFC 5321 §4.2.1): 4xx → transient; 5xx → permanent, except the
//! authentication replies 530/534/535/538 (RFC 4954 §6), which are the sender's; TLS
//! failures (a certificate we do not trust) → sender; timeouts, refused or dropped
//! connections → transient.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey, dkim_sign,
};
use lettre::message::header::HeaderName;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};

use super::{permanent, sender, transient};
use crate::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};
use crate::usecases::providers::SmtpSecurity;

/// DKIM signing settings (RFC 6376), RSA-SHA256.
#[derive(Clone)]
pub struct Dkim {
    pub selector: String,
    pub domain: String,
    pub private_key_pem: String,
}

/// What an SMTP provider needs.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    pub dkim: Option<Dkim>,
    /// An extra CA certificate (PEM) to trust.
    pub ca_certificate: Option<String>,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field(
                "dkim",
                &self.dkim.as_ref().map(|d| (&d.selector, &d.domain)),
            )
            .finish()
    }
}

/// The headers a DKIM signature covers: the ones a forwarder must not change, including
/// both List-Unsubscribe headers (Gmail and Yahoo require one-click unsubscribe to be
/// signed) and our correlation header.
pub const DKIM_SIGNED_HEADERS: [&str; 10] = [
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "X-Mailpilot-Message-Id",
];

pub struct SmtpProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    dkim: Option<DkimConfig>,
    host: String,
}

impl fmt::Debug for SmtpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpProvider")
            .field("host", &self.host)
            .field("dkim", &self.dkim.is_some())
            .finish()
    }
}

/// Parses a PEM certificate (validation at save and building).
pub fn parse_certificate(pem: &str) -> Result<Certificate, String> {
    const REASON: &str = "is not a PEM certificate (-----BEGIN CERTIFICATE-----)";
    // lettre accepts text without any certificate in it; we do not.
    if !pem.contains("-----BEGIN CERTIFICATE-----") || !pem.contains("-----END CERTIFICATE-----") {
        return Err(REASON.into());
    }
    Certificate::from_pem(pem.as_bytes()).map_err(|_| REASON.to_string())
}

/// Parses a DKIM private key: RSA, PKCS#1 PEM.
pub fn parse_dkim_key(pem: &str) -> Result<DkimSigningKey, String> {
    DkimSigningKey::new(pem.trim(), DkimSigningAlgorithm::Rsa).map_err(|_| {
        "is not an RSA private key in PKCS#1 PEM (-----BEGIN RSA PRIVATE KEY-----)".to_string()
    })
}

impl SmtpProvider {
    /// Builds the transport (connections are opened on first use and pooled).
    pub fn new(config: SmtpConfig) -> Result<Self, String> {
        let tls_parameters = || {
            let mut b = TlsParameters::builder(config.host.clone());
            if let Some(ca) = &config.ca_certificate {
                b = b.add_root_certificate(parse_certificate(ca)?);
            }
            b.build_rustls()
                .map_err(|e| format!("TLS settings are not usable: {e}"))
        };
        let tls = match config.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::Starttls => Tls::Required(tls_parameters()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let dkim = match &config.dkim {
            Some(d) => Some(DkimConfig::new(
                d.selector.clone(),
                d.domain.clone(),
                parse_dkim_key(&d.private_key_pem)?,
                DKIM_SIGNED_HEADERS
                    .iter()
                    .map(|h| HeaderName::new_from_ascii_str(h))
                    .collect(),
                DkimCanonicalization {
                    header: DkimCanonicalizationType::Relaxed,
                    body: DkimCanonicalizationType::Relaxed,
                },
            )),
            None => None,
        };
        Ok(Self {
            transport: builder.build(),
            dkim,
            host: config.host,
        })
    }

    /// The bytes to send: the prebuilt message, or the message rebuilt and signed.
    fn bytes(&self, message: &OutgoingMessage) -> Result<Vec<u8>, SendError> {
        let Some(dkim) = &self.dkim else {
            return Ok(message.raw.clone());
        };
        let mut m = crate::mime::message(&message.parts)
            .map_err(|e| permanent("bad_message", e.to_string()))?;
        dkim_sign(&mut m, dkim);
        Ok(m.formatted())
    }
}

/// Classifies a lettre SMTP error.
pub fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let code = e.status().map(|c| c.to_string());
    let detail = e.to_string();
    if e.is_transient() {
        return transient(code.unwrap_or_else(|| "4xx".into()), detail);
    }
    if e.is_permanent() {
        let code = code.unwrap_or_else(|| "5xx".into());
        return if matches!(code.as_str(), "530" | "534" | "535" | "538") {
            sender(code, detail)
        } else {
            permanent(code, detail)
        };
    }
    // A certificate we do not trust is a configuration problem, not a passing one
    // (lettre reports rustls' verdict as a connection error).
    if e.is_tls() || detail.contains("certificate") {
        return sender("tls", detail);
    }
    if e.is_timeout() {
        return transient("timeout", detail);
    }
    if e.is_client() {
        return sender("client", detail);
    }
    transient("connection", detail)
}

#[async_trait]
impl Provider for SmtpProvider {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    /// No events (bounces come back as mail).
    fn needs_message_pointer(&self) -> bool {
        false
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        let parse = |field: &str, email: &str| {
            email
                .parse::<Address>()
                .map_err(|e| permanent("bad_address", format!("{field}: {e}")))
        };
        let envelope = Envelope::new(
            Some(parse("from", &message.parts.from.email)?),
            vec![parse("to", &message.parts.to.email)?],
        )
        .map_err(|e| permanent("bad_envelope", e.to_string()))?;
        let bytes = self.bytes(message)?;
        let response = self
            .transport
            .send_raw(&envelope, &bytes)
            .await
            .map_err(|e| classify(&e))?;
        // "250 2.0.0 Ok: queued as 4B3C…" names the server's queue id; else our Message-ID.
        let text = response.message().collect::<Vec<_>>().join(" ");
        let queued = text
            .split_once("queued as ")
            .map(|(_, id)| id.split_whitespace().next().unwrap_or("").to_string())
            .filter(|id| !id.is_empty());
        Ok(Accepted {
            provider_message_id: queued.unwrap_or_else(|| message.parts.rfc_message_id()),
        })
    }

    async fn verify(&self) -> Result<(), SendError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(transient("connection", "the server did not answer NOOP")),
            Err(e) => Err(classify(&e)),
        }
    }
}
