//! Imports on the embedded engine (redb + a folder of blobs), through the use case: the
//! nasty-file suite, crash-resume, undo, and a redelivered upload event.

use std::sync::Arc;

use mailpilot_shared::adapters::local::blobs::FileBlobs;
use mailpilot_shared::adapters::local::store::RedbStore;
use mailpilot_shared::usecases::imports::{self, CreateImport, ImportEnv, ImportSettings};
use mailpilot_tests::conformance::TempDir;
use mailpilot_tests::imports::{
    check_case, check_crash_resume, check_undo, drive, env, nasty_files, upload, workspace,
};

fn embedded(dir: &TempDir, tx_actions: usize, chunk_rows: usize) -> Arc<ImportEnv> {
    let store = RedbStore::open(&dir.path().join("store.redb")).expect("store");
    env(
        Arc::new(store),
        Arc::new(FileBlobs::new(&dir.path().join("uploads"))),
        ImportSettings {
            tx_actions,
            chunk_rows,
            ..ImportSettings::default()
        },
    )
}

#[tokio::test]
async fn nasty_files_import_with_exact_counters_and_report_lines() {
    let dir = TempDir::new();
    let env = embedded(&dir, 100, 1000);
    for case in nasty_files() {
        check_case(&env, &case).await;
    }
}

#[tokio::test]
async fn nasty_files_in_tiny_chunks_and_moto_sized_transactions_give_the_same_results() {
    let dir = TempDir::new();
    let env = embedded(&dir, 25, 2);
    for case in nasty_files() {
        check_case(&env, &case).await;
    }
}

#[tokio::test]
async fn an_import_stopped_after_every_few_transactions_resumes_exactly() {
    let dir = TempDir::new();
    let env = embedded(&dir, 25, 40);
    check_crash_resume(&env, 600, 3).await;
}

#[tokio::test]
async fn undo_removes_what_the_import_created_and_keeps_what_it_updated() {
    let dir = TempDir::new();
    let env = embedded(&dir, 25, 7);
    check_undo(&env).await;
}

#[tokio::test]
async fn a_redelivered_upload_event_starts_nothing_twice() {
    let dir = TempDir::new();
    let env = embedded(&dir, 100, 1000);
    let ws = workspace(env.store.as_ref()).await;
    let id = upload(
        &env,
        &ws,
        CreateImport::default(),
        b"email\na@example.com\n",
    )
    .await;
    // The upload already registered the file; the S3 event (or its redelivery) again:
    assert!(!imports::file_landed(&env, &ws, &id, 22).await.unwrap());
    let done = drive(&env, &ws, &id, None).await;
    assert_eq!(done.created, 1);
    assert!(!imports::file_landed(&env, &ws, &id, 22).await.unwrap());
    let again = imports::run(&env, &ws, &id, None, false).await.unwrap();
    assert_eq!(again, imports::RunOutcome::Done);
    assert_eq!(
        imports::get(env.store.as_ref(), &ws, &id)
            .await
            .unwrap()
            .created,
        1
    );
}
