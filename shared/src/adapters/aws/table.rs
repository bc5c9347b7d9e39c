//! The one definition of Mailpilot's DynamoDB table.
//!
//! [`TABLE`] is the truth: [`create_table`] builds the table from it (tests, the local
//! emulator, scripts), and `tests/tests/template.rs` checks that the table resource in
//! `template.yaml` says exactly what [`TableDef::cloudformation_properties`] says.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType,
    SseSpecification, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use serde_json::{Value as Json, json};

use crate::ports::store::{Index, PK, SK, StoreError, TTL};

/// The layout of the table.
#[derive(Debug, Clone, Copy)]
pub struct TableDef {
    /// Partition key attribute (a string).
    pub hash_key: &'static str,
    /// Sort key attribute (a string).
    pub range_key: &'static str,
    /// Global secondary indexes; each keyed on two string attributes, projecting all.
    pub indexes: &'static [Index],
    /// `PAY_PER_REQUEST` (on demand).
    pub billing_mode: &'static str,
    /// Time-to-live attribute (epoch seconds).
    pub ttl_attribute: &'static str,
    /// Point-in-time recovery.
    pub point_in_time_recovery: bool,
    /// Server-side encryption with the AWS-managed KMS key.
    pub sse: bool,
}

/// Mailpilot's single table.
pub const TABLE: TableDef = TableDef {
    hash_key: PK,
    range_key: SK,
    indexes: &Index::ALL,
    billing_mode: "PAY_PER_REQUEST",
    ttl_attribute: TTL,
    point_in_time_recovery: true,
    sse: true,
};

impl TableDef {
    /// Every key attribute of the table and its indexes (all strings), table first.
    pub fn key_attributes(&self) -> Vec<&'static str> {
        let mut attrs = vec![self.hash_key, self.range_key];
        for index in self.indexes {
            attrs.push(index.pk_attr());
            attrs.push(index.sk_attr());
        }
        attrs
    }

    /// The CloudFormation `Properties` of an `AWS::DynamoDB::Table` with this layout
    /// (everything but `TableName` and tags).
    pub fn cloudformation_properties(&self) -> Json {
        let key_schema = |hash: &str, range: &str| {
            json!([
                { "AttributeName": hash, "KeyType": "HASH" },
                { "AttributeName": range, "KeyType": "RANGE" },
            ])
        };
        let attribute_definitions: Vec<Json> = self
            .key_attributes()
            .into_iter()
            .map(|a| json!({ "AttributeName": a, "AttributeType": "S" }))
            .collect();
        let indexes: Vec<Json> = self
            .indexes
            .iter()
            .map(|i| {
                json!({
                    "IndexName": i.name(),
                    "KeySchema": key_schema(i.pk_attr(), i.sk_attr()),
                    "Projection": { "ProjectionType": "ALL" },
                })
            })
            .collect();
        json!({
            "BillingMode": self.billing_mode,
            "AttributeDefinitions": attribute_definitions,
            "KeySchema": key_schema(self.hash_key, self.range_key),
            "GlobalSecondaryIndexes": indexes,
            "TimeToLiveSpecification": { "AttributeName": self.ttl_attribute, "Enabled": true },
            "PointInTimeRecoverySpecification": {
                "PointInTimeRecoveryEnabled": self.point_in_time_recovery
            },
            "SSESpecification": { "SSEEnabled": self.sse },
        })
    }
}

/// How long [`create_table`] waits for the table and its indexes to become active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates the table `name` with the layout of [`TABLE`] (or finds it already there),
/// waits until it and its indexes are ACTIVE, then enables TTL and point-in-time
/// recovery. For tests and local set-up; in AWS, template.yaml creates the table.
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    let key = |attr: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(attr)
            .key_type(key_type)
            .build()
            .map_err(StoreError::unavailable)
    };
    let mut definitions = Vec::new();
    for attr in TABLE.key_attributes() {
        definitions.push(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(StoreError::unavailable)?,
        );
    }
    let mut indexes = Vec::new();
    for index in TABLE.indexes {
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(index.name())
                .key_schema(key(index.pk_attr(), KeyType::Hash)?)
                .key_schema(key(index.sk_attr(), KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(StoreError::unavailable)?,
        );
    }
    let created = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(TABLE.billing_mode))
        .key_schema(key(TABLE.hash_key, KeyType::Hash)?)
        .key_schema(key(TABLE.range_key, KeyType::Range)?)
        .set_attribute_definitions(Some(definitions))
        .set_global_secondary_indexes(Some(indexes))
        .sse_specification(SseSpecification::builder().enabled(TABLE.sse).build())
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Already there (a second test binary, a re-run): make sure it is ready.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(StoreError::unavailable(e)),
    }

    wait_until_active(client, name).await?;

    let ttl = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(StoreError::unavailable)?;
    let ttl_on = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status())
        .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
    if !ttl_on {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TABLE.ttl_attribute)
                    .enabled(true)
                    .build()
                    .map_err(StoreError::unavailable)?,
            )
            .send()
            .await
            .map_err(StoreError::unavailable)?;
    }

    if TABLE.point_in_time_recovery {
        enable_point_in_time_recovery(client, name).await?;
    }
    Ok(())
}

async fn wait_until_active(client: &Client, name: &str) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        let active = out.table().is_some_and(|t| {
            t.table_status() == Some(&TableStatus::Active)
                && t.global_secondary_indexes()
                    .iter()
                    .all(|i| i.index_status() == Some(&IndexStatus::Active))
        });
        if active {
            return Ok(());
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(StoreError::unavailable(format!(
                "table {name} did not become ACTIVE within {ACTIVE_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Turns on point-in-time recovery. Right after CreateTable, DynamoDB may answer
/// ContinuousBackupsUnavailableException for a while: retry that, bounded. (moto's
/// server supports UpdateContinuousBackups, so no emulator exception is needed here.)
async fn enable_point_in_time_recovery(client: &Client, name: &str) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()
            .map_err(StoreError::unavailable)?;
        let result = client
            .update_continuous_backups()
            .table_name(name)
            .point_in_time_recovery_specification(spec)
            .send()
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_continuous_backups_unavailable_exception())
                    && started.elapsed() < ACTIVE_TIMEOUT =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(StoreError::unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_index_of_the_port() {
        assert_eq!(TABLE.indexes, &Index::ALL);
        assert_eq!(TABLE.key_attributes(), vec!["pk", "sk", "gsi1pk", "gsi1sk"]);
        let props = TABLE.cloudformation_properties();
        assert_eq!(props["GlobalSecondaryIndexes"][0]["IndexName"], "gsi1");
        assert_eq!(props["TimeToLiveSpecification"]["AttributeName"], "ttl");
    }
}
