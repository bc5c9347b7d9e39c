//! The single-table key design. Every workspace item's partition key starts with
//! `ws#<workspace id>#`; the few global lookups are pointer items that hold only ids.
//! The table in docs/storage.md lists every access pattern these keys serve.

/// Partition-key families of one workspace. `ALL_STATIC` is the registry the
/// delete-workspace job walks; per-entity partitions are found from their parents
/// (`list#<id>` from `lists`, `contact#<id>#lists` from `contacts`, `import#<id>#…`
/// from `imports`).
pub fn ws(ws: &str, family: &str) -> String {
    format!("ws#{ws}#{family}")
}

/// The workspace record (never hot: read at most once per request).
pub fn workspace(ws_id: &str) -> (String, String) {
    (ws(ws_id, "meta"), "workspace".into())
}

/// Global pointer: API key hash → workspace, key id, scope.
pub fn api_key_pointer(hash_hex: &str) -> (String, String) {
    (format!("apikey#{hash_hex}"), "apikey".into())
}

pub const API_KEYS: &str = "apikeys";
pub const CONTACTS: &str = "contacts";
pub const EMAILS: &str = "emails";
pub const EXTERNAL_IDS: &str = "extids";
pub const SUPPRESSIONS: &str = "suppressions";
pub const LISTS: &str = "lists";
pub const JOBS: &str = "jobs";
pub const IDEMPOTENCY: &str = "idem";
/// Messages (sort key = message id) and their counters (daily caps, rates).
pub const MESSAGES: &str = "msgs";
pub const COUNTERS: &str = "counters";
/// Campaigns (sort key = campaign id) and their runs (sort key = `<campaign>#<run>`).
pub const CAMPAIGNS: &str = "campaigns";
pub const CAMPAIGN_RUNS: &str = "cruns";
/// Provider events already applied (sort key = `<provider>#<event id>`): the redelivery guard.
pub const PROVIDER_EVENTS: &str = "pevents";

/// Global pointer: a provider's message id → workspace and message (for events).
pub fn provider_message(provider: &str, provider_message_id: &str) -> (String, String) {
    (
        format!("provmsg#{provider}#{provider_message_id}"),
        "msg".into(),
    )
}
/// Provider connections: sort key = connection id.
pub const PROVIDERS: &str = "providers";
/// Sender profiles: sort key = sender id.
pub const SENDERS: &str = "senders";
pub const TEMPLATES: &str = "templates";
pub const COMPONENTS: &str = "components";
/// Component name → id (names are unique in a workspace: `{{> name}}` finds them).
pub const COMPONENT_NAMES: &str = "component-names";
pub const IMPORTS: &str = "imports";
/// Analytics counters (days, campaign runs, links): see usecases/analytics.rs.
pub const ANALYTICS: &str = "analytics";
/// Tracking events (idempotency per event id, TTL = retention): sort key = event id.
pub const EVENTS: &str = "events";

/// An import's error report: sort key = `<line, 12 digits>#<n>`.
pub fn import_errors(ws_id: &str, import_id: &str) -> String {
    ws(ws_id, &format!("import#{import_id}#errors"))
}

/// An import's ledger (what each committed transaction wrote, for undo): sort key =
/// the first line of the transaction, 12 digits.
pub fn import_ledger(ws_id: &str, import_id: &str) -> String {
    ws(ws_id, &format!("import#{import_id}#ledger"))
}

/// Global pointers to imports that are running or reverting (ids only), so a restarted
/// runner finds them without a scan: sort key = `<ws>#<import id>`.
pub const IMPORTS_RUNNING: &str = "imports#running";

/// Members of one list: sort key = contact id.
pub fn list_members(ws_id: &str, list_id: &str) -> String {
    ws(ws_id, &format!("list#{list_id}"))
}

/// The lists one contact belongs to: sort key = list id.
pub fn contact_lists(ws_id: &str, contact_id: &str) -> String {
    ws(ws_id, &format!("contact#{contact_id}#lists"))
}

/// The versions of one template: sort key = the version number, zero-padded to 6 digits.
pub fn template_versions(ws_id: &str, template_id: &str) -> String {
    ws(ws_id, &format!("template#{template_id}#versions"))
}

/// Workspace partitions whose items the delete-workspace job removes, in order
/// (children before the parents they are found from).
pub const DELETABLE_FAMILIES: [&str; 20] = [
    LISTS,
    CONTACTS,
    EMAILS,
    EXTERNAL_IDS,
    SUPPRESSIONS,
    MESSAGES,
    PROVIDER_EVENTS,
    COUNTERS,
    TEMPLATES,
    COMPONENTS,
    COMPONENT_NAMES,
    IMPORTS,
    CAMPAIGN_RUNS,
    CAMPAIGNS,
    IDEMPOTENCY,
    SENDERS,
    PROVIDERS,
    ANALYTICS,
    EVENTS,
    JOBS,
];

/// Global partition of idempotency records for admin calls (no workspace yet).
pub const ADMIN_IDEMPOTENCY: &str = "admin#idem";
