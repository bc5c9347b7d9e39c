//! template.yaml and the table definition in code (`adapters::aws::table::TABLE`) say
//! the same thing; the definition creates a working table on the AWS emulator.

use std::collections::BTreeSet;
use std::path::PathBuf;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    KeyType, PointInTimeRecoveryStatus, ProjectionType, TimeToLiveStatus,
};
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::{TABLE, create_table};
use mailpilot_shared::ports::store::{
    Cond, Index, ItemExt, Key, Query, SortKeyCond, Store, StoreError, TxAction, Update, val,
};
use serde_json::{Map, Value as Json, json};
use serde_yaml::Value as Yaml;

fn template() -> Json {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let yaml: Yaml = serde_yaml::from_str(&text).expect("template.yaml is YAML");
    yaml_to_json(yaml)
}

/// YAML to JSON; a CloudFormation short-form tag becomes its long form
/// (`!Ref X` → `{"Ref": "X"}`, `!GetAtt T.Arn` → `{"Fn::GetAtt": "T.Arn"}`).
fn yaml_to_json(v: Yaml) -> Json {
    match v {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(b),
        Yaml::Number(n) => serde_json::to_value(&n).expect("a YAML number is a JSON number"),
        Yaml::String(s) => Json::String(s),
        Yaml::Sequence(seq) => Json::Array(seq.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Yaml::String(s) => s,
                        other => panic!("non-string key in template.yaml: {other:?}"),
                    };
                    (k, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let key = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            let mut obj = Map::new();
            obj.insert(key, yaml_to_json(tagged.value));
            Json::Object(obj)
        }
    }
}

/// The one resource of `ty` in the template: (logical id, resource).
fn resource<'a>(t: &'a Json, ty: &str) -> (&'a str, &'a Json) {
    let resources = t["Resources"].as_object().expect("Resources is a map");
    let found: Vec<_> = resources.iter().filter(|(_, r)| r["Type"] == ty).collect();
    assert_eq!(found.len(), 1, "exactly one {ty} in template.yaml");
    let (id, r) = found[0];
    (id.as_str(), r)
}

#[test]
fn the_table_resource_matches_the_code_definition() {
    let t = template();
    let (_, table) = resource(&t, "AWS::DynamoDB::Table");
    let expected = TABLE.cloudformation_properties();
    let props = &table["Properties"];
    for (key, want) in expected.as_object().expect("properties are a map") {
        assert_eq!(
            &props[key], want,
            "template.yaml's table {key} differs from adapters::aws::table::TABLE"
        );
    }
    // Nothing in the template's table that the code does not define (but its name).
    for key in props.as_object().expect("Properties is a map").keys() {
        assert!(
            key == "TableName" || key == "Tags" || expected.get(key).is_some(),
            "template.yaml's table has {key}, which TABLE does not define"
        );
    }
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(table["UpdateReplacePolicy"], "Retain");
    // The indexes of the port are the indexes of the table.
    let names: Vec<&str> = Index::ALL.iter().map(|i| i.name()).collect();
    let in_template: Vec<&str> = props["GlobalSecondaryIndexes"]
        .as_array()
        .expect("GSIs")
        .iter()
        .filter_map(|g| g["IndexName"].as_str())
        .collect();
    assert_eq!(names, in_template);
}

#[test]
fn the_secret_is_generated_and_retained() {
    let t = template();
    let (id, secret) = resource(&t, "AWS::SecretsManager::Secret");
    assert_eq!(id, "MailpilotSecrets");
    assert_eq!(secret["DeletionPolicy"], "Retain");
    let props = &secret["Properties"];
    assert!(
        props.get("SecretString").is_none(),
        "never a plain secret value in template.yaml"
    );
    assert_eq!(
        props["GenerateSecretString"]["GenerateStringKey"],
        "encryption_key"
    );
}

#[test]
fn the_api_function_may_touch_only_its_table_secret_and_ses_list() {
    let t = template();
    let (table_id, _) = resource(&t, "AWS::DynamoDB::Table");
    let f = &t["Resources"]["ApiFunction"];
    assert_eq!(f["Type"], "AWS::Serverless::Function");
    let env = &f["Properties"]["Environment"]["Variables"];
    assert_eq!(env["MAILPILOT_TABLE"], json!({ "Ref": table_id }));
    assert_eq!(
        env["MAILPILOT_SECRETS_ARN"],
        json!({ "Ref": "MailpilotSecrets" })
    );
    let statements: Vec<&Json> = f["Properties"]["Policies"]
        .as_array()
        .expect("Policies")
        .iter()
        .flat_map(|p| p["Statement"].as_array().expect("inline statements").iter())
        .collect();
    let mut dynamo = BTreeSet::new();
    for s in &statements {
        assert_eq!(s["Effect"], "Allow");
        let actions: Vec<&str> = match &s["Action"] {
            Json::String(a) => vec![a.as_str()],
            Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
            other => panic!("unexpected Action {other}"),
        };
        for a in &actions {
            assert!(!a.contains('*'), "no wildcard actions: {a}");
        }
        let resources = match &s["Resource"] {
            Json::Array(r) => r.clone(),
            r => vec![r.clone()],
        };
        if actions.iter().any(|a| a.starts_with("dynamodb:")) {
            dynamo.extend(actions.iter().map(|a| a.to_string()));
            assert_eq!(
                resources,
                vec![
                    json!({ "Fn::GetAtt": format!("{table_id}.Arn") }),
                    json!({ "Fn::Sub": format!("${{{table_id}.Arn}}/index/*") }),
                ]
            );
        } else if s["Sid"] == "ImportUploads" {
            assert_eq!(actions, vec!["s3:GetObject", "s3:PutObject"]);
            assert_eq!(resources, vec![uploads_objects()]);
        } else if s["Sid"] == "ImportQueue" {
            assert_eq!(actions, vec!["sqs:SendMessage"]);
            assert_eq!(resources, vec![json!({ "Fn::GetAtt": "ImportQueue.Arn" })]);
        } else if s["Sid"] == "PlanningQueue" {
            assert_eq!(actions, vec!["sqs:SendMessage"]);
            assert_eq!(
                resources,
                vec![json!({ "Fn::GetAtt": "PlanningQueue.Arn" })]
            );
        } else if s["Sid"] == "CampaignSchedules" {
            assert_eq!(
                actions,
                vec!["scheduler:CreateSchedule", "scheduler:DeleteSchedule"]
            );
            assert_eq!(resources, vec![campaign_schedules()]);
        } else if s["Sid"] == "PassSchedulerRole" {
            // Only the campaigns' scheduler role, and only to Scheduler.
            assert_eq!(actions, vec!["iam:PassRole"]);
            assert_eq!(
                resources,
                vec![json!({ "Fn::GetAtt": "CampaignSchedulerRole.Arn" })]
            );
            assert_eq!(
                s["Condition"]["StringEquals"]["iam:PassedToService"],
                "scheduler.amazonaws.com"
            );
        } else if actions.iter().any(|a| a.starts_with("sqs:")) {
            // POST /v1/send enqueues on the high-priority queue, nothing else.
            assert_eq!(actions, vec!["sqs:SendMessage"]);
            assert_eq!(
                resources,
                vec![json!({ "Fn::GetAtt": "PriorityQueue.Arn" })]
            );
        } else if actions.iter().any(|a| a.starts_with("ses:")) {
            // Verifying an SES connection: one read-only list action (no resource scoping).
            assert_eq!(actions, vec!["ses:ListEmailIdentities"]);
            assert_eq!(resources, vec![json!("*")]);
        } else {
            assert_eq!(actions, vec!["secretsmanager:GetSecretValue"]);
            assert_eq!(resources, vec![json!({ "Ref": "MailpilotSecrets" })]);
        }
    }
    let want: BTreeSet<String> = [
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "BatchGetItem",
        "BatchWriteItem",
        "ConditionCheckItem",
    ]
    .iter()
    .map(|a| format!("dynamodb:{a}"))
    .collect();
    assert_eq!(dynamo, want);
}

fn uploads_objects() -> Json {
    json!({ "Fn::Sub": "arn:${AWS::Partition}:s3:::mailpilot-${Stage}-uploads-${AWS::AccountId}/imports/*" })
}

#[test]
fn the_uploads_bucket_is_private_encrypted_expiring_and_notifies_the_import_function() {
    let t = template();
    let b = &t["Resources"]["UploadsBucket"]["Properties"];
    assert_eq!(
        b["BucketName"],
        json!({ "Fn::Sub": "mailpilot-${Stage}-uploads-${AWS::AccountId}" })
    );
    let block = &b["PublicAccessBlockConfiguration"];
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[k], true, "{k}");
    }
    assert_eq!(
        b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
            ["SSEAlgorithm"],
        "AES256"
    );
    let rule = &b["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(rule["Status"], "Enabled");
    assert_eq!(rule["ExpirationInDays"], 7);

    let f = &t["Resources"]["ImportFunction"]["Properties"];
    assert_eq!(f["CodeUri"], "target/lambda/import/");
    assert_eq!(f["Timeout"], 900);
    assert_eq!(
        f["RecursiveLoop"], "Allow",
        "the continuation loop is deliberate"
    );
    let upload = &f["Events"]["Upload"];
    assert_eq!(upload["Type"], "S3");
    assert_eq!(
        upload["Properties"]["Bucket"],
        json!({ "Ref": "UploadsBucket" })
    );
    assert_eq!(
        upload["Properties"]["Filter"]["S3Key"]["Rules"][0]["Value"],
        "imports/"
    );
    let queue = &f["Events"]["Queue"];
    assert_eq!(
        queue["Properties"]["Queue"],
        json!({ "Fn::GetAtt": "ImportQueue.Arn" })
    );
    assert_eq!(
        queue["Properties"]["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    let q = &t["Resources"]["ImportQueue"]["Properties"];
    assert!(q["VisibilityTimeout"].as_i64().unwrap() > 900);
    assert_eq!(
        q["RedrivePolicy"]["deadLetterTargetArn"],
        json!({ "Fn::GetAtt": "ImportDeadLetterQueue.Arn" })
    );
    // Least privilege: its table's items, its bucket's import objects, its queues.
    let statements: Vec<&Json> = f["Policies"][0]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let sids: Vec<&str> = statements
        .iter()
        .filter_map(|s| s["Sid"].as_str())
        .collect();
    assert_eq!(sids, vec!["TableItems", "ImportUploads", "ImportQueue"]);
    assert_eq!(statements[1]["Resource"], uploads_objects());
    assert_eq!(
        statements[1]["Action"],
        json!(["s3:GetObject", "s3:DeleteObject"])
    );
    assert_eq!(statements[2]["Action"], json!(["sqs:SendMessage"]));
}

#[test]
fn the_architecture_parameter_defaults_to_x86_64() {
    let t = template();
    let p = &t["Parameters"]["Architecture"];
    assert_eq!(p["Default"], "x86_64");
    assert_eq!(p["AllowedValues"], json!(["x86_64", "arm64"]));
    assert_eq!(
        t["Globals"]["Function"]["Architectures"],
        json!([{ "Ref": "Architecture" }])
    );
    assert_eq!(
        t["Resources"]["ApiFunction"]["Properties"]["CodeUri"],
        "target/lambda/api/"
    );
}

// ---- delivery ---------------------------------------------------------------------

fn statements(f: &Json) -> Vec<(Vec<String>, Vec<Json>)> {
    f["Properties"]["Policies"]
        .as_array()
        .expect("Policies")
        .iter()
        .flat_map(|p| p["Statement"].as_array().expect("inline statements").iter())
        .map(|s| {
            assert_eq!(s["Effect"], "Allow");
            let actions = match &s["Action"] {
                Json::String(a) => vec![a.clone()],
                Json::Array(a) => a
                    .iter()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect(),
                other => panic!("unexpected Action {other}"),
            };
            for a in &actions {
                assert!(!a.contains('*'), "no wildcard actions: {a}");
            }
            let resources = match &s["Resource"] {
                Json::Array(r) => r.clone(),
                r => vec![r.clone()],
            };
            (actions, resources)
        })
        .collect()
}

#[test]
fn the_send_queues_have_dead_letter_queues_and_outlast_the_sender() {
    use mailpilot_shared::model::message::MAX_ATTEMPTS;
    let t = template();
    let r = &t["Resources"];
    let send_timeout = r["SendFunction"]["Properties"]["Timeout"]
        .as_u64()
        .expect("the send function's timeout");
    for (queue, dlq) in [
        ("SendQueue", "SendDeadLetterQueue"),
        ("PriorityQueue", "PriorityDeadLetterQueue"),
    ] {
        let q = &r[queue];
        assert_eq!(q["Type"], "AWS::SQS::Queue", "{queue}");
        let p = &q["Properties"];
        let visibility = p["VisibilityTimeout"].as_u64().expect("VisibilityTimeout");
        assert!(
            visibility >= 6 * send_timeout,
            "{queue}: visibility {visibility} < 6 x {send_timeout}"
        );
        assert_eq!(
            p["MessageRetentionPeriod"], 1_209_600,
            "{queue} keeps records 14 days"
        );
        let redrive = &p["RedrivePolicy"];
        assert_eq!(
            redrive["deadLetterTargetArn"],
            json!({ "Fn::GetAtt": format!("{dlq}.Arn") })
        );
        let max = redrive["maxReceiveCount"]
            .as_u64()
            .expect("maxReceiveCount");
        assert!(
            max > u64::from(MAX_ATTEMPTS),
            "{queue}: maxReceiveCount {max} must exceed the attempt limit"
        );
        assert_eq!(r[dlq]["Type"], "AWS::SQS::Queue");
        assert_eq!(r[dlq]["Properties"]["MessageRetentionPeriod"], 1_209_600);
    }
}

#[test]
fn the_send_function_reads_every_lane_with_partial_batch_responses() {
    let t = template();
    let f = &t["Resources"]["SendFunction"];
    assert_eq!(f["Properties"]["CodeUri"], "target/lambda/send/");
    let events = f["Properties"]["Events"].as_object().expect("Events");
    let mut queues = BTreeSet::new();
    for (name, e) in events {
        assert_eq!(e["Type"], "SQS", "{name}");
        let p = &e["Properties"];
        queues.insert(
            p["Queue"]["Fn::GetAtt"]
                .as_str()
                .expect("a queue ARN")
                .to_string(),
        );
        assert_eq!(
            p["FunctionResponseTypes"],
            json!(["ReportBatchItemFailures"]),
            "{name}"
        );
        assert!(
            p["BatchSize"]
                .as_u64()
                .is_some_and(|b| (1..=10).contains(&b)),
            "{name}"
        );
        assert!(
            p["ScalingConfig"]["MaximumConcurrency"]
                .as_u64()
                .is_some_and(|c| c >= 2),
            "{name}"
        );
    }
    let want: BTreeSet<String> = [
        "SendQueue",
        "PriorityQueue",
        "SendDeadLetterQueue",
        "PriorityDeadLetterQueue",
    ]
    .iter()
    .map(|q| format!("{q}.Arn"))
    .collect();
    assert_eq!(queues, want);
    let env = &f["Properties"]["Environment"]["Variables"];
    for var in [
        "MAILPILOT_TABLE",
        "MAILPILOT_SECRETS_ARN",
        "MAILPILOT_PUBLIC_URL",
        "MAILPILOT_SEND_QUEUE_URL",
        "MAILPILOT_SEND_QUEUE_ARN",
        "MAILPILOT_PRIORITY_QUEUE_URL",
        "MAILPILOT_PRIORITY_QUEUE_ARN",
        "MAILPILOT_DEAD_LETTER_QUEUE_ARNS",
    ] {
        assert!(!env[var].is_null(), "SendFunction needs {var}");
    }
    let mut saw_ses = false;
    for (actions, resources) in statements(f) {
        if actions.iter().any(|a| a.starts_with("ses:")) {
            saw_ses = true;
            assert_eq!(actions, vec!["ses:SendEmail", "ses:SendRawEmail"]);
            // Only the configured identity, never every identity of the account.
            let arn = resources[0]["Fn::Sub"].as_str().expect("an identity ARN");
            assert!(arn.ends_with(":identity/${SendingIdentity}"), "{arn}");
            assert_eq!(resources.len(), 1);
        }
        if actions.iter().any(|a| a.starts_with("sqs:")) {
            assert_eq!(actions, vec!["sqs:ChangeMessageVisibility"]);
        }
    }
    assert!(saw_ses, "the sender may send through SES");
    assert!(t["Parameters"]["SendingIdentity"].is_object());
}

#[test]
fn the_dispatcher_runs_every_minute_alone_with_a_scoped_role() {
    let t = template();
    let r = &t["Resources"];
    let f = &r["DispatchFunction"];
    assert_eq!(f["Properties"]["CodeUri"], "target/lambda/dispatch/");
    assert_eq!(f["Properties"]["ReservedConcurrentExecutions"], 1);
    for (actions, resources) in statements(f) {
        if actions.iter().any(|a| a.starts_with("sqs:")) {
            assert_eq!(actions, vec!["sqs:SendMessage"]);
            assert_eq!(
                resources,
                vec![
                    json!({ "Fn::GetAtt": "SendQueue.Arn" }),
                    json!({ "Fn::GetAtt": "PriorityQueue.Arn" })
                ]
            );
        } else if actions.iter().any(|a| a.starts_with("secretsmanager:")) {
            // The status poller opens the connections' API keys.
            assert_eq!(actions, vec!["secretsmanager:GetSecretValue"]);
            assert_eq!(resources, vec![json!({ "Ref": "MailpilotSecrets" })]);
        } else {
            assert!(
                actions.iter().all(|a| a.starts_with("dynamodb:")),
                "{actions:?}"
            );
            assert!(!actions.iter().any(|a| a.contains("Batch")), "{actions:?}");
            if actions.iter().any(|a| a.contains("Delete")) {
                // Only the poller's event claims may be deleted.
                assert_eq!(actions, vec!["dynamodb:DeleteItem"]);
            }
        }
    }
    let leading = f["Properties"]["Policies"][0]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["Sid"] == "EventClaims")
        .expect("the event-claims statement");
    assert_eq!(
        leading["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
        json!(["ws#*#pevents"])
    );
    let (_, schedule) = resource(&t, "AWS::Scheduler::Schedule");
    let p = &schedule["Properties"];
    assert_eq!(p["ScheduleExpression"], "rate(1 minute)");
    assert_eq!(
        p["Target"]["Arn"],
        json!({ "Fn::GetAtt": "DispatchFunction.Arn" })
    );
    assert_eq!(
        p["Target"]["RoleArn"],
        json!({ "Fn::GetAtt": "DispatchScheduleRole.Arn" })
    );
    let role = &r["DispatchScheduleRole"]["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "scheduler.amazonaws.com"
    );
    let st = &role["Policies"][0]["PolicyDocument"]["Statement"][0];
    assert_eq!(st["Action"], json!(["lambda:InvokeFunction"]));
    assert_eq!(
        st["Resource"],
        json!({ "Fn::GetAtt": "DispatchFunction.Arn" })
    );
}

// ---- provider events and alarms ---------------------------------------------------

#[test]
fn ses_events_flow_from_the_configuration_set_to_the_webhooks_function() {
    let t = template();
    let r = &t["Resources"];
    let dest = &r["SesEventDestination"]["Properties"];
    assert_eq!(
        dest["ConfigurationSetName"],
        json!({"Ref": "SesConfigurationSet"})
    );
    let types: Vec<&str> = dest["EventDestination"]["MatchingEventTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for t in [
        "send",
        "reject",
        "bounce",
        "complaint",
        "delivery",
        "deliveryDelay",
        "renderingFailure",
    ] {
        assert!(types.contains(&t), "{t} is not published");
    }
    assert!(dest["EventDestination"]["EventBridgeDestination"]["EventBusArn"].is_object());
    let rule = &r["SesEventsRule"]["Properties"];
    assert_eq!(rule["EventPattern"]["source"], json!(["aws.ses"]));
    assert_eq!(
        rule["Targets"][0]["Arn"],
        json!({"Fn::GetAtt": "SesEventsQueue.Arn"})
    );
    // Only the rule may write to the queue.
    let policy = &r["SesEventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(policy["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(
        policy["Condition"]["ArnEquals"]["aws:SourceArn"],
        json!({"Fn::GetAtt": "SesEventsRule.Arn"})
    );
    let q = &r["SesEventsQueue"]["Properties"];
    assert_eq!(
        q["RedrivePolicy"]["deadLetterTargetArn"],
        json!({"Fn::GetAtt": "SesEventsDeadLetterQueue.Arn"})
    );

    let f = &r["WebhooksFunction"];
    let p = &f["Properties"];
    assert_eq!(p["CodeUri"], "target/lambda/webhooks/");
    let http = &p["Events"]["Webhooks"]["Properties"];
    assert_eq!(http["Path"], "/webhooks/{proxy+}");
    assert_eq!(http["Method"], "POST");
    let sqs = &p["Events"]["SesEvents"]["Properties"];
    assert_eq!(sqs["Queue"], json!({"Fn::GetAtt": "SesEventsQueue.Arn"}));
    assert_eq!(
        sqs["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    let visibility = q["VisibilityTimeout"].as_u64().unwrap();
    assert!(visibility >= 6 * p["Timeout"].as_u64().unwrap());
    // Least privilege: its table's items and the secret, nothing else.
    for (actions, resources) in statements(f) {
        for a in &actions {
            assert!(
                a.starts_with("dynamodb:") || a == "secretsmanager:GetSecretValue",
                "unexpected action {a}"
            );
            assert!(
                !matches!(a.as_str(), "dynamodb:Scan" | "dynamodb:DeleteTable"),
                "{a}"
            );
        }
        for res in &resources {
            assert!(
                *res == json!({"Fn::GetAtt": "Table.Arn"})
                    || *res == json!({"Ref": "MailpilotSecrets"}),
                "unexpected resource {res}"
            );
        }
    }
}

#[test]
fn every_queue_has_depth_or_age_alarms_and_the_account_reputation_is_watched() {
    let t = template();
    let r = t["Resources"].as_object().unwrap();
    let alarms: Vec<&Json> = r
        .values()
        .filter(|v| v["Type"] == "AWS::CloudWatch::Alarm")
        .map(|v| &v["Properties"])
        .collect();
    let watched = |metric: &str, queue: &str| {
        alarms.iter().any(|a| {
            a["MetricName"] == metric
                && a["Dimensions"][0]["Value"]
                    == json!({"Fn::GetAtt": format!("{queue}.QueueName")})
                && a["AlarmActions"] == json!([{"Ref": "AlarmTopic"}])
        })
    };
    for (id, q) in r.iter().filter(|(_, v)| v["Type"] == "AWS::SQS::Queue") {
        assert!(
            watched("ApproximateAgeOfOldestMessage", id),
            "{id} has no oldest-message alarm"
        );
        if q["Properties"]["RedrivePolicy"].is_null() {
            // A dead-letter queue: any record in it is worth a look.
            assert!(
                watched("ApproximateNumberOfMessagesVisible", id),
                "{id} has no depth alarm"
            );
        }
    }
    for metric in ["Reputation.BounceRate", "Reputation.ComplaintRate"] {
        assert!(
            alarms
                .iter()
                .any(|a| a["Namespace"] == "AWS/SES" && a["MetricName"] == metric),
            "{metric} is not watched"
        );
    }
}

fn campaign_schedules() -> Json {
    json!({ "Fn::Sub": "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/${CampaignScheduleGroup}/*" })
}

#[test]
fn campaign_planning_has_its_queue_dlq_scheduler_role_and_a_deliberate_loop() {
    let t = template();
    let r = &t["Resources"];
    let q = &r["PlanningQueue"]["Properties"];
    assert_eq!(
        q["RedrivePolicy"]["deadLetterTargetArn"],
        json!({ "Fn::GetAtt": "PlanningDeadLetterQueue.Arn" })
    );
    let f = &r["PlanFunction"];
    let p = &f["Properties"];
    assert_eq!(p["CodeUri"], "target/lambda/dispatch/");
    // The planner queues its own next page: the loop is intended (see the template).
    assert_eq!(p["RecursiveLoop"], "Allow");
    let timeout = p["Timeout"].as_i64().unwrap();
    assert!(q["VisibilityTimeout"].as_i64().unwrap() >= 6 * timeout);
    let ev = &p["Events"]["Planning"]["Properties"];
    assert_eq!(ev["Queue"], json!({ "Fn::GetAtt": "PlanningQueue.Arn" }));
    assert_eq!(
        ev["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    // SQS: send only, to the planning queue (the next page) and the bulk send queue
    // (planned messages due at once), nothing else.
    let mut sqs_targets = vec![];
    for (actions, resources) in statements(f) {
        if actions.iter().any(|a| a.starts_with("sqs:")) {
            assert_eq!(actions, vec!["sqs:SendMessage"]);
            sqs_targets.extend(resources);
        } else if actions.iter().any(|a| a.starts_with("scheduler:")) {
            assert_eq!(actions, vec!["scheduler:DeleteSchedule"]);
            assert_eq!(resources, vec![campaign_schedules()]);
        } else if actions.iter().any(|a| a.starts_with("secretsmanager:")) {
            assert_eq!(resources, vec![json!({ "Ref": "MailpilotSecrets" })]);
        } else {
            assert!(
                actions.iter().all(|a| a.starts_with("dynamodb:")),
                "{actions:?}"
            );
        }
    }
    sqs_targets.sort_by_key(|v| v.to_string());
    assert_eq!(
        sqs_targets,
        vec![
            json!({ "Fn::GetAtt": "PlanningQueue.Arn" }),
            json!({ "Fn::GetAtt": "SendQueue.Arn" }),
        ]
    );
    // Scheduler assumes a role that may only send to the planning queue.
    let role = &r["CampaignSchedulerRole"]["Properties"];
    let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"], "scheduler.amazonaws.com");
    assert_eq!(
        trust["Condition"]["StringEquals"]["aws:SourceAccount"],
        json!({ "Ref": "AWS::AccountId" })
    );
    let st = &role["Policies"][0]["PolicyDocument"]["Statement"];
    assert_eq!(st.as_array().unwrap().len(), 1);
    assert_eq!(st[0]["Action"], json!(["sqs:SendMessage"]));
    assert_eq!(
        st[0]["Resource"],
        json!({ "Fn::GetAtt": "PlanningQueue.Arn" })
    );
    // The API knows where campaigns go.
    let env = &r["ApiFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        env["MAILPILOT_PLANNING_QUEUE_URL"],
        json!({ "Ref": "PlanningQueue" })
    );
    assert_eq!(
        env["MAILPILOT_SCHEDULER_ROLE_ARN"],
        json!({ "Fn::GetAtt": "CampaignSchedulerRole.Arn" })
    );
}

#[test]
fn every_function_is_packaged() {
    let t = template();
    let script = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/package.sh"),
    )
    .expect("scripts/package.sh");
    for (id, r) in t["Resources"].as_object().expect("Resources") {
        if r["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let uri = r["Properties"]["CodeUri"].as_str().expect("CodeUri");
        let name = uri
            .trim_start_matches("target/lambda/")
            .trim_end_matches('/');
        assert!(
            script.contains(&format!(" {name}")) || script.contains(&format!("({name}")),
            "{id} ({name}) is not built by scripts/package.sh"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Against the AWS emulator (MAILPILOT_TEST_AWS_ENDPOINT; scripts/test.sh starts moto).

fn emulator_client() -> Client {
    mailpilot_tests::aws::dynamo_client()
}

fn unique_table(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn create_table_builds_the_defined_table_on_the_emulator() {
    let client = emulator_client();
    let name = unique_table("template");
    create_table(&client, &name).await.expect("table created");
    // A second call finds it and succeeds (idempotent set-up).
    create_table(&client, &name).await.expect("table exists");

    let table = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let keys: Vec<(String, KeyType)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (TABLE.hash_key.to_owned(), KeyType::Hash),
            (TABLE.range_key.to_owned(), KeyType::Range)
        ]
    );
    let gsis = table.global_secondary_indexes();
    assert_eq!(gsis.len(), TABLE.indexes.len());
    assert_eq!(gsis[0].index_name(), Some("gsi1"));
    assert_eq!(
        gsis[0].projection().and_then(|p| p.projection_type()),
        Some(&ProjectionType::All)
    );

    let ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .expect("describe ttl");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));

    let backups = client
        .describe_continuous_backups()
        .table_name(&name)
        .send()
        .await
        .expect("describe backups");
    let pitr = backups
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status());
    assert_eq!(pitr, Some(&PointInTimeRecoveryStatus::Enabled));

    client
        .delete_table()
        .table_name(&name)
        .send()
        .await
        .expect("delete");
}

/// A smoke test of the DynamoDB engine on the emulator; the conformance suite
/// (`conformance_dynamodb`) is the full proof.
#[tokio::test]
async fn dynamo_store_smoke_on_the_emulator() {
    let client = emulator_client();
    let name = unique_table("smoke");
    create_table(&client, &name).await.expect("table created");
    let store = DynamoStore::new(client.clone(), &name);

    let item = |pk: &str, sk: &str| {
        [
            ("pk".to_owned(), val::s(pk)),
            ("sk".to_owned(), val::s(sk)),
            ("gsi1pk".to_owned(), val::s(format!("g#{pk}"))),
            ("gsi1sk".to_owned(), val::s(sk)),
        ]
        .into_iter()
        .collect()
    };
    for i in 0..5 {
        store
            .put(item("w1", &format!("c#{i}")), Some(Cond::ItemNotExists))
            .await
            .expect("put");
    }
    let again = store
        .put(item("w1", "c#0"), Some(Cond::ItemNotExists))
        .await;
    assert!(matches!(again, Err(StoreError::ConditionFailed)));

    let first = store
        .query(Query::partition("w1").limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    let cursor = first.cursor.clone().expect("more pages");
    let second = store
        .query(
            Query::partition("w1")
                .limit(10)
                .cursor(Some(cursor.clone())),
        )
        .await
        .expect("page 2");
    assert_eq!(second.items.len(), 3);
    let elsewhere = store
        .query(Query::partition("w2").cursor(Some(cursor)))
        .await;
    assert!(matches!(elsewhere, Err(StoreError::BadCursor)));

    let gsi = store
        .query(
            Query::index(Index::Gsi1, "g#w1")
                .sk(SortKeyCond::BeginsWith("c#".into()))
                .backward(),
        )
        .await
        .expect("gsi");
    assert_eq!(
        gsi.items.first().and_then(|i| i.str_attr("sk")),
        Some("c#4")
    );

    let updated = store
        .update(
            &Key::new("w1", "counter"),
            Update::new().add("n", 2).set("name", val::s("x")),
            None,
        )
        .await
        .expect("update");
    assert_eq!(updated.num_attr("n"), Some(2));

    let tx = store
        .transact(vec![
            TxAction::Put {
                item: item("w1", "c#9"),
                cond: Some(Cond::ItemNotExists),
            },
            TxAction::Check {
                key: Key::new("w1", "counter"),
                cond: Cond::eq("n", val::n(3)),
            },
        ])
        .await;
    match tx {
        Err(StoreError::TransactionCanceled { failed }) => assert_eq!(failed, vec![false, true]),
        other => panic!("expected a cancelled transaction, got {other:?}"),
    }
    assert!(
        store
            .get(&Key::new("w1", "c#9"))
            .await
            .expect("get")
            .is_none()
    );

    let mut expired = item("w1", "old");
    expired.insert("ttl".to_owned(), val::n(1_000));
    store.put(expired.clone(), None).await.expect("put expired");
    assert!(
        store
            .get(&Key::new("w1", "old"))
            .await
            .expect("get")
            .is_none()
    );
    // An expired item counts as absent for ItemNotExists.
    store
        .put(expired, Some(Cond::ItemNotExists))
        .await
        .expect("put over an expired item");

    assert_eq!(store.writes(), 5 + 1 + 1 + 1);
    client
        .delete_table()
        .table_name(&name)
        .send()
        .await
        .expect("delete");
}
