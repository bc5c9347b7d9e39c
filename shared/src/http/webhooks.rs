//! Provider webhooks (public, no API key): `POST /webhooks/resend/{workspace_id}/{connection_id}`
//! (Svix-signed) and `POST /webhooks/ses/{workspace_id}/{connection_id}` (SNS-signed SES
//! events and receipts). The connection in the path holds the secret (Resend's `whsec_`)
//! or the allow-list (SNS topic ARNs); a request it cannot verify is a 401 and records
//! nothing. Verified payloads go to `usecases::provider_events` (and `usecases::replies`
//! for inbound mail). docs/webhooks.md.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::error::{AppError, AppResult};
use crate::ports::clock::Clock;
use crate::usecases::provider_events::{self, EventConfig, Origin, Recorded};
use crate::usecases::providers::{self, ProviderConnection, StoredSettings};
use crate::usecases::replies;
use crate::webhooks::events::{self, EventParseError, ProviderEvent};
use crate::webhooks::sns::{CertFetcher, SnsType, SnsVerifier};
use crate::webhooks::svix::{SvixHeaders, SvixSecret};

/// What the webhook routes need besides the store; set once at start
/// ([`AppState::set_webhooks`]). Without it the routes answer 404.
pub struct WebhookPorts {
    /// Fetches SNS signing certificates (and visits `SubscribeURL`s, also SNS hosts only).
    pub certs: Arc<dyn CertFetcher>,
    pub clock: Arc<dyn Clock>,
    pub events: EventConfig,
}

#[derive(OpenApi)]
#[openapi(paths(resend_webhook, ses_webhook), components(schemas(WebhookAck)))]
pub struct WebhooksDoc;

/// The answer to a verified webhook.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct WebhookAck {
    /// Events (or replies) applied to a message.
    pub applied: u32,
    /// Events seen before (redeliveries): nothing changed.
    pub duplicates: u32,
    /// Events about no message of this workspace, or of a type not handled: ignored.
    pub ignored: u32,
    /// An SNS subscription was confirmed.
    pub confirmed: bool,
}

impl WebhookAck {
    fn count(&mut self, r: Recorded) {
        match r {
            Recorded::Applied { .. } => self.applied += 1,
            Recorded::Duplicate => self.duplicates += 1,
            Recorded::Unmatched => self.ignored += 1,
        }
    }
}

const UNVERIFIED: &str = "the webhook's signature, timestamp or topic could not be verified";

fn ports(s: &AppState) -> AppResult<&WebhookPorts> {
    s.webhooks.get().ok_or(AppError::NotFound)
}

async fn connection(s: &AppState, ws: &str, id: &str) -> AppResult<ProviderConnection> {
    providers::get(s.store(), ws, id).await
}

async fn record_all(
    s: &AppState,
    p: &WebhookPorts,
    ws: &str,
    events: Vec<ProviderEvent>,
    ack: &mut WebhookAck,
) -> AppResult<()> {
    let now = p.clock.now();
    for ev in events {
        let r = provider_events::record(
            s.store(),
            now,
            &p.events,
            Origin::Connection { workspace_id: ws },
            &ev,
        )
        .await?;
        ack.count(r);
    }
    Ok(())
}

fn unparsable(e: EventParseError, ack: &mut WebhookAck) -> AppResult<()> {
    match e {
        // A verified event type we do not act on (opens, clicks, contacts…): acknowledged.
        EventParseError::Unhandled(kind) => {
            tracing::debug!(kind, "provider event type not handled");
            ack.ignored += 1;
            Ok(())
        }
        other => Err(AppError::invalid("/", other.to_string())),
    }
}

/// Resend webhooks for one connection (Svix signature with the connection's `whsec_` secret).
#[utoipa::path(post, path = "/webhooks/resend/{workspace_id}/{connection_id}", tag = "webhooks",
    security(()),
    params(("workspace_id" = String, Path), ("connection_id" = String, Path)),
    request_body(content = Object, description = "A Resend webhook (email.delivered, email.bounced, email.complained, email.delivery_delayed, email.received …)"),
    responses(
        (status = 200, body = WebhookAck),
        (status = 401, description = "Bad or missing signature, stale timestamp", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such connection", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A verified payload that is not a Resend event", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is busy; the provider retries", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn resend_webhook(
    State(s): State<AppState>,
    Path((ws, conn_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<WebhookAck>> {
    let p = ports(&s)?;
    let conn = connection(&s, &ws, &conn_id).await?;
    let StoredSettings::Resend(settings) = &conn.settings else {
        return Err(AppError::NotFound);
    };
    let Some(sealed) = &settings.webhook_secret else {
        return Err(AppError::Unauthorized(UNVERIFIED));
    };
    let secret = SvixSecret::parse(sealed.open(s.config.providers.sealer())?.expose())
        .map_err(|_| AppError::Unauthorized(UNVERIFIED))?;
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verified = SvixHeaders::from_lookup(lookup).and_then(|h| {
        secret
            .verify(&h, &body, p.clock.now().timestamp())
            .map(|()| h)
    });
    let h = match verified {
        Ok(h) => h,
        Err(e) => {
            tracing::info!(error = %e, ws, "rejected a Resend webhook");
            return Err(AppError::Unauthorized(UNVERIFIED));
        }
    };
    let mut ack = WebhookAck::default();
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::invalid("/", format!("not JSON: {e}")))?;
    if v.get("type").and_then(Value::as_str) == Some("email.received") {
        let r = replies::record_resend_inbound(s.store(), p.clock.now(), &ws, h.id, &v).await?;
        ack.count(r);
        return Ok(Json(ack));
    }
    match events::parse_resend(h.id, &body) {
        Ok(evs) => record_all(&s, p, &ws, evs, &mut ack).await?,
        Err(e) => unparsable(e, &mut ack)?,
    }
    Ok(Json(ack))
}

/// `Arc<dyn CertFetcher>` as a fetcher.
struct Shared(Arc<dyn CertFetcher>);

#[async_trait]
impl CertFetcher for Shared {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        self.0.fetch(url).await
    }
}

/// SES events and receipts through an SNS topic allowed on the connection.
#[utoipa::path(post, path = "/webhooks/ses/{workspace_id}/{connection_id}", tag = "webhooks",
    security(()),
    params(("workspace_id" = String, Path), ("connection_id" = String, Path)),
    request_body(content = Object, description = "An SNS HTTP(S) delivery (Notification, SubscriptionConfirmation, UnsubscribeConfirmation)"),
    responses(
        (status = 200, body = WebhookAck),
        (status = 401, description = "Bad signature, untrusted certificate, topic not allowed, stale message", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such connection", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A verified notification that is not an SES event", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is busy, or the subscription could not be confirmed; SNS retries", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn ses_webhook(
    State(s): State<AppState>,
    Path((ws, conn_id)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Json<WebhookAck>> {
    let p = ports(&s)?;
    let conn = connection(&s, &ws, &conn_id).await?;
    let StoredSettings::Ses(settings) = &conn.settings else {
        return Err(AppError::NotFound);
    };
    let verifier = SnsVerifier::new(settings.sns_topic_arns.clone(), Shared(p.certs.clone()));
    let message = match verifier.verify(&body, p.clock.now()).await {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(error = %e, ws, "rejected an SNS delivery");
            return Err(AppError::Unauthorized(UNVERIFIED));
        }
    };
    let mut ack = WebhookAck::default();
    match message.kind {
        SnsType::SubscriptionConfirmation => {
            // The URL was checked (https, an SNS host) by the verifier.
            let url = message.subscribe_url.as_deref().unwrap_or_default();
            p.certs.fetch(url).await.map_err(|e| {
                tracing::warn!(error = %e, "confirming the SNS subscription failed");
                AppError::Store(crate::ports::store::StoreError::Unavailable(
                    "the SNS subscription could not be confirmed".into(),
                ))
            })?;
            tracing::info!(topic = %message.topic_arn, ws, "confirmed an SNS subscription");
            ack.confirmed = true;
        }
        SnsType::UnsubscribeConfirmation => ack.ignored += 1,
        SnsType::Notification => {
            let mut v: Value = serde_json::from_str(&message.message)
                .map_err(|e| AppError::invalid("/Message", format!("not JSON: {e}")))?;
            // An event without its own times happened when SNS says it published it.
            if let Some(mail) = v.get_mut("mail").and_then(Value::as_object_mut) {
                mail.entry("timestamp")
                    .or_insert_with(|| Value::from(message.timestamp.clone()));
            }
            if v.get("notificationType").and_then(Value::as_str) == Some("Received") {
                let r = replies::record_ses_receipt(
                    s.store(),
                    p.clock.now(),
                    &ws,
                    &message.message_id,
                    &v,
                )
                .await?;
                ack.count(r);
            } else {
                match events::parse_ses(&message.message_id, &v) {
                    Ok(evs) => record_all(&s, p, &ws, evs, &mut ack).await?,
                    Err(e) => unparsable(e, &mut ack)?,
                }
            }
        }
    }
    Ok(Json(ack))
}
