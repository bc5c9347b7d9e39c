//! The planning entry point against the AWS emulator (moto: DynamoDB, SQS, EventBridge
//! Scheduler): a scheduled launch creates the one-time `at()` schedule targeting the
//! planning queue; the schedule's delivery (the sample SQS event with the schedule's
//! input as body; moto never fires schedules) is fed to the handler twice and once after
//! a cancel: nothing is planned twice, nothing after the cancel.

use std::sync::Arc;

use chrono::{Duration, Utc};
use mailpilot_shared::adapters::aws::queue::SqsQueue;
use mailpilot_shared::adapters::aws::scheduler::{EventBridgeScheduler, at_expression};
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::adapters::mail::testing::NullProvider;
use mailpilot_shared::mime::Mailbox;
use mailpilot_shared::model::campaign::CampaignState;
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::campaigns::{
    self, CreateCampaign, LaunchDeps, LaunchRequest, PlanTask,
};
use mailpilot_shared::usecases::planner::PlannerDeps;
use mailpilot_shared::usecases::send::{Route, StaticDirectory};
use mailpilot_shared::usecases::{contacts, lists, workspaces};

fn event(name: &str) -> serde_json::Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The sample planning event carrying `body` (what SQS hands the function when the
/// schedule delivered its input to the queue).
fn delivery(body: &str) -> serde_json::Value {
    let mut e = event("sqs-planning.json");
    e["Records"][0]["body"] = serde_json::Value::String(body.to_string());
    e
}

fn scheduler_client() -> aws_sdk_scheduler::Client {
    let config = aws_sdk_scheduler::Config::builder()
        .behavior_version(aws_sdk_scheduler::config::BehaviorVersion::latest())
        .region(aws_sdk_scheduler::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_scheduler::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(mailpilot_tests::aws::endpoint())
        .build();
    aws_sdk_scheduler::Client::from_conf(config)
}

struct Env {
    store: Arc<dyn Store>,
    queue: SqsQueue,
    /// The bulk send queue (planned messages due at once go straight to it).
    send: SqsQueue,
    scheduler: EventBridgeScheduler,
    client: aws_sdk_scheduler::Client,
    group: String,
    queue_arn: String,
    role_arn: String,
    directory: StaticDirectory,
    clock: ManualClock,
    ws: String,
    list: String,
}

impl Env {
    async fn new() -> Env {
        let suffix = Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let client = mailpilot_tests::aws::dynamo_client();
        let table = format!("planning-{suffix}");
        create_table(&client, &table).await.expect("create table");
        let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client, table));
        let sqs = mailpilot_tests::aws::sqs_client();
        let send_url = sqs
            .create_queue()
            .queue_name(format!("send-{suffix}"))
            .send()
            .await
            .expect("create send queue")
            .queue_url()
            .expect("send queue url")
            .to_string();
        let url = sqs
            .create_queue()
            .queue_name(format!("planning-{suffix}"))
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .unwrap()
            .to_string();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        let queue_arn = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .expect("QueueArn")
            .clone();
        let client = scheduler_client();
        let group = format!("campaigns-{suffix}");
        client
            .create_schedule_group()
            .name(&group)
            .send()
            .await
            .expect("create schedule group");
        let role_arn =
            "arn:aws:iam::123456789012:role/mailpilot-test-campaign-scheduler".to_string();
        let created = workspaces::create_workspace(
            store.as_ref(),
            workspaces::CreateWorkspace { name: "W".into() },
        )
        .await
        .unwrap();
        let ws = created.workspace_id;
        let directory = StaticDirectory::default();
        directory.insert(
            &ws,
            Route {
                sender_id: "snd_a".into(),
                from: Mailbox::new(None, "news@sender.example"),
                reply_to: None,
                connection_id: "conn".into(),
                provider: NullProvider::new(),
                rate_per_sec: None,
                sender_tz: chrono_tz::UTC,
                window: None,
                sender_cap: None,
                workspace_cap: None,
                paused: false,
            },
        );
        let mut ids = vec![];
        for i in 0..4 {
            let c = contacts::create(
                store.as_ref(),
                &ws,
                contacts::ContactInput {
                    email: Some(format!("p{i}@example.com")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            ids.push(c.id);
        }
        let l = lists::create(
            store.as_ref(),
            &ws,
            lists::CreateList {
                name: "L".into(),
                description: None,
                double_opt_in: false,
            },
        )
        .await
        .unwrap();
        lists::add_members(
            store.as_ref(),
            &ws,
            &l.id,
            lists::MembersChange { contact_ids: ids },
        )
        .await
        .unwrap();
        Env {
            scheduler: EventBridgeScheduler::new(client.clone(), &group, &queue_arn, &role_arn),
            queue: SqsQueue::new(sqs.clone(), url),
            send: SqsQueue::new(sqs, send_url),
            store,
            client,
            group,
            queue_arn,
            role_arn,
            directory,
            clock: ManualClock::new(Utc::now()),
            ws,
            list: l.id,
        }
    }

    fn launch_deps(&self) -> LaunchDeps<'_> {
        LaunchDeps {
            store: self.store.as_ref(),
            planning: &self.queue,
            scheduler: &self.scheduler,
            now: self.clock.now(),
        }
    }

    fn planner(&self) -> PlannerDeps<'_> {
        PlannerDeps {
            store: self.store.as_ref(),
            directory: &self.directory,
            planning: &self.queue,
            send: &self.send,
            scheduler: &self.scheduler,
            clock: &self.clock,
        }
    }

    async fn campaign(&self) -> String {
        campaigns::create(
            self.store.as_ref(),
            &self.ws,
            CreateCampaign {
                name: "Spring".into(),
                sender_id: Some("snd_a".into()),
                sender_ids: None,
                list_ids: vec![self.list.clone()],
                exclude_list_ids: None,
                template_id: None,
                template_version: None,
                subject: Some("Hello".into()),
                html: None,
                text: Some("Hi".into()),
                tracking: Some(false),
                scheduled_at: None,
            },
        )
        .await
        .unwrap()
        .id
    }

    async fn messages(&self, id: &str) -> i64 {
        let c = campaigns::get(self.store.as_ref(), &self.ws, id)
            .await
            .unwrap();
        c.runs.first().map_or(0, |r| r.counts.messages)
    }
}

#[tokio::test]
async fn a_scheduled_launch_creates_an_at_schedule_planned_once_and_never_after_cancel() {
    let e = Env::new().await;
    let id = e.campaign().await;
    let at = e.clock.now() + Duration::hours(2);
    let c = campaigns::launch(&e.launch_deps(), &e.ws, &id, LaunchRequest { at: Some(at) })
        .await
        .unwrap();
    assert_eq!(c.state, CampaignState::Scheduled);
    let run = c.run_id.clone().unwrap();

    // The schedule: a one-time at() in UTC on the planning queue, deleted after it ran.
    let name = campaigns::schedule_name(&run);
    let s = e
        .client
        .get_schedule()
        .name(&name)
        .group_name(&e.group)
        .send()
        .await
        .expect("the launch created the schedule");
    assert_eq!(s.name(), Some(name.as_str()));
    assert_eq!(s.schedule_expression(), Some(at_expression(at).as_str()));
    assert!(s.schedule_expression().unwrap().starts_with("at(20"));
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        s.action_after_completion(),
        Some(&aws_sdk_scheduler::types::ActionAfterCompletion::Delete)
    );
    let target = s.target().expect("target");
    assert_eq!(target.arn(), e.queue_arn);
    assert_eq!(target.role_arn(), e.role_arn);
    let input = target.input().expect("input").to_string();
    let task: PlanTask = serde_json::from_str(&input).unwrap();
    assert_eq!(
        task,
        PlanTask {
            ws: e.ws.clone(),
            campaign: id.clone(),
            run: run.clone(),
            page: 0,
            fire: true,
            sweep: None,
        }
    );

    // Delivered twice (at-least-once): planned once.
    let r = dispatch::plan(delivery(&input), &e.planner()).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(e.messages(&id).await, 4);
    let c = campaigns::get(e.store.as_ref(), &e.ws, &id).await.unwrap();
    assert!(c.runs[0].planning_done, "{c:?}");
    let r = dispatch::plan(delivery(&input), &e.planner()).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(
        e.messages(&id).await,
        4,
        "the second delivery plans nothing"
    );

    // Another run scheduled, then cancelled: the schedule goes, its event plans nothing.
    let id2 = e.campaign().await;
    let c2 = campaigns::launch(
        &e.launch_deps(),
        &e.ws,
        &id2,
        LaunchRequest {
            at: Some(e.clock.now() + Duration::hours(1)),
        },
    )
    .await
    .unwrap();
    let name2 = campaigns::schedule_name(c2.run_id.as_ref().unwrap());
    let s2 = e
        .client
        .get_schedule()
        .name(&name2)
        .group_name(&e.group)
        .send()
        .await
        .expect("second schedule");
    let input2 = s2.target().unwrap().input().unwrap().to_string();
    campaigns::cancel(&e.launch_deps(), &e.ws, &id2)
        .await
        .unwrap();
    let gone = e
        .client
        .get_schedule()
        .name(&name2)
        .group_name(&e.group)
        .send()
        .await;
    assert!(
        gone.as_ref()
            .err()
            .and_then(|err| err.as_service_error())
            .is_some_and(|s| s.is_resource_not_found_exception()),
        "cancel deletes the schedule: {gone:?}"
    );
    let r = dispatch::plan(delivery(&input2), &e.planner()).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(e.messages(&id2).await, 0, "nothing planned after cancel");
    let c2 = campaigns::get(e.store.as_ref(), &e.ws, &id2).await.unwrap();
    assert_eq!(c2.state, CampaignState::Cancelled);
    // Deleting a schedule that is gone is fine.
    mailpilot_shared::ports::scheduler::Scheduler::delete(&e.scheduler, &name2)
        .await
        .unwrap();
}

#[test]
fn the_sample_planning_event_is_an_sqs_batch_of_plan_tasks() {
    let e = event("sqs-planning.json");
    assert!(dispatch::is_sqs(&e));
    assert!(!dispatch::is_sqs(&event("scheduler-dispatch.json")));
    let body = e["Records"][0]["body"].as_str().unwrap();
    let task: PlanTask = serde_json::from_str(body).unwrap();
    assert!(task.fire);
}
