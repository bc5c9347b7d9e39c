//! The storage conformance suite against DynamoDB, through a local emulator.
//!
//! Needs `MAILPILOT_TEST_AWS_ENDPOINT` (e.g. `moto_server -p 5005` and
//! `MAILPILOT_TEST_AWS_ENDPOINT=http://127.0.0.1:5005`); without it every test fails
//! with that instruction rather than skipping. Each test creates its own table (nextest
//! runs every test in its own process, so a per-process table would be one per test
//! anyway); tables are named `conformance-<uuid>`.

use std::sync::Arc;

use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_tests::aws::dynamo_client;
use mailpilot_tests::conformance::Harness;

async fn dynamodb() -> Harness {
    let client = dynamo_client();
    let table = format!("conformance-{}", uuid::Uuid::new_v4());
    create_table(&client, &table)
        .await
        .expect("creates the test table in the emulator");
    Harness::new(Arc::new(DynamoStore::new(client, table)), ())
}

mailpilot_tests::conformance_tests!(dynamodb());
