//! Import routes: create (JSON options, or multipart with the file inline), upload
//! (`PUT .../file`), preview, commit, progress, the error report, list, and undo.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{ListQuery, Pagination, PathParam, parse_json};
use crate::error::{AppError, AppResult};
use crate::usecases::Paged;
use crate::usecases::imports::{
    self, CreateImport, CreatedImport, Import, ImportEnv, Preview, PreviewInput,
};
use crate::usecases::workspaces::Principal;

/// Inline files (multipart) are capped at 4 MB: API Gateway base64-encodes bodies and
/// Lambda takes 6 MB.
pub const MAX_INLINE_BYTES: u64 = 4 * 1024 * 1024;

/// A page of imports.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportPage {
    pub data: Vec<Import>,
    pub next_cursor: Option<String>,
}

impl From<Paged<Import>> for ImportPage {
    fn from(p: Paged<Import>) -> Self {
        Self {
            data: p.data,
            next_cursor: p.next_cursor,
        }
    }
}

/// `multipart/form-data` form of `POST /v1/imports`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CreateImportForm {
    /// The options as JSON (the `CreateImport` object); optional.
    options: Option<String>,
    /// The CSV file, at most 4 MB.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The body of `PUT /v1/imports/{id}/file`: the file's bytes as they are (any bytes are
/// an upload; what the CSV holds is reported per line by the import).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct CsvFileBytes(Vec<u8>);

fn env(s: &AppState) -> AppResult<&Arc<ImportEnv>> {
    // A router built without imports (some tests) has no such routes to speak of.
    s.imports.as_ref().ok_or(AppError::NotFound)
}

fn ws(p: &Principal) -> &str {
    &p.workspace_id
}

fn with_location<T: Serialize>(status: StatusCode, location: &str, body: T) -> Response {
    let mut res = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Create an import. With a JSON body (the options), the answer says where to upload
/// the file; with `multipart/form-data` (`options` and `file`, at most 4 MB) the file
/// comes inline and, unless `auto_commit` is false, the import starts at once.
#[utoipa::path(post, path = "/v1/imports", tag = "imports",
    request_body(content(
        (CreateImport = "application/json"),
        (CreateImportForm = "multipart/form-data"),
    )),
    responses((status = 201, body = CreatedImport)))]
pub async fn create_import(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    req: Request,
) -> AppResult<Response> {
    let env = env(&s)?.clone();
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        return create_inline(&s, &env, &p, req).await;
    }
    let bytes = axum::body::Bytes::from_request(req, &s)
        .await
        .map_err(|_| AppError::PayloadTooLarge("the request body is larger than 4 MB".into()))?;
    if !(ct.is_empty() || ct.starts_with("application/json") || ct.contains("+json")) {
        return Err(AppError::bad_request(
            "Content-Type",
            "must be application/json or multipart/form-data",
        ));
    }
    let input: CreateImport = parse_json(&bytes)?;
    let created = imports::create(&env, ws(&p), input, "").await?;
    let location = format!("/v1/imports/{}", created.import.id);
    Ok(with_location(StatusCode::CREATED, &location, created))
}

async fn create_inline(
    s: &AppState,
    env: &Arc<ImportEnv>,
    p: &Principal,
    req: Request,
) -> AppResult<Response> {
    let mut form = axum::extract::Multipart::from_request(req, s)
        .await
        .map_err(|e| AppError::bad_request("", format!("the form could not be read: {e}")))?;
    let mut options: Option<CreateImport> = None;
    let mut created: Option<CreatedImport> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(AppError::bad_request(
                    "",
                    format!("the form could not be read: {e}"),
                ));
            }
        };
        match field.name().unwrap_or_default() {
            "options" => {
                if created.is_some() {
                    return Err(AppError::bad_request(
                        "/options",
                        "must come before the file",
                    ));
                }
                let text = field
                    .bytes()
                    .await
                    .map_err(|_| AppError::bad_request("/options", "could not be read"))?;
                options = Some(parse_json(&text)?);
            }
            "file" => {
                if created.is_some() {
                    return Err(AppError::bad_request("/file", "only one file per import"));
                }
                let mut input = options.take().unwrap_or_default();
                if input.file_name.is_none() {
                    input.file_name = field
                        .file_name()
                        .map(|f| f.chars().take(255).collect::<String>())
                        .filter(|f| crate::model::parse_text(f, 255).is_ok());
                }
                let mut field = field;
                let mut data = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if (data.len() + chunk.len()) as u64 > MAX_INLINE_BYTES {
                                return Err(AppError::PayloadTooLarge(
                                    "an inline file is at most 4 MB: upload larger files \
                                     to the upload URL"
                                        .into(),
                                ));
                            }
                            data.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            return Err(AppError::PayloadTooLarge(
                                "the request body is larger than 4 MB".into(),
                            ));
                        }
                    }
                }
                let c = imports::create(env, ws(p), input, "").await?;
                let body = futures::stream::once(async move {
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(data))
                })
                .boxed();
                let import =
                    imports::upload(env, ws(p), &c.import.id, body, MAX_INLINE_BYTES).await?;
                created = Some(CreatedImport {
                    import,
                    upload: None,
                });
            }
            other => {
                return Err(AppError::bad_request(
                    format!("/{other}"),
                    "unknown form field: send options and file",
                ));
            }
        }
    }
    let created = created.ok_or_else(|| AppError::invalid("/file", "is required"))?;
    let location = format!("/v1/imports/{}", created.import.id);
    Ok(with_location(StatusCode::CREATED, &location, created))
}

/// Upload an import's file (the local runner; in AWS, use the presigned form).
#[utoipa::path(put, path = "/v1/imports/{id}/file", tag = "imports", params(("id" = String, Path)),
    request_body(content = CsvFileBytes, content_type = "text/csv", description = "The CSV file's bytes"),
    responses((status = 200, body = Import)))]
pub async fn upload_file(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    body: Body,
) -> AppResult<Json<Import>> {
    let env = env(&s)?.clone();
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())))
        .boxed();
    let max = env.settings.max_file_bytes;
    Ok(Json(imports::upload(&env, ws(&p), &id, stream, max).await?))
}

/// Preview: the detected format, the column mapping, typed sample rows and the first
/// errors, writing no contact. Corrections in the body are saved to the import.
#[utoipa::path(post, path = "/v1/imports/{id}/preview", tag = "imports", params(("id" = String, Path)),
    request_body(content = PreviewInput, description = "Optional corrections"),
    responses((status = 200, body = Preview)))]
pub async fn preview_import(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    body: axum::body::Bytes,
) -> AppResult<Json<Preview>> {
    let env = env(&s)?.clone();
    let input: PreviewInput = if body.iter().all(u8::is_ascii_whitespace) {
        PreviewInput::default()
    } else {
        parse_json(&body)?
    };
    Ok(Json(imports::preview(&env, ws(&p), &id, input).await?))
}

/// Start an import created with `auto_commit: false` (or previewed).
#[utoipa::path(post, path = "/v1/imports/{id}/commit", tag = "imports", params(("id" = String, Path)),
    responses((status = 202, body = Import)))]
pub async fn commit_import(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Response> {
    let env = env(&s)?.clone();
    let import = imports::commit(&env, ws(&p), &id).await?;
    let location = format!("/v1/imports/{}", import.id);
    Ok(with_location(StatusCode::ACCEPTED, &location, import))
}

/// An import with its progress.
#[utoipa::path(get, path = "/v1/imports/{id}", tag = "imports", params(("id" = String, Path)),
    responses((status = 200, body = Import)))]
pub async fn get_import(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Import>> {
    Ok(Json(imports::get(s.store(), ws(&p), &id).await?))
}

/// The workspace's imports.
#[utoipa::path(get, path = "/v1/imports", tag = "imports", params(Pagination),
    responses((status = 200, body = ImportPage)))]
pub async fn list_imports(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<ImportPage>> {
    Ok(Json(
        imports::list(s.store(), ws(&p), q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// The error report as CSV: `line,column,value,reason`, in line order (skipped rows
/// too, with their reason).
#[utoipa::path(get, path = "/v1/imports/{id}/errors", tag = "imports", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/csv", body = String)))]
pub async fn import_errors(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Response> {
    let csv = imports::errors_csv(s.store(), ws(&p), &id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"import-errors.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

/// Undo an import: contacts it created are deleted, memberships it added removed;
/// contacts it updated keep their new values. Answers with the import to poll; it ends
/// `reverted` and stays readable.
#[utoipa::path(delete, path = "/v1/imports/{id}", tag = "imports", params(("id" = String, Path)),
    responses((status = 202, body = Import)))]
pub async fn revert_import(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Response> {
    let env = env(&s)?.clone();
    let import = imports::start_revert(&env, ws(&p), &id).await?;
    let location = format!("/v1/imports/{}", import.id);
    Ok(with_location(StatusCode::ACCEPTED, &location, import))
}
