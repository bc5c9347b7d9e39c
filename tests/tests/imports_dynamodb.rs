//! Imports on DynamoDB and S3 (moto's emulator, started by scripts/test.sh): the same
//! nasty-file suite, crash-resume and undo as on the embedded engine, with moto-sized
//! transactions (moto caps them at 25 actions), and the presigned POST upload.

use std::sync::Arc;

use mailpilot_shared::adapters::aws::blobs::S3Blobs;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::usecases::imports::{self, CreateImport, ImportEnv, ImportSettings};
use mailpilot_tests::aws;
use mailpilot_tests::imports::{
    check_case, check_crash_resume, check_undo, drive, env, nasty_files, workspace,
};

async fn dynamodb_and_s3(chunk_rows: usize) -> (Arc<ImportEnv>, aws_sdk_s3::Client, String) {
    let client = aws::dynamo_client();
    let table = format!("imports-{}", uuid::Uuid::new_v4().simple());
    create_table(&client, &table).await.expect("table");
    let s3 = aws::s3_client();
    let bucket = aws::bucket(&s3, "uploads").await;
    let blobs = S3Blobs::new(
        s3.clone(),
        bucket.clone(),
        aws::credentials_provider(),
        Some(&aws::endpoint()),
    );
    let env = env(
        Arc::new(DynamoStore::new(client, table)),
        Arc::new(blobs),
        ImportSettings {
            tx_actions: 25,
            chunk_rows,
            ..ImportSettings::default()
        },
    );
    (env, s3, bucket)
}

#[tokio::test]
async fn nasty_files_on_dynamodb_and_s3() {
    let (env, _, _) = dynamodb_and_s3(40).await;
    for case in nasty_files() {
        check_case(&env, &case).await;
    }
}

#[tokio::test]
async fn crash_resume_on_dynamodb_and_s3() {
    let (env, _, _) = dynamodb_and_s3(16).await;
    check_crash_resume(&env, 100, 2).await;
}

#[tokio::test]
async fn undo_on_dynamodb_and_s3() {
    let (env, _, _) = dynamodb_and_s3(9).await;
    check_undo(&env).await;
}

#[tokio::test]
async fn a_file_posted_with_the_presigned_form_lands_and_imports() {
    let (env, s3, bucket) = dynamodb_and_s3(100).await;
    let ws = workspace(env.store.as_ref()).await;
    let created = imports::create(&env, &ws, CreateImport::default(), "")
        .await
        .unwrap();
    let upload = created.upload.expect("an upload target");
    assert_eq!(upload.method, "POST");
    let form = upload.form.expect("a presigned form");
    let policy = String::from_utf8(base64_decode(&form.fields["policy"])).unwrap();
    assert!(policy.contains("content-length-range"), "{policy}");
    let mut multipart = reqwest::multipart::Form::new();
    for (k, v) in &form.fields {
        multipart = multipart.text(k.clone(), v.clone());
    }
    multipart = multipart.part(
        "file",
        reqwest::multipart::Part::bytes(b"email\nposted@example.com\n".to_vec()).file_name("f.csv"),
    );
    let res = reqwest::Client::new()
        .post(&form.url)
        .multipart(multipart)
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "{} {}",
        res.status(),
        res.text().await.unwrap()
    );
    let key = imports::blob_key(&ws, &created.import.id);
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let size = head.content_length().unwrap() as u64;
    assert_eq!(
        mailpilot_shared::ports::blobs::Blobs::size(env.blobs.as_ref(), &key)
            .await
            .unwrap(),
        Some(size)
    );
    // What the S3 event does: register the file (twice: redelivery), then run.
    assert!(
        imports::file_landed(&env, &ws, &created.import.id, size)
            .await
            .unwrap()
    );
    assert!(
        !imports::file_landed(&env, &ws, &created.import.id, size)
            .await
            .unwrap()
    );
    let done = drive(&env, &ws, &created.import.id, None).await;
    assert_eq!(done.created, 1);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
