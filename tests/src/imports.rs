//! The import test harness: the table of nasty files with their exact expected
//! counters and report lines, and helpers that run an import through the use case on
//! any store and blob store (embedded + folder, DynamoDB + S3 in the emulator).

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use mailpilot_shared::error::AppResult;
use mailpilot_shared::ports::blobs::Blobs;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::imports::{
    self, CreateImport, Import, ImportEnv, ImportMode, ImportSettings, ImportStarter, ImportStatus,
    RunOutcome, StopAfter,
};
use mailpilot_shared::usecases::{contacts, lists, suppressions, workspaces};
use serde_json::{Value, json};

/// A starter that does nothing: tests drive the run themselves.
pub struct ManualStarter;

#[async_trait]
impl ImportStarter for ManualStarter {
    async fn start(&self, _env: &Arc<ImportEnv>, _ws: &str, _id: &str) -> AppResult<()> {
        Ok(())
    }
}

pub fn env(
    store: Arc<dyn Store>,
    blobs: Arc<dyn Blobs>,
    settings: ImportSettings,
) -> Arc<ImportEnv> {
    Arc::new(ImportEnv {
        store,
        blobs,
        starter: Arc::new(ManualStarter),
        settings,
    })
}

/// A new workspace on this store.
pub async fn workspace(store: &dyn Store) -> String {
    workspaces::create_workspace(
        store,
        workspaces::CreateWorkspace {
            name: "imports".into(),
        },
    )
    .await
    .expect("workspace")
    .workspace_id
}

/// Creates an import of `file` and uploads it (through the blob port): it is running.
pub async fn upload(env: &Arc<ImportEnv>, ws: &str, options: CreateImport, file: &[u8]) -> String {
    let created = imports::create(env, ws, options, "").await.expect("create");
    let id = created.import.id.clone();
    let bytes = bytes::Bytes::from(file.to_vec());
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }).boxed();
    imports::upload(env, ws, &id, body, u64::MAX)
        .await
        .expect("upload");
    id
}

/// Drives an import to its end, stopping (as a crash would) every `stop_every`
/// transactions when set, and resuming each time with a fresh run from the checkpoint.
pub async fn drive(env: &Arc<ImportEnv>, ws: &str, id: &str, stop_every: Option<usize>) -> Import {
    for _ in 0..100_000 {
        let outcome = imports::run_with(env, ws, id, None, true, StopAfter(stop_every))
            .await
            .expect("run");
        if outcome == RunOutcome::Done {
            return imports::get(env.store.as_ref(), ws, id).await.expect("get");
        }
    }
    panic!("import {id} did not finish");
}

/// What a case expects.
pub struct Expect {
    pub status: ImportStatus,
    pub rows_read: i64,
    pub created: i64,
    pub updated: i64,
    pub failed: i64,
    /// (reason, count) for every non-zero skip reason.
    pub skipped: &'static [(&'static str, i64)],
    /// (line, column, start of the reason) of every report line, in order.
    pub report: Vec<(u64, &'static str, &'static str)>,
    /// A substring of the import's `error` (failed imports).
    pub error: Option<&'static str>,
}

/// One nasty file.
pub struct Case {
    pub name: &'static str,
    pub file: Vec<u8>,
    pub options: Value,
    /// Addresses suppressed before the import: (email, reason).
    pub suppressed: &'static [(&'static str, &'static str)],
    /// Contacts that exist before the import.
    pub existing: &'static [&'static str],
    pub expect: Expect,
    /// Extra checks on contacts: (email, JSON pointer, expected value).
    pub contacts: Vec<(&'static str, &'static str, Value)>,
}

fn ok(rows: i64, created: i64) -> Expect {
    Expect {
        status: ImportStatus::Completed,
        rows_read: rows,
        created,
        updated: 0,
        failed: 0,
        skipped: &[],
        report: vec![],
        error: None,
    }
}

fn every_seventh_bad() -> (Vec<u8>, Vec<(u64, &'static str, &'static str)>) {
    let mut f = String::from("email,first_name\n");
    let mut report = vec![];
    for i in 1..=100u64 {
        if i % 7 == 0 {
            f.push_str(&format!("not-an-email-{i},Bad\n"));
            report.push((i + 1, "email", "is not a valid email address"));
        } else {
            f.push_str(&format!("user{i}@example.com,User{i}\n"));
        }
    }
    (f.into_bytes(), report)
}

/// The table of nasty files (every case of the point 3, and more).
pub fn nasty_files() -> Vec<Case> {
    let long = "x".repeat(70 * 1024);
    let (sevens, sevens_report) = every_seventh_bad();
    vec![
        Case {
            name: "utf8_bom",
            file: b"\xEF\xBB\xBFemail,first_name\nana@example.com,Ana\nbo@example.com,Bo\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: ok(2, 2),
            contacts: vec![("ana@example.com", "/first_name", json!("Ana"))],
        },
        Case {
            name: "crlf_line_endings",
            file: b"Email,Last Name\r\nana@example.com,Lopez\r\nbo@example.com,Berg\r\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: ok(2, 2),
            contacts: vec![("bo@example.com", "/last_name", json!("Berg"))],
        },
        Case {
            name: "lf_without_final_newline",
            file: b"email\nana@example.com\nbo@example.com".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: ok(2, 2),
            contacts: vec![],
        },
        Case {
            name: "quoted_newlines_and_delimiters",
            file: b"email,company,note\nana@example.com,\"Acme, Inc.\",\"line one\nline two\"\nnope,x,y\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                failed: 1,
                status: ImportStatus::CompletedWithErrors,
                report: vec![(4, "email", "is not a valid email address")],
                ..ok(2, 1)
            },
            contacts: vec![
                ("ana@example.com", "/attributes/company", json!("Acme, Inc.")),
                ("ana@example.com", "/attributes/note", json!("line one\nline two")),
            ],
        },
        Case {
            name: "semicolon_delimiter",
            file: b"email;first_name;score\nana@example.com;Ana;4.5\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: ok(1, 1),
            contacts: vec![("ana@example.com", "/attributes/score", json!(4.5))],
        },
        Case {
            name: "tab_delimiter_and_typed_values",
            file: b"E-mail\tseats\tvip\tzip\nana@example.com\t12\tTRUE\t02134\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: ok(1, 1),
            contacts: vec![
                ("ana@example.com", "/attributes/seats", json!(12)),
                ("ana@example.com", "/attributes/vip", json!(true)),
                ("ana@example.com", "/attributes/zip", json!("02134")),
            ],
        },
        Case {
            name: "blank_lines",
            file: b"email\n\nana@example.com\n\n\n,\nbad@\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                failed: 1,
                status: ImportStatus::CompletedWithErrors,
                report: vec![(7, "email", "is not a valid email address")],
                ..ok(2, 1)
            },
            contacts: vec![],
        },
        Case {
            name: "trailing_empty_columns",
            file: b"email,first_name,,\nana@example.com,Ana,,\nbo@example.com,Bo,,,\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: ok(2, 2),
            contacts: vec![("bo@example.com", "/first_name", json!("Bo"))],
        },
        Case {
            name: "over_long_row",
            file: format!(
                "email,note\nana@example.com,short\nbo@example.com,{long}\ncy@example.com,short\n"
            )
            .into_bytes(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                failed: 1,
                status: ImportStatus::CompletedWithErrors,
                report: vec![(3, "", "the row is longer than 65536 bytes")],
                ..ok(3, 2)
            },
            contacts: vec![],
        },
        Case {
            name: "non_utf8_without_declared_encoding",
            file: b"email,first_name\njose@example.com,Jos\xE9\nana@example.com,Ana\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                failed: 1,
                status: ImportStatus::CompletedWithErrors,
                report: vec![(2, "first_name", "byte 0xE9 is not valid UTF-8")],
                ..ok(2, 1)
            },
            contacts: vec![],
        },
        Case {
            name: "declared_windows_1252",
            file: b"email,first_name\njose@example.com,Jos\xE9\nzoe@example.com,Zo\xEB \x80\n".to_vec(),
            options: json!({"encoding": "windows-1252"}),
            suppressed: &[],
            existing: &[],
            expect: ok(2, 2),
            contacts: vec![
                ("jose@example.com", "/first_name", json!("José")),
                ("zoe@example.com", "/first_name", json!("Zoë €")),
            ],
        },
        Case {
            name: "header_only",
            file: b"email,first_name\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: ok(0, 0),
            contacts: vec![],
        },
        Case {
            name: "no_email_column",
            file: b"name,city\nAna,Madrid\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                status: ImportStatus::Failed,
                error: Some("no email column"),
                ..ok(0, 0)
            },
            contacts: vec![],
        },
        Case {
            name: "zero_byte_file",
            file: vec![],
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                status: ImportStatus::Failed,
                error: Some("the file is empty"),
                ..ok(0, 0)
            },
            contacts: vec![],
        },
        Case {
            name: "duplicates_differing_in_case",
            file: b"email,first_name\nAna@Example.com,First\nbo@example.com,Bo\nANA@example.COM,Last\n".to_vec(),
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                skipped: &[("duplicate", 1)],
                report: vec![(2, "email", "skipped: duplicate (line 4")],
                ..ok(3, 2)
            },
            contacts: vec![("ana@example.com", "/first_name", json!("Last"))],
        },
        Case {
            name: "every_seventh_row_bad",
            file: sevens,
            options: json!({}),
            suppressed: &[],
            existing: &[],
            expect: Expect {
                failed: 14,
                status: ImportStatus::CompletedWithErrors,
                report: sevens_report,
                ..ok(100, 86)
            },
            contacts: vec![("user99@example.com", "/first_name", json!("User99"))],
        },
        Case {
            name: "suppressed_addresses_are_never_resubscribed",
            file: b"email\nana@example.com\ngone@example.com\nspam@example.com\n".to_vec(),
            options: json!({}),
            suppressed: &[("gone@example.com", "unsubscribed"), ("spam@example.com", "complaint")],
            existing: &[],
            expect: Expect {
                skipped: &[("complained", 1), ("unsubscribed", 1)],
                report: vec![
                    (3, "email", "skipped: unsubscribed"),
                    (4, "email", "skipped: complained"),
                ],
                ..ok(3, 1)
            },
            contacts: vec![],
        },
        Case {
            name: "create_only_skips_existing",
            file: b"email,first_name\nold@example.com,New\nnew@example.com,New\n".to_vec(),
            options: json!({"mode": "create_only"}),
            suppressed: &[],
            existing: &["old@example.com"],
            expect: Expect {
                skipped: &[("exists", 1)],
                report: vec![(2, "email", "skipped: exists")],
                ..ok(2, 1)
            },
            contacts: vec![("old@example.com", "/first_name", Value::Null)],
        },
        Case {
            name: "update_only_skips_unknown",
            file: b"email,first_name\nold@example.com,New\nnew@example.com,New\n".to_vec(),
            options: json!({"mode": "update_only"}),
            suppressed: &[],
            existing: &["old@example.com"],
            expect: Expect {
                updated: 1,
                skipped: &[("not_found", 1)],
                report: vec![(3, "email", "skipped: not_found")],
                ..ok(2, 0)
            },
            contacts: vec![("old@example.com", "/first_name", json!("New"))],
        },
        Case {
            name: "mapping_names_the_email_column",
            file: b"Correo,Nombre\nana@example.com,Ana\n".to_vec(),
            options: json!({"mapping": {"Correo": "email", "Nombre": "first_name"}, "tags": ["spain"]}),
            suppressed: &[],
            existing: &[],
            expect: ok(1, 1),
            contacts: vec![
                ("ana@example.com", "/first_name", json!("Ana")),
                ("ana@example.com", "/attributes/tags", json!(["spain"])),
            ],
        },
    ]
}

/// Runs one case in a fresh workspace and asserts everything it expects.
pub async fn check_case(env: &Arc<ImportEnv>, case: &Case) {
    let store = env.store.as_ref();
    let ws = workspace(store).await;
    for (email, reason) in case.suppressed {
        suppressions::add(
            store,
            &ws,
            serde_json::from_value(json!({"email": email, "reason": reason})).unwrap(),
        )
        .await
        .unwrap();
    }
    for email in case.existing {
        contacts::create(
            store,
            &ws,
            serde_json::from_value(json!({ "email": email })).unwrap(),
        )
        .await
        .unwrap();
    }
    let options: CreateImport = serde_json::from_value(case.options.clone()).unwrap();
    let id = upload(env, &ws, options, &case.file).await;
    let import = drive(env, &ws, &id, None).await;
    assert_expected(case.name, &import, &case.expect);
    let report = imports::error_rows(store, &ws, &id).await.unwrap();
    let got: Vec<(u64, String, String)> = report
        .iter()
        .map(|e| (e.line, e.column.clone(), e.reason.clone()))
        .collect();
    assert_eq!(
        got.len(),
        case.expect.report.len(),
        "{}: report {got:?}",
        case.name
    );
    for (g, (line, column, reason)) in got.iter().zip(&case.expect.report) {
        assert_eq!(g.0, *line, "{}: report {got:?}", case.name);
        assert_eq!(g.1, *column, "{}: report {got:?}", case.name);
        assert!(g.2.starts_with(reason), "{}: report {got:?}", case.name);
    }
    for (email, pointer, want) in &case.contacts {
        let c = contacts::get_by_email(store, &ws, email).await.unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v.pointer(pointer).unwrap_or(&Value::Null),
            want,
            "{}: {email}{pointer}",
            case.name
        );
        if case.existing.contains(email) {
            continue;
        }
        assert_eq!(c.import_id.as_deref(), Some(id.as_str()), "{}", case.name);
        assert_eq!(
            c.consent.as_ref().map(|c| c.source.clone()),
            Some(format!("import:{id}")),
            "{}",
            case.name
        );
    }
}

pub fn assert_expected(name: &str, import: &Import, e: &Expect) {
    assert_eq!(import.status, e.status, "{name}: {import:?}");
    assert_eq!(import.rows_read, e.rows_read, "{name}: rows_read");
    assert_eq!(import.created, e.created, "{name}: created");
    assert_eq!(import.updated, e.updated, "{name}: updated");
    assert_eq!(import.failed, e.failed, "{name}: failed");
    let skipped = serde_json::to_value(&import.skipped).unwrap();
    let mut nonzero: Vec<(String, i64)> = skipped
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_i64() != Some(0))
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect();
    nonzero.sort();
    let mut want: Vec<(String, i64)> = e.skipped.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    want.sort();
    assert_eq!(nonzero, want, "{name}: skipped");
    match e.error {
        Some(s) => assert!(
            import.error.as_deref().is_some_and(|x| x.contains(s)),
            "{name}: error {:?}",
            import.error
        ),
        None => assert!(import.error.is_none(), "{name}: error {:?}", import.error),
    }
    assert_eq!(
        import.rows_read,
        import.created + import.updated + import.failed + {
            let s = &import.skipped;
            s.duplicate
                + s.exists
                + s.not_found
                + s.unsubscribed
                + s.bounced
                + s.complained
                + s.suppressed
        },
        "{name}: every row has exactly one outcome"
    );
}

/// A deterministic file for crash/resume tests: `n` rows, with duplicates (also across
/// chunks), bad rows, and suppressed addresses (`sup<k>@example.com`).
pub fn mixed_file(n: usize) -> Vec<u8> {
    let mut f = String::from("email,first_name,plan,seats\n");
    for i in 0..n {
        let line = match i % 13 {
            5 => format!("broken-{i},Broken,free,1\n"),
            7 => format!("dup{}@example.com,Again{i},pro,{i}\n", i % 7),
            9 => format!("sup{}@example.com,Sup,free,1\n", i % 3),
            11 => format!("\"quoted{i}@example.com\",\"Multi\nLine\",\"a, b\",2\n"),
            _ => format!("user{i}@example.com,User{i},free,{}\n", i % 10),
        };
        f.push_str(&line);
    }
    f.into_bytes()
}

/// Creates `list` and suppresses `sup0..sup2` in a fresh workspace: (ws, list id).
pub async fn mixed_setup(store: &dyn Store) -> (String, String) {
    let ws = workspace(store).await;
    for k in 0..3 {
        suppressions::add(
            store,
            &ws,
            serde_json::from_value(
                json!({"email": format!("sup{k}@example.com"), "reason": "hard_bounce"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    }
    contacts::create(
        store,
        &ws,
        serde_json::from_value(json!({"email": "user1@example.com", "first_name": "Before"}))
            .unwrap(),
    )
    .await
    .unwrap();
    let list = lists::create(
        store,
        &ws,
        serde_json::from_value(json!({"name": "Imported"})).unwrap(),
    )
    .await
    .unwrap();
    (ws, list.id)
}

/// Everything an import's result consists of, comparable across workspaces: the
/// counters, the contacts (email, names, attributes; not ids or times), the list's
/// member count and members' emails, and the report.
pub async fn snapshot(store: &dyn Store, ws: &str, id: &str, list_id: &str) -> Value {
    let import = imports::get(store, ws, id).await.unwrap();
    let mut all = vec![];
    let mut cursor = None;
    loop {
        let page = contacts::list(store, ws, &Default::default(), 1000, cursor)
            .await
            .unwrap();
        for c in page.data {
            all.push(json!([
                c.email,
                c.first_name,
                c.last_name,
                c.attributes,
                c.status
            ]));
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    all.sort_by_key(|v| v.to_string());
    let list = lists::get(store, ws, list_id).await.unwrap();
    let mut members = 0;
    let mut cursor = None;
    loop {
        let page = lists::members(store, ws, list_id, 1000, cursor)
            .await
            .unwrap();
        members += page.data.len();
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let report: Vec<Value> = imports::error_rows(store, ws, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| json!([e.line, e.column, e.value, e.reason]))
        .collect();
    json!({
        "status": import.status,
        "rows_read": import.rows_read,
        "created": import.created,
        "updated": import.updated,
        "failed": import.failed,
        "skipped": import.skipped,
        "bytes": [import.bytes_processed, import.bytes_total],
        "contacts": all,
        "member_count": list.member_count,
        "members": members,
        "report": report,
    })
}

/// The crash-resume property on any engine: an import stopped after every
/// `stop_every` transactions and resumed ends exactly as an uninterrupted one.
pub async fn check_crash_resume(env: &Arc<ImportEnv>, rows: usize, stop_every: usize) {
    let store = env.store.as_ref();
    let file = mixed_file(rows);
    let options = |list: &str| -> CreateImport {
        serde_json::from_value(json!({"list_ids": [list], "mode": "upsert"})).unwrap()
    };
    let (ws_a, list_a) = mixed_setup(store).await;
    let id_a = upload(env, &ws_a, options(&list_a), &file).await;
    let a = drive(env, &ws_a, &id_a, None).await;
    let (ws_b, list_b) = mixed_setup(store).await;
    let id_b = upload(env, &ws_b, options(&list_b), &file).await;
    let b = drive(env, &ws_b, &id_b, Some(stop_every)).await;
    assert_eq!(a.status, ImportStatus::CompletedWithErrors);
    assert!(a.created > 0 && a.updated == 1 && a.skipped.duplicate > 0 && a.skipped.bounced > 0);
    let snap_a = snapshot(store, &ws_a, &id_a, &list_a).await;
    let snap_b = snapshot(store, &ws_b, &id_b, &list_b).await;
    for (k, va) in snap_a.as_object().unwrap() {
        let vb = &snap_b[k];
        if let (Some(a), Some(b)) = (va.as_array(), vb.as_array()) {
            let first = a.iter().zip(b).position(|(x, y)| x != y);
            assert!(
                first.is_none() && a.len() == b.len(),
                "{k} differs (len {} vs {}) at {first:?}: {:?} vs {:?}",
                a.len(),
                b.len(),
                first.map(|i| &a[i]),
                first.map(|i| &b[i])
            );
        } else {
            assert_eq!(
                va, vb,
                "{k}: an interrupted import ends like an uninterrupted one"
            );
        }
    }
    assert_eq!(snap_a["member_count"], snap_a["members"]);
    assert_eq!(
        snap_a["member_count"].as_i64().unwrap(),
        a.created + a.updated,
        "every written contact joined the list once"
    );
    assert_eq!(b.mode, ImportMode::Upsert);
}

/// Undo on any engine: created contacts go, updated ones keep their values, added
/// memberships go, counters are corrected, and the import stays readable.
pub async fn check_undo(env: &Arc<ImportEnv>) {
    let store = env.store.as_ref();
    let ws = workspace(store).await;
    let list = lists::create(
        store,
        &ws,
        serde_json::from_value(json!({"name": "L"})).unwrap(),
    )
    .await
    .unwrap();
    let other = lists::create(
        store,
        &ws,
        serde_json::from_value(json!({"name": "Other"})).unwrap(),
    )
    .await
    .unwrap();
    let old = contacts::create(
        store,
        &ws,
        serde_json::from_value(json!({"email": "old@example.com", "first_name": "Before"}))
            .unwrap(),
    )
    .await
    .unwrap();
    let mut file = String::from("email,first_name\nold@example.com,After\n");
    for i in 0..40 {
        file.push_str(&format!("new{i}@example.com,New{i}\n"));
    }
    let options: CreateImport = serde_json::from_value(json!({"list_ids": [list.id]})).unwrap();
    let id = upload(env, &ws, options, file.as_bytes()).await;
    let done = drive(env, &ws, &id, None).await;
    assert_eq!((done.created, done.updated), (40, 1));
    assert_eq!(
        lists::get(store, &ws, &list.id).await.unwrap().member_count,
        41
    );
    // A contact the import created that the user then added to another list.
    let new0 = contacts::get_by_email(store, &ws, "new0@example.com")
        .await
        .unwrap();
    lists::add_members(
        store,
        &ws,
        &other.id,
        serde_json::from_value(json!({"contact_ids": [new0.id]})).unwrap(),
    )
    .await
    .unwrap();

    let reverting = imports::start_revert(env, &ws, &id).await.unwrap();
    assert_eq!(reverting.status, ImportStatus::Reverting);
    let reverted = drive(env, &ws, &id, None).await;
    assert_eq!(reverted.status, ImportStatus::Reverted);
    let counts = reverted.reverted.expect("revert counts");
    assert_eq!(counts.contacts_deleted, 40);
    assert_eq!(counts.contacts_kept, 1);
    assert_eq!(counts.memberships_removed, 1);
    assert!(
        contacts::get_by_email(store, &ws, "new7@example.com")
            .await
            .is_err()
    );
    let kept = contacts::get(store, &ws, &old.id).await.unwrap();
    assert_eq!(
        kept.first_name.as_deref(),
        Some("After"),
        "updated contacts keep their values"
    );
    assert_eq!(
        lists::get(store, &ws, &list.id).await.unwrap().member_count,
        0
    );
    assert_eq!(
        lists::get(store, &ws, &other.id)
            .await
            .unwrap()
            .member_count,
        0
    );
    // Still readable, counters of the import itself unchanged; undo twice is a no-op.
    let again = imports::start_revert(env, &ws, &id).await.unwrap();
    assert_eq!(again.status, ImportStatus::Reverted);
    assert_eq!(again.created, 40);
}
