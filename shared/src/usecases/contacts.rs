//! Contacts: create (email unique per workspace through an email item written in the
//! same transaction), upsert by email, read by id / email / external id, patch, delete,
//! and list with filters. A contact's status is derived from its suppression item.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use utoipa::ToSchema;

use super::{Paged, from_item, suppressions, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::model::{Consent, ContactStatus, EmailAddress, Id, Locale, TimeZone};
use crate::ports::store::{
    Cond, Item, ItemExt, Key, Query, Store, StoreError, TxAction, Value, limits,
};

/// A contact as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactRecord {
    pub id: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    /// Free attributes, any JSON value, stored as a JSON string so numbers, nulls and
    /// nesting come back exactly as they went in.
    #[serde(default)]
    pub attributes: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic concurrency: every change is conditional on the version it read.
    pub version: i64,
    /// The import that last created or updated the contact, and the file line it came
    /// from (an import finds a duplicate of an earlier chunk's row by these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_line: Option<u64>,
}

/// A contact as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// IANA time zone name.
    pub time_zone: Option<String>,
    /// BCP 47 language tag.
    pub locale: Option<String>,
    /// The contact's id in the customer's own system (unique when set).
    pub external_id: Option<String>,
    pub consent: Option<Consent>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Json>,
    /// Derived from the suppression list: `active` unless the address is suppressed.
    pub status: ContactStatus,
    /// The import that last created or updated this contact, if any.
    pub import_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Generates the three contact bodies, which differ only in their `email` field:
/// create (required), patch (optional), upsert by email (none: the path's email).
macro_rules! contact_body {
    ($(#[$meta:meta])* $name:ident { $($email:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, Deserialize, ToSchema)]
        pub struct $name {
            $($email)*
            #[serde(default, deserialize_with = "crate::serde_util::double_option")]
            #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
            pub first_name: Option<Option<String>>,
            #[serde(default, deserialize_with = "crate::serde_util::double_option")]
            #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
            pub last_name: Option<Option<String>>,
            /// IANA time zone name.
            #[serde(default, deserialize_with = "crate::serde_util::double_option")]
            #[schema(value_type = Option<crate::schema::TimeZoneName>)]
            pub time_zone: Option<Option<String>>,
            /// BCP 47 language tag (`en`, `pt-BR`).
            #[serde(default, deserialize_with = "crate::serde_util::double_option")]
            #[schema(value_type = Option<String>, pattern = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")]
            pub locale: Option<Option<String>>,
            /// The contact's id in your own system; unique in the workspace.
            #[serde(default, deserialize_with = "crate::serde_util::double_option")]
            #[schema(value_type = Option<String>, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
            pub external_id: Option<Option<String>>,
            #[serde(default, deserialize_with = "crate::serde_util::double_option")]
            #[schema(value_type = Option<Consent>)]
            pub consent: Option<Option<Consent>>,
            /// Merged into the contact's attributes; a `null` value removes that attribute.
            #[serde(default)]
            #[schema(value_type = Option<crate::schema::Attributes>)]
            pub attributes: Option<Map<String, Json>>,
        }
    };
}

contact_body! {
    /// `POST /v1/contacts` body.
    ContactCreate {
        #[schema(format = Email)]
        pub email: String,
    }
}

contact_body! {
    /// `PATCH /v1/contacts/{id}` body: only the fields present change; `null` clears one.
    ContactInput {
        #[serde(default)]
        #[schema(format = Email)]
        pub email: Option<String>,
    }
}

contact_body! {
    /// `PUT /v1/contacts/by-email/{email}` body: the email is the path's.
    ContactUpsert {}
}

impl From<ContactCreate> for ContactInput {
    fn from(c: ContactCreate) -> Self {
        ContactInput {
            email: Some(c.email),
            first_name: c.first_name,
            last_name: c.last_name,
            time_zone: c.time_zone,
            locale: c.locale,
            external_id: c.external_id,
            consent: c.consent,
            attributes: c.attributes,
        }
    }
}

impl From<ContactUpsert> for ContactInput {
    fn from(c: ContactUpsert) -> Self {
        ContactInput {
            email: None,
            first_name: c.first_name,
            last_name: c.last_name,
            time_zone: c.time_zone,
            locale: c.locale,
            external_id: c.external_id,
            consent: c.consent,
            attributes: c.attributes,
        }
    }
}

/// Filters for listing contacts.
#[derive(Debug, Default, Clone)]
pub struct ContactFilter {
    pub list_id: Option<String>,
    pub status: Option<ContactStatus>,
}

pub(crate) const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;
const MAX_ATTRIBUTE_DEPTH: usize = 16;

pub(crate) fn contacts_pk(ws: &str) -> String {
    keys::ws(ws, keys::CONTACTS)
}
pub(crate) fn email_key(ws: &str, email: &str) -> Key {
    Key::new(keys::ws(ws, keys::EMAILS), email)
}
pub(crate) fn external_id_key(ws: &str, ext: &str) -> Key {
    Key::new(keys::ws(ws, keys::EXTERNAL_IDS), ext)
}

fn depth(v: &Json) -> usize {
    match v {
        Json::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Json::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Applies an input to a record (new or existing), collecting every field error.
fn apply(rec: &mut ContactRecord, input: &ContactInput, errors: &mut Vec<FieldError>) {
    if let Some(email) = &input.email {
        match EmailAddress::parse(email) {
            Ok(e) => rec.email = e.as_str().to_string(),
            Err(reason) => errors.push(FieldError::new("/email", format!("{email:?} {reason}"))),
        }
    }
    let mut set = |field: &str,
                   slot: &mut Option<String>,
                   v: &Option<Option<String>>,
                   parse: &dyn Fn(&str) -> Result<String, String>| {
        match v {
            Some(Some(s)) => match parse(s) {
                Ok(p) => *slot = Some(p),
                Err(r) => errors.push(FieldError::new(format!("/{field}"), r)),
            },
            Some(None) => *slot = None,
            None => {}
        }
    };
    let name = |s: &str| crate::model::parse_text(s, 200);
    set("first_name", &mut rec.first_name, &input.first_name, &name);
    set("last_name", &mut rec.last_name, &input.last_name, &name);
    set("time_zone", &mut rec.time_zone, &input.time_zone, &|s| {
        TimeZone::parse(s)
            .map(|t| t.as_str().to_string())
            .map_err(String::from)
    });
    set("locale", &mut rec.locale, &input.locale, &|s| {
        Locale::parse(s)
            .map(|l| l.as_str().to_string())
            .map_err(String::from)
    });
    set(
        "external_id",
        &mut rec.external_id,
        &input.external_id,
        &|s| {
            let t = s.trim();
            if t.is_empty() || t.len() > 256 || t.chars().any(|c| c.is_control()) {
                Err("must be 1 to 256 bytes of printable characters".into())
            } else {
                Ok(t.to_string())
            }
        },
    );
    match &input.consent {
        Some(Some(c)) => match crate::model::parse_text(&c.source, 200) {
            Ok(source) => {
                rec.consent = Some(Consent {
                    source,
                    ..c.clone()
                })
            }
            Err(reason) => errors.push(FieldError::new("/consent/source", reason)),
        },
        Some(None) => rec.consent = None,
        None => {}
    }
    if let Some(attrs) = &input.attributes {
        let mut current: Map<String, Json> =
            serde_json::from_str(&rec.attributes).unwrap_or_default();
        for (k, v) in attrs {
            if k.is_empty() || k.chars().count() > 128 {
                errors.push(FieldError::new(
                    format!("/attributes/{}", pointer_escape(k)),
                    "names must be 1 to 128 characters",
                ));
            } else if depth(v) > MAX_ATTRIBUTE_DEPTH {
                errors.push(FieldError::new(
                    format!("/attributes/{}", pointer_escape(k)),
                    "nests deeper than 16 levels",
                ));
            } else if v.is_null() {
                current.remove(k);
            } else {
                current.insert(k.clone(), v.clone());
            }
        }
        let encoded = Json::Object(current).to_string();
        if encoded.len() > MAX_ATTRIBUTES_BYTES {
            errors.push(FieldError::new(
                "/attributes",
                "are larger than 64 KB in all",
            ));
        } else {
            rec.attributes = encoded;
        }
    }
}

fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn view(rec: ContactRecord, status: ContactStatus) -> Contact {
    Contact {
        attributes: serde_json::from_str(&rec.attributes).unwrap_or_default(),
        id: rec.id,
        email: rec.email,
        first_name: rec.first_name,
        last_name: rec.last_name,
        time_zone: rec.time_zone,
        locale: rec.locale,
        external_id: rec.external_id,
        consent: rec.consent,
        import_id: rec.import_id,
        status,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    }
}

async fn with_status(store: &dyn Store, ws: &str, rec: ContactRecord) -> AppResult<Contact> {
    let status = status_of(store, ws, &rec.email).await?;
    Ok(view(rec, status))
}

async fn status_of(store: &dyn Store, ws: &str, email: &str) -> AppResult<ContactStatus> {
    let reason = suppressions::reason_for(store, ws, email).await?;
    Ok(ContactStatus::from_suppression(reason))
}

/// Creates a contact; a duplicate email or external id is a 409 naming the field.
pub async fn create(store: &dyn Store, ws: &str, input: ContactInput) -> AppResult<Contact> {
    let now = Utc::now();
    let mut rec = ContactRecord {
        id: Id::generate(Id::CONTACT),
        email: String::new(),
        first_name: None,
        last_name: None,
        time_zone: None,
        locale: None,
        external_id: None,
        consent: None,
        attributes: "{}".into(),
        created_at: now,
        updated_at: now,
        version: 1,
        import_id: None,
        import_line: None,
    };
    let mut errors = vec![];
    if input.email.is_none() {
        errors.push(FieldError::new("/email", "is required"));
    }
    apply(&mut rec, &input, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let mut actions = vec![
        TxAction::Put {
            item: to_item(&contacts_pk(ws), &rec.id, &rec)?,
            cond: Some(Cond::ItemNotExists),
        },
        TxAction::Put {
            item: pointer_item(&email_key(ws, &rec.email), &rec.id),
            cond: Some(Cond::ItemNotExists),
        },
    ];
    if let Some(ext) = &rec.external_id {
        actions.push(TxAction::Put {
            item: pointer_item(&external_id_key(ws, ext), &rec.id),
            cond: Some(Cond::ItemNotExists),
        });
    }
    // Every read happens before the write: once the transaction commits, the answer
    // cannot fail any more (a failure would tell the client "not created" wrongly).
    let status = status_of(store, ws, &rec.email).await?;
    match store.transact(actions).await {
        Ok(()) => Ok(view(rec, status)),
        Err(StoreError::TransactionCanceled { failed }) if failed.get(1) == Some(&true) => Err(
            AppError::conflict("/email", "a contact with this email already exists"),
        ),
        Err(StoreError::TransactionCanceled { failed }) if failed.get(2) == Some(&true) => {
            Err(AppError::conflict(
                "/external_id",
                "a contact with this external_id already exists",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn pointer_item(key: &Key, contact_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), Value::S(key.pk.clone())),
        ("sk".to_string(), Value::S(key.sk.clone())),
        ("contact_id".to_string(), Value::S(contact_id.to_string())),
    ])
}

async fn record(store: &dyn Store, ws: &str, id: &str) -> AppResult<Option<ContactRecord>> {
    if !Id::is_valid(Id::CONTACT, id) {
        return Ok(None);
    }
    match store.get(&Key::new(contacts_pk(ws), id)).await? {
        Some(item) => Ok(Some(from_item(item)?)),
        None => Ok(None),
    }
}

async fn id_by_pointer(store: &dyn Store, key: &Key) -> AppResult<Option<String>> {
    Ok(store
        .get(key)
        .await?
        .and_then(|i| i.str_attr("contact_id").map(str::to_string)))
}

pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<Contact> {
    let rec = record(store, ws, id).await?.ok_or(AppError::NotFound)?;
    with_status(store, ws, rec).await
}

/// The contact id for an email, if a contact has it.
pub async fn id_by_email(
    store: &dyn Store,
    ws: &str,
    email: &EmailAddress,
) -> AppResult<Option<String>> {
    id_by_pointer(store, &email_key(ws, email.as_str())).await
}

pub async fn get_by_email(store: &dyn Store, ws: &str, email: &str) -> AppResult<Contact> {
    let email = EmailAddress::parse(email).map_err(|_| AppError::NotFound)?;
    let id = id_by_email(store, ws, &email)
        .await?
        .ok_or(AppError::NotFound)?;
    get(store, ws, &id).await
}

pub async fn get_by_external_id(store: &dyn Store, ws: &str, ext: &str) -> AppResult<Contact> {
    let id = id_by_pointer(store, &external_id_key(ws, ext.trim()))
        .await?
        .ok_or(AppError::NotFound)?;
    get(store, ws, &id).await
}

/// Patches a contact. Changing the email or external id moves their unique items in
/// the same transaction, conditional on the version read.
pub async fn patch(
    store: &dyn Store,
    ws: &str,
    id: &str,
    input: ContactInput,
) -> AppResult<Contact> {
    for _ in 0..5 {
        let old = record(store, ws, id).await?.ok_or(AppError::NotFound)?;
        let mut rec = old.clone();
        let mut errors = vec![];
        apply(&mut rec, &input, &mut errors);
        if !errors.is_empty() {
            return Err(AppError::Invalid(errors));
        }
        rec.version = old.version + 1;
        rec.updated_at = Utc::now();
        let mut actions = vec![TxAction::Put {
            item: to_item(&contacts_pk(ws), &rec.id, &rec)?,
            cond: Some(Cond::eq("version", Value::N(old.version.to_string()))),
        }];
        let email_moved = rec.email != old.email;
        if email_moved {
            actions.push(TxAction::Put {
                item: pointer_item(&email_key(ws, &rec.email), &rec.id),
                cond: Some(Cond::ItemNotExists),
            });
            actions.push(TxAction::Delete {
                key: email_key(ws, &old.email),
                cond: None,
            });
        }
        let ext_at = actions.len();
        if rec.external_id != old.external_id {
            if let Some(ext) = &rec.external_id {
                actions.push(TxAction::Put {
                    item: pointer_item(&external_id_key(ws, ext), &rec.id),
                    cond: Some(Cond::ItemNotExists),
                });
            }
            if let Some(ext) = &old.external_id {
                actions.push(TxAction::Delete {
                    key: external_id_key(ws, ext),
                    cond: None,
                });
            }
        }
        let status = status_of(store, ws, &rec.email).await?;
        match store.transact(actions).await {
            Ok(()) => return Ok(view(rec, status)),
            Err(StoreError::TransactionCanceled { failed }) => {
                if email_moved && failed.get(1) == Some(&true) {
                    return Err(AppError::conflict(
                        "/email",
                        "a contact with this email already exists",
                    ));
                }
                if failed.get(ext_at) == Some(&true) {
                    return Err(AppError::conflict(
                        "/external_id",
                        "a contact with this external_id already exists",
                    ));
                }
                // Someone else changed the contact (version moved): read again.
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

/// Creates or updates the contact with this email. Returns the contact and whether it
/// was created.
pub async fn upsert_by_email(
    store: &dyn Store,
    ws: &str,
    email: &str,
    upsert: ContactUpsert,
) -> AppResult<(Contact, bool)> {
    let parsed = EmailAddress::parse(email)
        .map_err(|reason| AppError::invalid("email", format!("{email:?} {reason}")))?;
    let changes = ContactInput::from(upsert);
    for _ in 0..5 {
        if let Some(id) = id_by_email(store, ws, &parsed).await? {
            match patch(store, ws, &id, changes.clone()).await {
                // Deleted between the lookup and the patch: create it instead.
                Err(AppError::NotFound) => {}
                other => return other.map(|c| (c, false)),
            }
        }
        let create_input = ContactInput {
            email: Some(parsed.as_str().to_string()),
            ..changes.clone()
        };
        match create(store, ws, create_input).await {
            // Created by someone else between the lookup and the create: update it.
            Err(AppError::Conflict { errors, .. })
                if errors.iter().any(|e| e.field == "/email") =>
            {
                continue;
            }
            other => return other.map(|c| (c, true)),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

/// Deletes a contact, its unique items and its list memberships. Its suppression
/// item stays: a suppressed address stays suppressed if it comes back.
pub async fn delete(store: &dyn Store, ws: &str, id: &str) -> AppResult<()> {
    let rec = record(store, ws, id).await?.ok_or(AppError::NotFound)?;
    super::lists::remove_contact_from_all_lists(store, ws, id).await?;
    let mut actions = vec![
        TxAction::Delete {
            key: Key::new(contacts_pk(ws), id),
            cond: Some(Cond::ItemExists),
        },
        TxAction::Delete {
            key: email_key(ws, &rec.email),
            cond: Some(Cond::eq("contact_id", Value::S(id.into()))),
        },
    ];
    if let Some(ext) = &rec.external_id {
        actions.push(TxAction::Delete {
            key: external_id_key(ws, ext),
            cond: Some(Cond::eq("contact_id", Value::S(id.into()))),
        });
    }
    match store.transact(actions).await {
        Ok(()) => Ok(()),
        Err(StoreError::TransactionCanceled { failed }) if failed.first() == Some(&true) => {
            Err(AppError::NotFound)
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads contacts by id (any number), in no particular order; missing ones are left out.
pub async fn records_by_ids(
    store: &dyn Store,
    ws: &str,
    ids: &[String],
) -> AppResult<Vec<ContactRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut unique: Vec<String> = ids.to_vec();
    unique.sort();
    unique.dedup();
    for chunk in unique.chunks(limits::MAX_BATCH_GET) {
        let keys: Vec<Key> = chunk
            .iter()
            .map(|id| Key::new(contacts_pk(ws), id))
            .collect();
        for item in store.batch_get(&keys).await? {
            out.push(from_item(item)?);
        }
    }
    Ok(out)
}

/// Lists contacts: all of them, or a list's members; optionally only those with a
/// status. A status filter reads on (a bounded number of pages) until the page is full.
pub async fn list(
    store: &dyn Store,
    ws: &str,
    filter: &ContactFilter,
    limit: usize,
    mut cursor: Option<String>,
) -> AppResult<Paged<Contact>> {
    if let Some(list_id) = &filter.list_id {
        super::lists::get(store, ws, list_id).await?;
    }
    let mut data = Vec::new();
    for _ in 0..20 {
        let want = limit - data.len();
        let (records, next) = match &filter.list_id {
            Some(list_id) => {
                let page = store
                    .query(
                        Query::partition(keys::list_members(ws, list_id))
                            .limit(want)
                            .cursor(cursor.take()),
                    )
                    .await?;
                let ids: Vec<String> = page
                    .items
                    .iter()
                    .filter_map(|i| i.str_attr("sk").map(str::to_string))
                    .collect();
                let mut recs = records_by_ids(store, ws, &ids).await?;
                let order: HashMap<&String, usize> =
                    ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
                recs.sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
                (recs, page.cursor)
            }
            None => {
                let page = store
                    .query(
                        Query::partition(contacts_pk(ws))
                            .limit(want)
                            .cursor(cursor.take()),
                    )
                    .await?;
                let recs = page
                    .items
                    .into_iter()
                    .map(from_item)
                    .collect::<AppResult<Vec<ContactRecord>>>()?;
                (recs, page.cursor)
            }
        };
        let emails: Vec<String> = records.iter().map(|r| r.email.clone()).collect();
        let reasons = suppressions::reasons_for(store, ws, &emails).await?;
        for rec in records {
            let status = ContactStatus::from_suppression(reasons.get(&rec.email).copied());
            if filter.status.is_none_or(|s| s == status) {
                data.push(view(rec, status));
            }
        }
        cursor = next;
        if data.len() >= limit || cursor.is_none() {
            break;
        }
    }
    Ok(Paged {
        data,
        next_cursor: cursor,
    })
}

/// Updates nothing but proves the contact exists (for membership writes).
pub fn exists_check(ws: &str, id: &str) -> TxAction {
    TxAction::Check {
        key: Key::new(contacts_pk(ws), id),
        cond: Cond::ItemExists,
    }
}
