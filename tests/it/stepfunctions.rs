//! The task-token path end to end on moto's real state-machine execution:
//! a `.waitForTaskToken` state puts the request and its token on an SQS
//! queue, the function serves the SQS record, and the execution ends with
//! the result as its output (or fails with the errorType).

use std::time::Duration;

use crate::common::{Harness, fixture, invoke};
use serde_json::{Value, json};

struct Workflow {
    state_machine: String,
    queue: String,
}

async fn workflow(h: &Harness) -> Workflow {
    workflow_timing_out_after(h, None).await
}

/// The workflow, its task waiting at most `timeout_seconds` when given.
async fn workflow_timing_out_after(h: &Harness, timeout_seconds: Option<u32>) -> Workflow {
    let queue = h.create_queue("p1-requests").await;
    let mut definition = json!({
        "StartAt": "GetKey",
        "States": {
            "GetKey": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {
                    "QueueUrl": queue,
                    "MessageBody": {"credential_type.$": "$.credential_type", "model_id.$": "$.model_id", "task_token.$": "$$.Task.Token"}
                },
                "Next": "Done"
            },
            "Done": {"Type": "Succeed"}
        }
    });
    if let Some(t) = timeout_seconds {
        definition["States"]["GetKey"]["TimeoutSeconds"] = json!(t);
    }
    let state_machine = h
        .sfn
        .create_state_machine()
        .name(format!("p1-retrain-{}", h.id))
        .definition(definition.to_string())
        .role_arn("arn:aws:iam::123456789012:role/p1-workflow")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_string();
    Workflow {
        state_machine,
        queue,
    }
}

impl Workflow {
    async fn start(&self, h: &Harness, input: Value) -> String {
        h.sfn
            .start_execution()
            .state_machine_arn(&self.state_machine)
            .name(crate::common::unique())
            .input(input.to_string())
            .send()
            .await
            .unwrap()
            .execution_arn()
            .to_string()
    }

    /// The queued messages as the Lambda SQS event source would deliver them.
    async fn sqs_event(&self, h: &Harness, expect: usize) -> Value {
        let mut records = Vec::new();
        for _ in 0..50 {
            let out = h
                .sqs
                .receive_message()
                .queue_url(&self.queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                records.push(json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:p1-requests", "awsRegion": "us-east-1"}));
            }
            if records.len() >= expect {
                break;
            }
        }
        assert_eq!(
            records.len(),
            expect,
            "messages from the waitForTaskToken state"
        );
        json!({"Records": records})
    }
}

async fn finished(
    h: &Harness,
    execution: &str,
) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
    for _ in 0..100 {
        let d = h
            .sfn
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .unwrap();
        if d.status() != &aws_sdk_sfn::types::ExecutionStatus::Running {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("execution {execution} still running");
}

#[tokio::test]
async fn sqs_task_tokens_complete_the_executions() {
    let h = Harness::new().await;
    let wf = workflow(&h).await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let ok = wf
        .start(&h, json!({"credential_type": "retrain", "model_id": "42"}))
        .await;
    let gone = wf
        .start(
            &h,
            json!({"credential_type": "retrain", "model_id": "deleted-1"}),
        )
        .await;
    let bad = wf
        .start(
            &h,
            json!({"credential_type": "retrain", "model_id": "no/slashes"}),
        )
        .await;
    let event = wf.sqs_event(&h, 3).await;

    let r = invoke(&app, event).await.unwrap();
    assert_eq!(
        r,
        json!({"batchItemFailures": []}),
        "reported outcomes are not SQS failures"
    );

    let d = finished(&h, &ok).await;
    assert_eq!(d.status(), &aws_sdk_sfn::types::ExecutionStatus::Succeeded);
    let output: Value = serde_json::from_str(d.output().unwrap()).unwrap();
    assert_eq!(output["status"], "issued");
    assert_eq!(output["model_id"], "42");
    let (version, _) = h.record(&h.name("retrain/42"), "AWSCURRENT").await;
    assert_eq!(output["version_id"], version.as_str());
    assert!(output.get("api_key").is_none());

    for (execution, error) in [
        (&gone, "PredictionOne.ModelDeleted"),
        (&bad, "InvalidRequest"),
    ] {
        let d = finished(&h, execution).await;
        assert_eq!(d.status(), &aws_sdk_sfn::types::ExecutionStatus::Failed);
        assert_eq!(d.error(), Some(error));
    }
}

#[tokio::test]
async fn direct_task_token_fixture() {
    let h = Harness::new().await;
    let wf = workflow(&h).await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let execution = wf
        .start(&h, json!({"credential_type": "retrain", "model_id": "42"}))
        .await;
    let event = wf.sqs_event(&h, 1).await;
    let body: Value = serde_json::from_str(event["Records"][0]["body"].as_str().unwrap()).unwrap();

    // The fixture, with the token of a live execution.
    let mut request = fixture("stepfunctions-task-token.json");
    request["task_token"] = body["task_token"].clone();
    let r = invoke(&app, request).await.unwrap();
    assert_eq!(r["status"], "issued");
    let d = finished(&h, &execution).await;
    assert_eq!(d.status(), &aws_sdk_sfn::types::ExecutionStatus::Succeeded);
    assert_eq!(
        serde_json::from_str::<Value>(d.output().unwrap()).unwrap(),
        r
    );

    // The fixture as it is: a token Step Functions does not know (moto:
    // InvalidToken). No retry could deliver the report, so the invocation
    // succeeds with the result (SPEC section 10); the key is stored.
    let out = invoke(&app, fixture("stepfunctions-task-token.json"))
        .await
        .expect("a report on a gone task token ends the hand-off");
    assert_eq!(out["status"], "fresh");
    assert_eq!(out["version_id"], r["version_id"]);

    // A reported failure is a successful invocation.
    let execution = wf
        .start(
            &h,
            json!({"credential_type": "retrain", "model_id": "deleted-5"}),
        )
        .await;
    let event = wf.sqs_event(&h, 1).await;
    let body: Value = serde_json::from_str(event["Records"][0]["body"].as_str().unwrap()).unwrap();
    let r = invoke(&app, body).await.unwrap();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["errorType"], "PredictionOne.ModelDeleted");
    assert_eq!(
        finished(&h, &execution).await.error(),
        Some("PredictionOne.ModelDeleted")
    );
}

/// SPEC section 10: a report that can never arrive. The task stopped
/// waiting (TimeoutSeconds: 1; moto then answers InvalidToken, real Step
/// Functions TaskTimedOut): the record succeeds instead of going back to
/// the queue again and again, and the key is stored.
#[tokio::test]
async fn a_task_that_timed_out_does_not_fail_its_record() {
    let h = Harness::new().await;
    let wf = workflow_timing_out_after(&h, Some(1)).await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let execution = wf
        .start(&h, json!({"credential_type": "retrain", "model_id": "77"}))
        .await;
    let event = wf.sqs_event(&h, 1).await;
    let d = finished(&h, &execution).await;
    // A task timeout fails the execution with States.Timeout (moto and
    // Step Functions alike).
    assert_eq!(d.status(), &aws_sdk_sfn::types::ExecutionStatus::Failed);
    assert_eq!(d.error(), Some("States.Timeout"));

    let r = invoke(&app, event).await.unwrap();
    assert_eq!(r, json!({"batchItemFailures": []}));
    let config = h.config(&sk, &[]).await;
    let (_, record) = h
        .record(&format!("{}77", config.retrain_secret_prefix), "AWSCURRENT")
        .await;
    assert_eq!(record["model_id"], "77");
    assert_eq!(h.calls(&sk).await.len(), 1);
}
