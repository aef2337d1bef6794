//! The real event path, S3 -> EventBridge -> Step Functions, which moto
//! cannot run (its rules cannot target a state machine, and its patterns
//! have no `wildcard`), on LocalStack's open-source core on loopback
//! (`scripts/localstack.sh`, started by `scripts/test.sh`, which exports
//! `P1_LOCALSTACK_URL`; `../shared/localstack.md` says where it differs from
//! AWS). Everything the workflow touches is LocalStack's: the bucket with its
//! EventBridge notifications, the new-data rule with the template's own
//! pattern, the router and the retraining workflow built from `infra/`,
//! the runner's queues and its Secrets Manager; the test plays Lambda's SQS
//! event source mapping for the retrain runner, and the vendor is the
//! stand-in.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Harness, data, run, sha256_hex, unique};

const TEMPLATE: &str = include_str!("../../infra/template.yaml");
const WORKFLOW: &str = include_str!("../../infra/retrain-runner.asl.json");
const ROUTER: &str = include_str!("../../infra/retrain-router.asl.json");
const ROLE: &str = "arn:aws:iam::000000000000:role/p1-test";

fn endpoint() -> String {
    std::env::var("P1_LOCALSTACK_URL").unwrap_or_else(|_| {
        panic!("P1_LOCALSTACK_URL is not set: run the integration tests with scripts/test.sh, which starts LocalStack (scripts/localstack.sh)")
    })
}

/// The template's new-data rule's key matchers, as written there (the 16
/// `wildcard`s), for the data prefix `retrain/`.
fn template_key_patterns() -> Vec<Value> {
    let rule = &TEMPLATE[TEMPLATE
        .find("  RetrainDataCreatedRule:")
        .expect("the template has the new-data rule")..];
    let rule = &rule[..rule.find("\n      Targets:").expect("the rule's targets")];
    let patterns: Vec<Value> = rule
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- wildcard: !Sub "))
        .map(|w| json!({"wildcard": w.replace("${RetrainDataPrefix}", "retrain/")}))
        .collect();
    assert_eq!(patterns.len(), 16, "the rule's matchers: {rule}");
    patterns
}

/// Runs a test on a runtime whose threads have 16 MiB stacks: these tests
/// hold many AWS SDK futures at once, more than a debug build's 2 MiB test
/// thread takes.
fn on_a_large_stack(test: impl std::future::Future<Output = ()> + Send + 'static) {
    const STACK: usize = 16 * 1024 * 1024;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .unwrap()
                .block_on(test)
        })
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

struct Stack {
    h: Harness,
    sm: aws_sdk_secretsmanager::Client,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    sfn: aws_sdk_sfn::Client,
    events: aws_sdk_eventbridge::Client,
    runner: p1_key_broker::RetrainApp,
    bucket: String,
    model: String,
    workflow: String,
    router: String,
    queues: [String; 2],
}

impl Stack {
    /// A stack on LocalStack: the tasks' heartbeat limit is `heartbeat`
    /// seconds (their time limit ten times that).
    async fn new(heartbeat: u32) -> Stack {
        let h = Harness::new().await;
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await;
        let sm = aws_sdk_secretsmanager::Client::new(&aws);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let sfn = aws_sdk_sfn::Client::new(&aws);
        let events = aws_sdk_eventbridge::Client::new(&aws);

        // The runner: its secret key in LocalStack's Secrets Manager.
        let sk = h.secret_key("");
        let secret_id = h.name("secret-key");
        sm.create_secret()
            .name(&secret_id)
            .secret_string(&sk)
            .send()
            .await
            .expect("LocalStack answers (scripts/localstack.sh start)");
        let vars = std::collections::HashMap::from([
            ("P1_SECRET_KEY_SECRET_ID", secret_id),
            ("P1_API_BASE_URL", h.standin.clone()),
            ("P1_RETRAIN_SECRET_PREFIX", h.name("retrain/")),
            ("P1_TRAIN_SECRET_ID", h.name("train")),
            ("P1_DEPLOY_SECRET_ID", h.name("deploy")),
        ]);
        let config =
            p1_key_broker::Config::from_lookup(|n| Ok(vars.get(n).cloned())).expect("config");
        let runner = p1_key_broker::RetrainApp::with_aws(config, &aws).expect("runner");

        let model = h.model("");
        h.control("retrain", json!({"model_id": model, "running_polls": 0}))
            .await;
        let bucket = format!("p1-ls-{}", h.id);
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        crate::common::send_events_to_eventbridge(&s3, &bucket).await;

        let mut queues = Vec::new();
        for name in ["runner", "polls"] {
            let url = sqs
                .create_queue()
                .queue_name(format!("p1-{name}-{}", h.id))
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    "30",
                )
                .send()
                .await
                .unwrap()
                .queue_url()
                .unwrap()
                .to_string();
            queues.push(url);
        }
        let queues: [String; 2] = queues.try_into().unwrap();
        let definition = WORKFLOW
            .replace("${Partition}", "aws")
            .replace("${RunnerQueueUrl}", &queues[0])
            .replace("${RunnerPollQueueUrl}", &queues[1])
            .replace("${PollIntervalSeconds}", "1")
            .replace("${TimeLimitSeconds}", "600")
            .replace("${ResultsPrefix}", "retrain-results/")
            .replace("${SwitchModel}", "false")
            .replace("${TaskTimeoutSeconds}", &(heartbeat * 10).to_string())
            .replace("${TaskHeartbeatSeconds}", &heartbeat.to_string());
        assert!(!definition.contains("${"), "a placeholder is left");
        let workflow = sfn
            .create_state_machine()
            .name(format!("p1-retraining-{}", h.id))
            .definition(definition)
            .role_arn(ROLE)
            .send()
            .await
            .expect("the workflow from infra/")
            .state_machine_arn()
            .to_string();
        let router_definition = ROUTER
            .replace("${Partition}", "aws")
            .replace("${WorkflowArn}", &workflow);
        let router = sfn
            .create_state_machine()
            .name(format!("p1-router-{}", h.id))
            .r#type(aws_sdk_sfn::types::StateMachineType::Express)
            .definition(router_definition)
            .role_arn(ROLE)
            .send()
            .await
            .expect("the router from infra/")
            .state_machine_arn()
            .to_string();

        // The template's rule: its pattern, this bucket, the router.
        let rule = format!("p1-new-data-{}", h.id);
        events
            .put_rule()
            .name(&rule)
            .event_pattern(
                json!({
                    "source": ["aws.s3"],
                    "detail-type": ["Object Created"],
                    "detail": {"bucket": {"name": [bucket]}, "object": {"key": template_key_patterns()}}
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        events
            .put_targets()
            .rule(&rule)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("router")
                    .arn(&router)
                    .role_arn(ROLE)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        Stack {
            h,
            sm,
            s3,
            sqs,
            sfn,
            events,
            runner,
            bucket,
            model,
            workflow,
            router,
            queues,
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }

    /// Executions of a state machine: (name, input).
    async fn executions(&self, state_machine: &str) -> Vec<(String, Value)> {
        let listed = self
            .sfn
            .list_executions()
            .state_machine_arn(state_machine)
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for e in listed.executions() {
            let d = self
                .sfn
                .describe_execution()
                .execution_arn(e.execution_arn())
                .send()
                .await
                .unwrap();
            let input: Value = serde_json::from_str(d.input().unwrap_or("null")).unwrap();
            out.push((e.name().to_string(), input));
        }
        out
    }

    /// Waits until the workflow has `n` executions.
    async fn wait_for_executions(&self, n: usize) -> Vec<(String, Value)> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.executions(&self.workflow).await;
            if found.len() >= n || Instant::now() > until {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Plays the runner's SQS event source mappings until every execution
    /// of the workflow has ended; their final descriptions.
    async fn drive(
        &self,
    ) -> Vec<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput> {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let listed = self
                .sfn
                .list_executions()
                .state_machine_arn(&self.workflow)
                .send()
                .await
                .unwrap();
            let mut ended = Vec::new();
            for e in listed.executions() {
                let d = self
                    .sfn
                    .describe_execution()
                    .execution_arn(e.execution_arn())
                    .send()
                    .await
                    .unwrap();
                if d.status() != &aws_sdk_sfn::types::ExecutionStatus::Running {
                    ended.push(d);
                }
            }
            if ended.len() == listed.executions().len() {
                return ended;
            }
            if Instant::now() > until {
                let mut running = Vec::new();
                for e in listed.executions() {
                    let history = self
                        .sfn
                        .get_execution_history()
                        .execution_arn(e.execution_arn())
                        .reverse_order(true)
                        .max_results(3)
                        .send()
                        .await
                        .unwrap();
                    running.push(format!(
                        "{} {:?}: {:?}",
                        e.name(),
                        e.status(),
                        history
                            .events()
                            .iter()
                            .map(|ev| ev.r#type().clone())
                            .collect::<Vec<_>>()
                    ));
                }
                panic!("the executions did not end: {running:#?}");
            }
            let mut served = false;
            for queue in &self.queues {
                let out = self
                    .sqs
                    .receive_message()
                    .queue_url(queue)
                    .max_number_of_messages(1)
                    .send()
                    .await
                    .unwrap();
                let Some(message) = out.messages().first() else {
                    continue;
                };
                served = true;
                // Fed as soon as it is received, as a fast event source
                // mapping would: LocalStack may not know the task yet, and
                // the runner asks again until it does (SPEC section 10, "a
                // token not known yet is not a task gone").
                let id = message.message_id().unwrap().to_string();
                let answer = run(
                    &self.runner,
                    json!({"Records": [{"messageId": id, "eventSource": "aws:sqs", "body": message.body().unwrap()}]}),
                )
                .await
                .expect("the runner answers an SQS batch");
                if answer == json!({"batchItemFailures": []}) {
                    self.sqs
                        .delete_message()
                        .queue_url(queue)
                        .receipt_handle(message.receipt_handle().unwrap())
                        .send()
                        .await
                        .unwrap();
                }
            }
            if !served {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// New objects with plain, spaced, `+` and Japanese names start one
/// execution each, through the template's rule and the router, with the key
/// as S3 wrote it; a `.txt`, a folder marker and a file outside a model's
/// folder start none. Each object becomes one vendor job with its own
/// bytes and the vendor gets its decoded name; a duplicate delivery of an
/// event (the router started again with it) starts nothing more.
#[test]
fn new_data_starts_one_retraining_per_object_through_the_real_event_path() {
    on_a_large_stack(one_retraining_per_object());
}

async fn one_retraining_per_object() {
    let s = Stack::new(300).await;
    let names = ["plain.csv", "red flower.csv", "a+b.CSV", "売上 データ.zip"];
    let mut bodies = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let body = data(1000 + i, 50 + i as u64);
        s.put(&format!("retrain/{}/{name}", s.model), body.clone())
            .await;
        bodies.push(body);
    }
    for ignored in [
        format!("retrain/{}/notes.txt", s.model),
        format!("retrain/{}/", s.model),
        "retrain/loose.csv".to_string(),
        format!("elsewhere/{}/x.csv", s.model),
    ] {
        s.put(&ignored, b"x".to_vec()).await;
    }
    let started = s.wait_for_executions(names.len()).await;
    // Give a wrongly matched object time to start something too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = if started.len() == names.len() {
        s.executions(&s.workflow).await
    } else {
        started
    };
    let mut keys: Vec<String> = started
        .iter()
        .map(|(_, input)| {
            input["detail"]["object"]["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys.len(),
        names.len(),
        "one execution per data file: {keys:?}"
    );
    for (name, _) in &started {
        assert!(name.starts_with("object-") && name.len() == 71, "{name}");
    }
    // The keys as S3 wrote them in its events (LocalStack: %-encoded, a
    // space as %20, a + as %2B).
    for key in &keys {
        assert!(!key.contains(' '), "{key}");
    }

    let ended = s.drive().await;
    for d in &ended {
        assert_eq!(
            d.status(),
            &aws_sdk_sfn::types::ExecutionStatus::Succeeded,
            "{:?} {:?}",
            d.error(),
            d.cause()
        );
    }
    let jobs = s.h.jobs(&s.model).await;
    assert_eq!(
        jobs.len(),
        names.len(),
        "one vendor job per object: {jobs:?}"
    );
    for (name, body) in names.iter().zip(&bodies) {
        let job = jobs
            .iter()
            .find(|j| j["filename"] == *name)
            .unwrap_or_else(|| panic!("no job for {name}: {jobs:?}"));
        assert_eq!(job["upload"]["sha256"], sha256_hex(body), "{name}");
        assert_eq!(job["upload_puts"], 1, "{name}");
    }

    // A duplicate delivery of one event: the router is started again with
    // it, beside an event for an object it has not seen (another ETag),
    // which shows that the router runs. Only the new one starts anything.
    let (_, event) = &started[0];
    let mut unseen = event.clone();
    unseen["detail"]["object"]["etag"] = json!("0123456789abcdef0123456789abcdef");
    for input in [event, &unseen] {
        s.sfn
            .start_execution()
            .state_machine_arn(&s.router)
            .name(unique())
            .input(input.to_string())
            .send()
            .await
            .unwrap();
    }
    let now = s.wait_for_executions(names.len() + 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = if now.len() == names.len() + 1 {
        s.executions(&s.workflow).await
    } else {
        now
    };
    assert_eq!(now.len(), names.len() + 1, "the unseen event only");
    s.drive().await;
    assert_eq!(s.h.jobs(&s.model).await.len(), names.len(), "no second job");
    // And the same event straight into the workflow (a rule of one's own,
    // a start by hand): a second execution, but its start answers the
    // recorded job.
    s.sfn
        .start_execution()
        .state_machine_arn(&s.workflow)
        .name(unique())
        .input(event.to_string())
        .send()
        .await
        .unwrap();
    let ended = s.drive().await;
    assert_eq!(ended.len(), names.len() + 2);
    assert_eq!(s.h.jobs(&s.model).await.len(), names.len(), "no second job");
}

/// An upload slower than the tasks' heartbeat limit: the runner's
/// heartbeats keep its task alive (LocalStack enforces HeartbeatSeconds;
/// moto does not), and the execution succeeds with one job.
#[test]
fn a_slow_upload_keeps_its_task_alive_with_heartbeats() {
    on_a_large_stack(slow_upload_with_heartbeats());
}

async fn slow_upload_with_heartbeats() {
    let s = Stack::new(12).await;
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "upload", "responses": [{"delay_ms": 20_000, "accept": true}]}),
    )
    .await;
    s.put(&format!("retrain/{}/slow.csv", s.model), data(5000, 60))
        .await;
    let started = s.wait_for_executions(1).await;
    assert_eq!(started.len(), 1);
    let ended = s.drive().await;
    assert_eq!(
        ended[0].status(),
        &aws_sdk_sfn::types::ExecutionStatus::Succeeded,
        "{:?} {:?}",
        ended[0].error(),
        ended[0].cause()
    );
    let jobs = s.h.jobs(&s.model).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["upload_puts"], 1);
    // Not rescued by a retry: the task never timed out.
    let history = s
        .sfn
        .get_execution_history()
        .execution_arn(ended[0].execution_arn())
        .max_results(1000)
        .send()
        .await
        .unwrap();
    let types: Vec<_> = history
        .events()
        .iter()
        .map(|e| e.r#type().clone())
        .collect();
    let timeline: Vec<String> = history
        .events()
        .iter()
        .map(|e| format!("{} {:?}", e.timestamp().secs() % 1000, e.r#type()))
        .collect();
    assert!(
        !types.contains(&aws_sdk_sfn::types::HistoryEventType::TaskTimedOut),
        "{timeline:#?}"
    );
    let starts = types
        .iter()
        .filter(|t| **t == aws_sdk_sfn::types::HistoryEventType::TaskScheduled)
        .count();
    assert_eq!(
        starts, 3,
        "start, status, save_results, each once: {types:?}"
    );
    let _ = (&s.sm, &s.events);
}
