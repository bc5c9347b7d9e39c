//! The import function fed the sample events in `events/`, over DynamoDB, S3 and SQS in
//! the emulator: the S3 test event, an ObjectCreated event (URL-encoded key) delivered
//! twice, and the queue message that runs the import.

use std::sync::Arc;

use mailpilot_shared::adapters::aws::blobs::S3Blobs;
use mailpilot_shared::adapters::aws::queue::SqsStarter;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::usecases::imports::{
    self, CreateImport, ImportEnv, ImportSettings, ImportStatus,
};
use mailpilot_tests::aws;
use serde_json::Value;

fn event(name: &str) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[tokio::test]
async fn sample_events_register_the_upload_once_and_the_queue_message_runs_it() {
    let dynamo = aws::dynamo_client();
    let table = format!("import-fn-{}", uuid_like());
    create_table(&dynamo, &table).await.unwrap();
    let s3 = aws::s3_client();
    let bucket = aws::bucket(&s3, "import-fn").await;
    let sqs = aws::sqs_client();
    let queue = sqs
        .create_queue()
        .queue_name(format!("import-fn-{}", uuid_like()))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let env = Arc::new(ImportEnv {
        store: Arc::new(DynamoStore::new(dynamo, table)),
        blobs: Arc::new(S3Blobs::new(
            s3.clone(),
            bucket.clone(),
            aws::credentials_provider(),
            Some(&aws::endpoint()),
        )),
        starter: Arc::new(SqsStarter::new(sqs.clone(), queue.clone())),
        settings: ImportSettings {
            tx_actions: 25,
            chunk_rows: 4,
            ..ImportSettings::default()
        },
    });
    let ws = mailpilot_tests::imports::workspace(env.store.as_ref()).await;
    let created = imports::create(&env, &ws, CreateImport::default(), "")
        .await
        .unwrap();
    let id = created.import.id.clone();
    let file = "email,first_name\nana@example.com,Ana\nbo@example.com,Bo\nnope,X\n";
    s3.put_object()
        .bucket(&bucket)
        .key(imports::blob_key(&ws, &id))
        .body(file.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();

    // The test event S3 sends first: nothing to do.
    let test_event: Value = serde_json::from_str(&event("s3-test-event.json")).unwrap();
    import::handle(&env, test_event, None).await.unwrap();

    // ObjectCreated, twice (S3 delivers at least once): one registration, one message.
    let raw = event("s3-object-created.json")
        .replace("REPLACED_BY_TEST_BUCKET", &bucket)
        .replace("REPLACED_BY_TEST_WS", &ws)
        .replace("REPLACED_BY_TEST_IMPORT", &id)
        .replace("\"size\": 0", &format!("\"size\": {}", file.len()));
    for _ in 0..2 {
        let ev: Value = serde_json::from_str(&raw).unwrap();
        import::handle(&env, ev, None).await.unwrap();
    }
    let got = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = got.messages();
    assert_eq!(
        messages.len(),
        1,
        "a redelivered event starts nothing twice"
    );
    let body = messages[0].body().unwrap();
    let msg: Value = serde_json::from_str(body).unwrap();
    assert_eq!(msg["workspace_id"], ws.as_str());
    assert_eq!(msg["import_id"], id.as_str());

    // The queue message, as Lambda hands it over, runs the import to its end.
    let sqs_event = event("sqs-import-continue.json")
        .replace("REPLACED_BY_TEST_WS", &ws)
        .replace("REPLACED_BY_TEST_IMPORT", &id);
    let answer = import::handle(&env, serde_json::from_str(&sqs_event).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(answer["batchItemFailures"], serde_json::json!([]));
    let done = imports::get(env.store.as_ref(), &ws, &id).await.unwrap();
    assert_eq!(done.status, ImportStatus::CompletedWithErrors);
    assert_eq!((done.created, done.failed), (2, 1));

    // A deadline already past: the run pauses at once and queues its continuation.
    let created = imports::create(&env, &ws, CreateImport::default(), "")
        .await
        .unwrap();
    let id2 = created.import.id.clone();
    let big: String = std::iter::once("email\n".to_string())
        .chain((0..40).map(|i| format!("u{i}@example.com\n")))
        .collect();
    s3.put_object()
        .bucket(&bucket)
        .key(imports::blob_key(&ws, &id2))
        .body(big.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    assert!(
        imports::file_landed(&env, &ws, &id2, big.len() as u64)
            .await
            .unwrap()
    );
    let drain = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(drain.messages().len(), 1);
    let continue_event = event("sqs-import-continue.json")
        .replace("REPLACED_BY_TEST_WS", &ws)
        .replace("REPLACED_BY_TEST_IMPORT", &id2);
    let mut hops = 0;
    loop {
        let past = std::time::Instant::now();
        import::handle(
            &env,
            serde_json::from_str(&continue_event).unwrap(),
            Some(past),
        )
        .await
        .unwrap();
        let now = imports::get(env.store.as_ref(), &ws, &id2).await.unwrap();
        if now.status != ImportStatus::Running {
            assert_eq!(now.created, 40);
            break;
        }
        hops += 1;
        assert!(hops < 40, "each invocation makes progress");
        let next = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        // Earlier messages may be visible again (30 s visibility): at least the new one.
        assert!(
            !next.messages().is_empty(),
            "a paused run queues its continuation"
        );
    }
    assert!(hops >= 2, "the import took several invocations ({hops})");
}

#[test]
fn keys_from_s3_events_are_form_decoded() {
    assert_eq!(
        import::decode_key("imports%2Fws_a%2Fimp_b"),
        "imports/ws_a/imp_b"
    );
    assert_eq!(import::decode_key("a+b%2Bc"), "a b+c");
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
