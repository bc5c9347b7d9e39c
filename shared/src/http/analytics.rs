//! `/v1/analytics/...`: reports from the counters (usecases/analytics.rs), never from
//! messages. Periods are UTC days, `from` and `to` inclusive (default: the last 30 days),
//! at most 366 days.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, State};
use chrono::{Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiJson, ListQuery, PathParam};
use crate::error::{AppError, AppResult};
use crate::usecases::analytics::{self, Counts, LinkCounts, Rates};
use crate::usecases::campaigns;
use crate::usecases::followup::{self, ResendRequest};
use crate::usecases::workspaces::Principal;

/// Longest period of one report, in days.
pub const MAX_DAYS: i64 = 366;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Period {
    /// First day (UTC, `YYYY-MM-DD`); default 29 days before `to`.
    #[param(format = Date)]
    from: Option<String>,
    /// Last day (UTC, `YYYY-MM-DD`), inclusive; default today.
    #[param(format = Date)]
    to: Option<String>,
}

fn period(params: &HashMap<String, String>) -> AppResult<(NaiveDate, NaiveDate)> {
    let day = |name: &str| -> AppResult<Option<NaiveDate>> {
        match params.get(name) {
            None => Ok(None),
            Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| AppError::bad_request(name, "must be a date, YYYY-MM-DD")),
        }
    };
    let to = day("to")?.unwrap_or_else(|| Utc::now().date_naive());
    let from = day("from")?.unwrap_or(to - Duration::days(29));
    if from > to {
        return Err(AppError::invalid("from", "must not be after `to`"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(AppError::invalid(
            "from",
            format!("the period is longer than {MAX_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// Totals and rates of a period.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    #[schema(format = Date)]
    pub from: String,
    #[schema(format = Date)]
    pub to: String,
    pub counts: Counts,
    pub rates: Rates,
}

/// The workspace's figures over a period: sent, delivered, bounced, complained,
/// unsubscribed, replied, unique human opens and clicks, machine opens, bot clicks, rates.
#[utoipa::path(get, path = "/v1/analytics/overview", tag = "analytics", params(Period),
    responses((status = 200, body = Overview)))]
pub async fn overview(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<Overview>> {
    let (from, to) = period(&q.params)?;
    let counts = analytics::overview(s.store(), &p.workspace_id, from, to).await?;
    Ok(Json(Overview {
        from: from.to_string(),
        to: to.to_string(),
        rates: counts.rates(),
        counts,
    }))
}

/// One day of the series.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Day {
    #[schema(format = Date)]
    pub date: String,
    pub counts: Counts,
}

/// Every day of a period (days without activity have zero counts).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DailySeries {
    #[schema(format = Date)]
    pub from: String,
    #[schema(format = Date)]
    pub to: String,
    pub data: Vec<Day>,
}

/// The workspace's counts per UTC day.
#[utoipa::path(get, path = "/v1/analytics/daily", tag = "analytics", params(Period),
    responses((status = 200, body = DailySeries)))]
pub async fn daily(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<DailySeries>> {
    let (from, to) = period(&q.params)?;
    let mut days: HashMap<NaiveDate, Counts> =
        analytics::daily(s.store(), &p.workspace_id, from, to)
            .await?
            .into_iter()
            .collect();
    let data = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|d| Day {
            date: d.to_string(),
            counts: days.remove(&d).unwrap_or_default(),
        })
        .collect();
    Ok(Json(DailySeries {
        from: from.to_string(),
        to: to.to_string(),
        data,
    }))
}

/// One run of a campaign.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunAnalytics {
    pub run_id: String,
    pub counts: Counts,
    pub rates: Rates,
}

/// A campaign's figures (all runs) and each run's.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignAnalytics {
    pub campaign_id: String,
    pub counts: Counts,
    pub rates: Rates,
    pub runs: Vec<RunAnalytics>,
}

/// A campaign's figures.
#[utoipa::path(get, path = "/v1/analytics/campaigns/{id}", tag = "analytics",
    params(("id" = String, Path)), responses((status = 200, body = CampaignAnalytics)))]
pub async fn campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<CampaignAnalytics>> {
    campaigns::load(s.store(), &p.workspace_id, &id).await?;
    let (counts, runs) = analytics::campaign(s.store(), &p.workspace_id, &id).await?;
    Ok(Json(CampaignAnalytics {
        campaign_id: id,
        rates: counts.rates(),
        counts,
        runs: runs
            .into_iter()
            .map(|(run_id, c)| RunAnalytics {
                run_id,
                rates: c.rates(),
                counts: c,
            })
            .collect(),
    }))
}

/// A campaign's links.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkAnalytics {
    pub campaign_id: String,
    pub data: Vec<LinkCounts>,
}

/// Clicks per link of a campaign (human unique / total, bot).
#[utoipa::path(get, path = "/v1/analytics/campaigns/{id}/links", tag = "analytics",
    params(("id" = String, Path)), responses((status = 200, body = LinkAnalytics)))]
pub async fn campaign_links(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<LinkAnalytics>> {
    campaigns::load(s.store(), &p.workspace_id, &id).await?;
    let data = analytics::links(s.store(), &p.workspace_id, &id).await?;
    Ok(Json(LinkAnalytics {
        campaign_id: id,
        data,
    }))
}

/// Resend to non-openers: a follow-up draft campaign, with a new subject, for the
/// recipients of the campaign's latest run with no human open (launch it to send).
#[utoipa::path(post, path = "/v1/campaigns/{id}/resend", tag = "campaigns",
    params(("id" = String, Path)), request_body = ResendRequest,
    responses((status = 201, body = crate::usecases::campaigns::Campaign),
        (status = 409, description = "The campaign has not been sent, or nobody is left to resend to")))]
pub async fn resend_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(input): ApiJson<ResendRequest>,
) -> AppResult<axum::response::Response> {
    let c = followup::resend(s.store(), &p.workspace_id, &id, input).await?;
    Ok(super::routes::created(format!("/v1/campaigns/{}", c.id), c))
}
