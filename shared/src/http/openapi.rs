//! The OpenAPI 3.1 document, generated from the route annotations. Every operation
//! gets the bearer security requirement (unless it says `security(())`) and the
//! problem+json answers any route can give.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Mailpilot API", version = "1", description = "Email automation: contacts, lists, suppression, templates and (soon) sending."),
    paths(
        routes::health, serve,
        routes::create_workspace, routes::get_workspace, routes::patch_workspace, routes::delete_workspace_data,
        routes::list_jobs, routes::get_job,
        routes::create_api_key, routes::list_api_keys, routes::get_api_key, routes::revoke_api_key,
        routes::create_contact, routes::list_contacts, routes::get_contact, routes::patch_contact, routes::delete_contact,
        routes::get_contact_by_email, routes::upsert_contact_by_email, routes::get_contact_by_external_id,
        routes::create_list, routes::list_lists, routes::get_list, routes::patch_list, routes::delete_list,
        routes::list_members, routes::add_members, routes::remove_members,
        routes::add_suppression, routes::list_suppressions, routes::get_suppression, routes::remove_suppression,
        super::campaigns::create_campaign, super::campaigns::list_campaigns, super::campaigns::get_campaign,
        super::campaigns::patch_campaign, super::campaigns::delete_campaign, super::campaigns::launch_campaign,
        super::campaigns::unschedule_campaign, super::campaigns::pause_campaign, super::campaigns::resume_campaign,
        super::campaigns::cancel_campaign, super::campaigns::retry_failed_campaign,
        super::campaigns::list_campaign_messages, super::campaigns::preflight_campaign,
        super::analytics::overview, super::analytics::daily, super::analytics::campaign,
        super::analytics::campaign_links, super::analytics::resend_campaign,
        super::campaigns::test_campaign,
        super::messages::send, super::messages::get_message, super::messages::list_messages,
        routes::create_template, routes::list_templates, routes::get_template, routes::update_template, routes::delete_template,
        routes::list_template_versions, routes::get_template_version, routes::diff_template, routes::publish_template,
        routes::preview_template,
        routes::create_component, routes::list_components, routes::get_component, routes::patch_component,
        routes::delete_component, routes::preview_component,
        super::imports::create_import, super::imports::list_imports, super::imports::get_import,
        super::imports::upload_file, super::imports::preview_import, super::imports::commit_import,
        super::imports::import_errors, super::imports::revert_import,
    ),
    components(schemas(super::problem::Problem)),
    modifiers(&Conventions)
)]
pub struct ApiDoc;

pub(crate) struct Conventions;

/// Error answers every authenticated operation can give.
const KEYED_ERRORS: [(&str, &str); 7] = [
    (
        "400",
        "The request could not be read (bad JSON, parameter or header)",
    ),
    ("401", "No valid API key"),
    ("403", "The key's scope does not allow this call"),
    ("404", "No such resource in this workspace"),
    ("413", "The request or the resource is too large"),
    (
        "422",
        "A value is not acceptable, or an Idempotency-Key was reused with another request",
    ),
    ("429", "Rate limit exceeded; see Retry-After"),
];

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (or, for POST /v1/workspaces, the admin token)",
                    ))
                    .build(),
            ),
        );
        for item in doc.paths.paths.values_mut() {
            if let Some(op) = item.get.as_mut() {
                add_conventions(op, true);
            }
            for op in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_conventions(op, false);
            }
        }
    }
}

fn add_conventions(op: &mut Operation, is_read: bool) {
    let public = op
        .security
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.iter().all(is_empty_requirement));
    if public {
        op.security = Some(vec![]);
        return;
    }
    op.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    let mut errors: Vec<(&str, &str)> = KEYED_ERRORS.to_vec();
    if op.request_body.is_some() || !is_read {
        errors.push((
            "409",
            "Conflict: a unique field is taken, the resource is in use, or the same Idempotency-Key is in progress",
        ));
    }
    errors.push(("503", "The store is busy or unavailable; retry later"));
    for (code, description) in errors {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}

fn is_empty_requirement(r: &SecurityRequirement) -> bool {
    serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi()
            .merge_from(super::delivery::DeliveryDoc::openapi())
            .merge_from(super::webhooks::WebhooksDoc::openapi());
        // Once more over the merged parts (idempotent for ApiDoc's own operations): every
        // operation gets the same error responses, and public ones `security: []`.
        Conventions.modify(&mut doc);
        doc.to_json().unwrap_or_else(|_| "{}".into())
    })
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()), responses((status = 200, description = "This document")))]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    /// utoipa keys component schemas by their name alone, so two types of the same name
    /// (in different modules) silently overwrite each other in /openapi.json, and responses
    /// get validated against the wrong schema. Every `ToSchema` type must have its own
    /// name (rename with `#[schema(as = NewName)]`).
    #[test]
    fn schema_names_are_unique() {
        fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut clashes = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if !(line.trim_start().starts_with("#[derive(") && line.contains("ToSchema")) {
                    continue;
                }
                let mut renamed = None;
                for next in lines.iter().skip(i + 1).take(8) {
                    let t = next.trim_start();
                    if let Some(rest) = t.strip_prefix("#[schema(as = ") {
                        renamed = rest.split(')').next().map(|s| s.trim().to_string());
                    }
                    let decl = t
                        .strip_prefix("pub struct ")
                        .or_else(|| t.strip_prefix("pub enum "))
                        .or_else(|| t.strip_prefix("struct "))
                        .or_else(|| t.strip_prefix("enum "));
                    if let Some(decl) = decl {
                        let name: String = decl
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        let name = renamed.take().unwrap_or(name);
                        if name.is_empty() {
                            // `pub struct $name` inside a macro: named where it is used.
                            break;
                        }
                        let at = format!("{}:{}", file.display(), i + 1);
                        if let Some(first) = seen.insert(name.clone(), at.clone()) {
                            clashes.push(format!("{name}: {first} and {at}"));
                        }
                        break;
                    }
                }
            }
        }
        assert!(clashes.is_empty(), "schema names used twice: {clashes:#?}");
    }
}
