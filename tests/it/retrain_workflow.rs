//! The retraining workflow end to end, on moto: the real state machine
//! definition from `infra/retrain-runner.asl.json` executed by moto's Step
//! Functions, its tasks carried over SQS with task tokens to the retrain
//! runner (the test plays Lambda's SQS event source mapping), the data and
//! results in moto's S3, keys in moto's Secrets Manager, and the vendor
//! stand-in's retraining API.
//!
//! The execution input is the event S3 itself sent: the bucket has
//! EventBridge notifications on, and a rule with the template's pattern
//! catches the `Object Created` event into a queue, from which the test
//! starts the execution (moto's EventBridge cannot target Step Functions).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Harness, data, run, sha256_hex};

const POLL_INTERVAL_SECONDS: u32 = 1;
/// The tasks' time limits for these tests (the template derives them from
/// the runner's timeout and its queues'; infra/tests checks that).
const TASK_TIMEOUT_SECONDS: u32 = 120;
const TASK_HEARTBEAT_SECONDS: u32 = 60;

struct Workflow {
    h: Harness,
    sk: String,
    app: p1_key_broker::RetrainApp,
    bucket: String,
    model: String,
    state_machine: String,
    /// The runner's queues (the state machine's tasks): transfers, and
    /// status polls and switches.
    runner_queues: [String; 2],
    /// Where the test's EventBridge rule puts S3's events.
    events_queue: String,
}

/// The definition as SAM deploys it, with the test's substitutions.
fn definition(runner_queues: &[String; 2], time_limit_seconds: u32, switch_model: bool) -> String {
    let path = format!(
        "{}/infra/retrain-runner.asl.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text = text
        .replace("${Partition}", "aws")
        .replace("${RunnerQueueUrl}", &runner_queues[0])
        .replace("${RunnerPollQueueUrl}", &runner_queues[1])
        .replace("${PollIntervalSeconds}", &POLL_INTERVAL_SECONDS.to_string())
        .replace("${TimeLimitSeconds}", &time_limit_seconds.to_string())
        .replace("${ResultsPrefix}", "retrain-results/")
        .replace("${SwitchModel}", &switch_model.to_string())
        .replace("${TaskTimeoutSeconds}", &TASK_TIMEOUT_SECONDS.to_string())
        .replace(
            "${TaskHeartbeatSeconds}",
            &TASK_HEARTBEAT_SECONDS.to_string(),
        );
    assert!(!text.contains("${"), "a placeholder is left: {text}");
    text
}

async fn workflow(settings: Value, time_limit_seconds: u32, switch_model: bool) -> Workflow {
    workflow_with(settings, time_limit_seconds, switch_model, 30).await
}

/// The same with the runner queues' visibility timeout (after which a
/// message whose invocation failed comes back).
async fn workflow_with(
    settings: Value,
    time_limit_seconds: u32,
    switch_model: bool,
    visibility_seconds: u32,
) -> Workflow {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.runner(&sk, &[]).await;
    let bucket = h.create_bucket().await;
    let model = h.model("");
    let mut settings = settings;
    settings["model_id"] = json!(model);
    h.control("retrain", settings).await;

    let runner_queues = [
        h.create_queue("p1-retrain-runner").await,
        h.create_queue("p1-retrain-polls").await,
    ];
    for queue in &runner_queues {
        h.sqs
            .set_queue_attributes()
            .queue_url(queue)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                visibility_seconds.to_string(),
            )
            .send()
            .await
            .expect("visibility timeout");
    }
    let state_machine = h
        .sfn
        .create_state_machine()
        .name(format!("p1-retraining-{}", h.id))
        .definition(definition(&runner_queues, time_limit_seconds, switch_model))
        .role_arn("arn:aws:iam::123456789012:role/p1-retraining")
        .send()
        .await
        .expect("create_state_machine")
        .state_machine_arn()
        .to_string();

    // S3 -> EventBridge -> (the template's rule pattern) -> a queue.
    crate::common::send_events_to_eventbridge(&h.s3, &bucket).await;
    let events_queue = h.create_queue("p1-s3-events").await;
    let events_queue_arn = h
        .sqs
        .get_queue_attributes()
        .queue_url(&events_queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap();
    let rule = format!("p1-retrain-data-{}", h.id);
    h.events
        .put_rule()
        .name(&rule)
        .event_pattern(
            json!({
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "retrain/"}]}}
            })
            .to_string(),
        )
        .send()
        .await
        .expect("put_rule");
    h.events
        .put_targets()
        .rule(&rule)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("capture")
                .arn(events_queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("put_targets");

    Workflow {
        h,
        sk,
        app,
        bucket,
        model,
        state_machine,
        runner_queues,
        events_queue,
    }
}

impl Workflow {
    /// Uploads the data and returns the `Object Created` event S3 sent.
    async fn upload(&self, key: &str, body: Vec<u8>) -> Value {
        self.h.put_object(&self.bucket, key, body).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .h
                .sqs
                .receive_message()
                .queue_url(&self.events_queue)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                let event: Value = serde_json::from_str(m.body().unwrap()).unwrap();
                if event["detail"]["object"]["key"] == key {
                    return event;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no Object Created event for {key}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start(&self, input: &Value) -> String {
        self.h
            .sfn
            .start_execution()
            .state_machine_arn(&self.state_machine)
            .name(crate::common::unique())
            .input(input.to_string())
            .send()
            .await
            .expect("start_execution")
            .execution_arn()
            .to_string()
    }

    /// Plays the Lambda SQS event source mappings until the execution ends:
    /// each message of the runner's queues goes to the runner as an SQS
    /// batch of one and is deleted unless the batch response lists it (then
    /// it comes back after the queue's visibility timeout, as on AWS).
    /// Returns the final description and the actions the runner served;
    /// every batch must succeed.
    async fn drive(
        &self,
        execution: &str,
    ) -> (
        aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput,
        Vec<String>,
    ) {
        let (mut ended, actions, failed) = self.drive_all(&self.app, &[execution]).await;
        assert_eq!(failed, 0, "a runner batch failed: {actions:?}");
        (ended.remove(0), actions)
    }

    /// The same for several executions at once, with the runner `app`;
    /// also returns how many batches listed their record as failed.
    async fn drive_all(
        &self,
        app: &p1_key_broker::RetrainApp,
        executions: &[&str],
    ) -> (
        Vec<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput>,
        Vec<String>,
        usize,
    ) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut actions = Vec::new();
        let mut failed = 0;
        loop {
            let mut ended = Vec::new();
            for execution in executions {
                let described = self
                    .h
                    .sfn
                    .describe_execution()
                    .execution_arn(*execution)
                    .send()
                    .await
                    .unwrap();
                if described.status() != &aws_sdk_sfn::types::ExecutionStatus::Running {
                    ended.push(described);
                }
            }
            if ended.len() == executions.len() {
                return (ended, actions, failed);
            }
            assert!(
                Instant::now() < deadline,
                "the executions did not end: {actions:?}"
            );
            let mut received = None;
            for queue in &self.runner_queues {
                let out = self
                    .h
                    .sqs
                    .receive_message()
                    .queue_url(queue)
                    .max_number_of_messages(1)
                    .send()
                    .await
                    .unwrap();
                if let Some(message) = out.messages().first() {
                    received = Some((queue, message.clone()));
                    break;
                }
            }
            let Some((queue, message)) = received else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let body = message.body().unwrap().to_string();
            let request: Value = serde_json::from_str(&body).unwrap();
            actions.push(request["action"].as_str().unwrap_or("?").to_string());
            let id = message.message_id().unwrap().to_string();
            let answer = run(
                app,
                json!({"Records": [{"messageId": id, "eventSource": "aws:sqs", "body": body}]}),
            )
            .await
            .expect("the runner answers an SQS batch");
            if answer != json!({"batchItemFailures": []}) {
                failed += 1;
                continue;
            }
            self.h
                .sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }

    /// Every input, output, parameter and cause the execution's history
    /// holds, as text (the SDK's `Debug` redacts them, so each is read).
    async fn history(&self, execution: &str) -> String {
        let out = self
            .h
            .sfn
            .get_execution_history()
            .execution_arn(execution)
            .max_results(1000)
            .send()
            .await
            .unwrap();
        let mut text = String::new();
        for e in out.events() {
            let parts = [
                e.execution_started_event_details().and_then(|d| d.input()),
                e.execution_succeeded_event_details()
                    .and_then(|d| d.output()),
                e.execution_failed_event_details().and_then(|d| d.cause()),
                e.state_entered_event_details().and_then(|d| d.input()),
                e.state_exited_event_details().and_then(|d| d.output()),
                e.task_scheduled_event_details().map(|d| d.parameters()),
                e.task_succeeded_event_details().and_then(|d| d.output()),
                e.task_failed_event_details().and_then(|d| d.cause()),
            ];
            for part in parts.into_iter().flatten() {
                text.push_str(part);
                text.push('\n');
            }
        }
        text
    }

    /// The retrain keys stored for the model (current and previous).
    async fn keys(&self) -> Vec<String> {
        let target = self.h.name(&format!("retrain/{}", self.model));
        let (_, current) = self.h.record(&target, "AWSCURRENT").await;
        vec![current["api_key"].as_str().unwrap().to_string()]
    }
}

fn output(
    described: &aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput,
) -> Value {
    serde_json::from_str(described.output().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn new_data_becomes_a_retrained_model_with_its_results_saved() {
    let w = workflow(
        json!({"running_polls": 2, "results_size": 1_500_000}),
        600,
        false,
    )
    .await;
    let body = data(2 * 1024 * 1024 + 3, 11);
    let key = format!("retrain/{}/new-data.csv", w.model);
    let event = w.upload(&key, body.clone()).await;
    assert_eq!(event["detail-type"], "Object Created");

    let execution = w.start(&event).await;
    let (described, actions) = w.drive(&execution).await;
    assert_eq!(
        described.status(),
        &aws_sdk_sfn::types::ExecutionStatus::Succeeded,
        "{described:?}"
    );
    assert_eq!(
        actions,
        ["start", "status", "status", "status", "save_results"],
        "polled until finished; no switch unless asked"
    );
    let out = output(&described);
    let job = &w.h.jobs(&w.model).await[0];
    assert_eq!(out["model_id"], w.model.as_str());
    assert_eq!(out["retrain_job_id"], job["retrain_job_id"]);
    assert_eq!(out["data"]["bytes"], body.len());
    assert_eq!(out["switched"], false);
    // The data, byte for byte, at the vendor.
    assert_eq!(job["upload"]["sha256"], sha256_hex(&body));
    assert_eq!(job["switched"], false);
    // The results, byte for byte, in S3 under the results prefix.
    let results_key = format!(
        "retrain-results/{}/{}/results",
        w.model,
        job["retrain_job_id"].as_str().unwrap()
    );
    assert_eq!(
        out["results"],
        json!({"bucket": w.bucket, "key": results_key, "bytes": 1_500_000})
    );
    let (saved, _) = w.h.get_object(&w.bucket, &results_key).await;
    assert_eq!(sha256_hex(&saved), job["results_sha256"]);

    // No key or pre-signed URL in the execution's history.
    let history = w.history(&execution).await;
    assert!(
        history.contains("\"action\":\"save_results\"") || history.contains("save_results"),
        "the history was read: {history}"
    );
    for needle in w.keys().await.iter().map(String::as_str).chain([
        "/_upload/",
        "/_download/",
        "X-Amz-Signature",
    ]) {
        assert!(
            !history.contains(needle),
            "{needle} in the execution history"
        );
    }
}

#[tokio::test]
async fn the_model_is_switched_when_the_execution_asks() {
    let w = workflow(json!({"running_polls": 0}), 600, false).await;
    let key = format!("retrain/{}/data.zip", w.model);
    let mut event = w.upload(&key, b"PK\x03\x04 zip".to_vec()).await;
    event["switch_model"] = json!(true);
    let (described, actions) = w.drive(&w.start(&event).await).await;
    assert_eq!(
        described.status(),
        &aws_sdk_sfn::types::ExecutionStatus::Succeeded,
        "{described:?}"
    );
    assert_eq!(actions, ["start", "status", "save_results", "switch_model"]);
    assert_eq!(output(&described)["switched"], true);
    assert_eq!(w.h.jobs(&w.model).await[0]["switched"], true);
}

#[tokio::test]
async fn a_failed_job_ends_in_the_failure_state() {
    let w = workflow(
        json!({"running_polls": 1, "final_status": "job_failed", "message": "bad columns"}),
        600,
        true,
    )
    .await;
    let key = format!("retrain/{}/new.csv", w.model);
    let event = w.upload(&key, b"a\n1\n".to_vec()).await;
    let (described, actions) = w.drive(&w.start(&event).await).await;
    assert_eq!(
        described.status(),
        &aws_sdk_sfn::types::ExecutionStatus::Failed,
        "{described:?}"
    );
    assert_eq!(described.error(), Some("RetrainJobFailed"));
    assert!(
        described
            .cause()
            .unwrap_or_default()
            .contains("bad columns"),
        "{described:?}"
    );
    assert_eq!(actions, ["start", "status", "status"]);
    assert_eq!(w.h.jobs(&w.model).await[0]["switched"], false);
}

#[tokio::test]
async fn the_time_limit_ends_a_job_that_never_finishes() {
    let w = workflow(json!({"never_finish": true}), 3, false).await;
    let key = format!("retrain/{}/new.csv", w.model);
    let event = w.upload(&key, b"a\n1\n".to_vec()).await;
    let (described, actions) = w.drive(&w.start(&event).await).await;
    assert_eq!(
        described.status(),
        &aws_sdk_sfn::types::ExecutionStatus::Failed,
        "{described:?}"
    );
    assert_eq!(described.error(), Some("RetrainTimedOut"));
    assert_eq!(actions, ["start", "status", "status", "status"]);
}

#[tokio::test]
async fn a_refused_start_ends_in_a_failure_naming_the_error_type() {
    let w = workflow(json!({}), 600, false).await;
    // Data with no model in its key: InvalidRequest, not retried.
    let key = format!("retrain/no-model-{}.csv", w.model);
    let event = w.upload(&key, b"a\n1\n".to_vec()).await;
    let (described, actions) = w.drive(&w.start(&event).await).await;
    assert_eq!(
        described.status(),
        &aws_sdk_sfn::types::ExecutionStatus::Failed,
        "{described:?}"
    );
    assert_eq!(described.error(), Some("InvalidRequest"));
    assert_eq!(actions, ["start"]);
    assert!(w.h.jobs(&w.model).await.is_empty());
}

/// The same S3 event delivered twice (two executions with the same input,
/// as a duplicate delivery without the router starts them): one vendor job,
/// one upload, and both executions end with it.
#[tokio::test]
async fn the_same_event_delivered_twice_makes_one_vendor_job() {
    let w = workflow(json!({"running_polls": 1}), 600, false).await;
    let key = format!("retrain/{}/twice.csv", w.model);
    let event = w.upload(&key, data(100_000, 41)).await;
    let first = w.start(&event).await;
    let second = w.start(&event).await;
    let (ended, actions, failed) = w.drive_all(&w.app, &[&first, &second]).await;
    assert_eq!(failed, 0, "{actions:?}");
    let jobs = w.h.jobs(&w.model).await;
    assert_eq!(jobs.len(), 1, "one vendor job: {jobs:?}");
    assert_eq!(jobs[0]["upload_puts"], 1, "one upload");
    for described in &ended {
        assert_eq!(
            described.status(),
            &aws_sdk_sfn::types::ExecutionStatus::Succeeded,
            "{described:?}"
        );
        assert_eq!(
            output(described)["retrain_job_id"],
            jobs[0]["retrain_job_id"]
        );
    }
    assert_eq!(actions.iter().filter(|a| *a == "start").count(), 2);
}

/// The runner's first report of a `start` fails (SendTaskSuccess answered
/// 500 by the fault proxy): its SQS record is listed as failed, the message
/// comes back after the visibility timeout while the task still waits, and
/// the second delivery answers the recorded job: one job, one upload.
#[tokio::test]
async fn a_start_whose_report_failed_comes_back_and_makes_no_second_job() {
    let w = workflow_with(json!({"running_polls": 0}), 600, false, 2).await;
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(crate::faults::proxy_url())
        .load()
        .await;
    let config = w.h.config(&w.sk, &[]).await;
    let app = p1_key_broker::RetrainApp::with_aws(config, &aws).expect("runner");
    // The start's SendTaskSuccess (its output, a JSON string in the body,
    // names the action) fails on each of the SDK's 3 attempts: the report
    // fails.
    crate::faults::add_rule(
        &w.h,
        json!({"operation": "SendTaskSuccess", "match": r#"\"action\":\"start\""#, "fault": "server_error", "times": 3}),
    )
    .await;
    let key = format!("retrain/{}/reported-late.csv", w.model);
    let event = w.upload(&key, data(50_000, 42)).await;
    let execution = w.start(&event).await;
    let (ended, actions, failed) = w.drive_all(&app, &[&execution]).await;
    assert_eq!(failed, 1, "the first start's report failed: {actions:?}");
    assert_eq!(
        ended[0].status(),
        &aws_sdk_sfn::types::ExecutionStatus::Succeeded,
        "{:?}",
        ended[0]
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "start").count(),
        2,
        "{actions:?}"
    );
    let jobs = w.h.jobs(&w.model).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["upload_puts"], 1);
}

/// A 4xx from the upload URL: `PredictionOne.UploadRefused` ends the
/// execution, with no retry and no second job.
#[tokio::test]
async fn a_refused_upload_ends_the_execution_without_a_retry() {
    let w = workflow(json!({}), 600, false).await;
    w.h.control(
        "script",
        json!({"model_id": w.model, "endpoint": "upload", "responses": [{"status": 403}]}),
    )
    .await;
    let key = format!("retrain/{}/refused.csv", w.model);
    let event = w.upload(&key, data(1000, 44)).await;
    let (described, actions) = w.drive(&w.start(&event).await).await;
    assert_eq!(
        described.status(),
        &aws_sdk_sfn::types::ExecutionStatus::Failed,
        "{described:?}"
    );
    assert_eq!(described.error(), Some("PredictionOne.UploadRefused"));
    assert_eq!(actions, ["start"]);
    let jobs = w.h.jobs(&w.model).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["upload_puts"], 1);
}
