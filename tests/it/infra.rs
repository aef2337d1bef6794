//! The workflows in `infra/` against the code: the example key workflow
//! (`retrain-workflow.asl.json`) and the retraining workflow
//! (`retrain-runner.asl.json`). Their Retry and Catch name only errorTypes
//! the functions can return (`p1_key_broker::error::ERROR_TYPES`), retry
//! exactly the retryable ones, catch the permanent ones by name, and hand
//! keys on by reference only. No services.

use std::collections::BTreeSet;

use p1_key_broker::error::ERROR_TYPES;
use serde_json::Value;

const DEFINITION: &str = include_str!("../../infra/retrain-workflow.asl.json");

/// Retryable per the contract (SPEC section 7, docs/triggers.md "Errors"): throttling,
/// 5xx/network and timeouts after the function's own attempts, and a failed
/// hand-off, which a retry completes (the key is found `fresh`).
const RETRYABLE: &[&str] = &[
    "PredictionOne.Throttled",
    "PredictionOne.Unavailable",
    "PredictionOne.Timeout",
    "HandOffFailed",
];

/// Step Functions' own names for transient Lambda service errors: allowed in
/// Retry, not ours, so not compared with `ERROR_TYPES`.
const LAMBDA_TRANSIENT: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
];

fn definition() -> Value {
    serde_json::from_str(DEFINITION).expect("infra/retrain-workflow.asl.json is valid JSON")
}

/// Names that are the service's (`States.*`, `Lambda.*`), not the function's.
fn is_service_name(name: &str) -> bool {
    name.starts_with("States.") || name.starts_with("Lambda.")
}

/// errorTypes only the retrain runner returns (SPEC section 11).
const RUNNER_ONLY: &[&str] = &[
    "PredictionOne.RetrainJobNotFound",
    "PredictionOne.JobDeleted",
    "PredictionOne.ConfigurationFileMissing",
    "PredictionOne.ClassifierNotFound",
    "PredictionOne.RetrainNotFinished",
    "PredictionOne.UploadFailed",
    "PredictionOne.UploadRefused",
    "DataUnavailable",
    "ResultsUnavailable",
];

/// What the key broker can return.
fn broker_error_types() -> Vec<&'static str> {
    ERROR_TYPES
        .iter()
        .copied()
        .filter(|t| !RUNNER_ONLY.contains(t))
        .collect()
}

fn permanent() -> BTreeSet<&'static str> {
    broker_error_types()
        .into_iter()
        .filter(|t| !RETRYABLE.contains(t))
        .collect()
}

/// Every state, at any depth (Parallel branches, Map iterators), with its name.
fn all_states(states: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, state) in states.as_object().expect("States is an object") {
        out.push((name.clone(), state.clone()));
        for branch in state["Branches"].as_array().into_iter().flatten() {
            out.extend(all_states(&branch["States"]));
        }
        for key in ["ItemProcessor", "Iterator"] {
            if state[key].is_object() {
                out.extend(all_states(&state[key]["States"]));
            }
        }
    }
    out
}

fn error_equals(rule: &Value) -> Vec<String> {
    rule["ErrorEquals"]
        .as_array()
        .expect("ErrorEquals is an array")
        .iter()
        .map(|n| n.as_str().expect("error names are strings").to_string())
        .collect()
}

fn broker_tasks(def: &Value) -> Vec<(String, Value)> {
    all_states(&def["States"])
        .into_iter()
        .filter(|(_, s)| {
            s["Type"] == "Task"
                && s["Resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(":states:::lambda:invoke"))
                && s["Parameters"]["FunctionName"] == "${KeyBrokerFunctionArn}"
        })
        .collect()
}

#[test]
fn the_definition_is_a_state_machine_whose_transitions_resolve() {
    let def = definition();
    let states = def["States"].as_object().expect("States");
    let start = def["StartAt"].as_str().expect("StartAt");
    assert!(states.contains_key(start), "StartAt {start} is not a state");
    for (name, state) in states {
        let mut targets: Vec<&str> = state["Next"].as_str().into_iter().collect();
        for c in state["Catch"].as_array().into_iter().flatten() {
            targets.push(c["Next"].as_str().expect("Catch has Next"));
        }
        for target in targets {
            assert!(
                states.contains_key(target),
                "{name} -> {target}: no such state"
            );
        }
        let terminal =
            matches!(state["Type"].as_str(), Some("Succeed" | "Fail")) || state["End"] == true;
        assert!(
            terminal || state["Next"].is_string() || state["Type"] == "Choice",
            "{name} neither ends nor has a Next"
        );
    }
    assert_eq!(broker_tasks(&def).len(), 1, "one task invokes the broker");
}

#[test]
fn every_error_name_is_an_error_type_of_the_function() {
    let def = definition();
    let mut compared = 0;
    for (state, body) in all_states(&def["States"]) {
        for key in ["Retry", "Catch"] {
            for rule in body[key].as_array().into_iter().flatten() {
                for name in error_equals(rule) {
                    if is_service_name(&name) {
                        continue;
                    }
                    compared += 1;
                    assert!(
                        ERROR_TYPES.contains(&name.as_str()),
                        "{state}.{key} names {name}, which the function never returns \
                         (src/error.rs ERROR_TYPES)"
                    );
                }
            }
        }
    }
    assert!(
        compared >= broker_error_types().len(),
        "the workflow names the errorTypes"
    );
}

#[test]
fn retries_exactly_the_retryable_error_types() {
    let def = definition();
    for (state, task) in broker_tasks(&def) {
        let mut retried = BTreeSet::new();
        for rule in task["Retry"].as_array().expect("the broker task retries") {
            assert!(
                rule["MaxAttempts"].as_u64().unwrap_or(3) >= 1,
                "{state}: a Retry rule that never retries"
            );
            for name in error_equals(rule) {
                if is_service_name(&name) {
                    assert!(
                        LAMBDA_TRANSIENT.contains(&name.as_str()),
                        "{state}: only Lambda's transient service errors may be retried \
                         besides ours, not {name}"
                    );
                } else {
                    retried.insert(name);
                }
            }
        }
        let expected: BTreeSet<String> = RETRYABLE.iter().map(|s| s.to_string()).collect();
        assert_eq!(retried, expected, "{state}: retried errorTypes");
        for name in RETRYABLE {
            assert!(ERROR_TYPES.contains(name), "{name} is not an errorType");
        }
    }
}

#[test]
fn catches_every_permanent_error_type_before_any_catch_all() {
    let def = definition();
    for (state, task) in broker_tasks(&def) {
        let catchers = task["Catch"].as_array().expect("the broker task catches");
        let mut named = BTreeSet::new();
        let mut catch_all_at = None;
        for (i, rule) in catchers.iter().enumerate() {
            let names = error_equals(rule);
            if names.iter().any(|n| n == "States.ALL") {
                assert_eq!(names, ["States.ALL"], "{state}: States.ALL stands alone");
                assert_eq!(i, catchers.len() - 1, "{state}: States.ALL comes last");
                catch_all_at = Some(i);
            }
            named.extend(names.into_iter().filter(|n| !is_service_name(n)));
        }
        let missing: Vec<_> = permanent()
            .into_iter()
            .filter(|t| !named.contains(*t))
            .collect();
        // The contract's minimum: a permanent errorType is caught, by name or
        // by a trailing States.ALL. This workflow names each one, so that it
        // ends in its own failure state rather than in the catch-all.
        assert!(
            missing.is_empty() || catch_all_at.is_some(),
            "{state}: permanent errorTypes {missing:?} are not caught"
        );
        assert!(
            missing.is_empty(),
            "{state}: not caught by name: {missing:?}"
        );
        for rule in catchers {
            assert_eq!(
                rule["ResultPath"], "$.error",
                "{state}: a catcher keeps the input (model_id) beside the error"
            );
        }
    }
}

#[test]
fn the_next_state_gets_the_key_by_reference_never_the_key() {
    let def = definition();
    assert!(
        !DEFINITION.contains("api_key") && !DEFINITION.contains("include_key"),
        "the workflow never asks for or passes the key itself"
    );
    for (state, task) in broker_tasks(&def) {
        let payload = &task["Parameters"]["Payload"];
        assert_eq!(
            payload["credential_type"], "retrain",
            "{state}: a retrain key"
        );
        assert!(payload.get("model_id.$").is_some() || payload.get("model_id").is_some());
        assert!(payload.get("include_key").is_none());

        let selected = task["ResultSelector"]
            .as_object()
            .expect("the task selects what it passes on");
        assert_eq!(selected["secret_arn.$"], "$.Payload.secret_arn");
        assert_eq!(selected["version_id.$"], "$.Payload.version_id");
        assert!(
            selected.keys().all(|k| !k.contains("api_key")),
            "{state} passes on {selected:?}"
        );
        let result_path = task["ResultPath"].as_str().expect("ResultPath").to_string();

        let next_name = task["Next"].as_str().expect("the task has a Next state");
        let next = &def["States"][next_name];
        let params = next["Parameters"]
            .as_object()
            .unwrap_or_else(|| panic!("{next_name} takes Parameters"));
        assert_eq!(
            params["secret_arn.$"],
            format!("{result_path}.secret_arn"),
            "{next_name} receives the secret ARN"
        );
        assert_eq!(
            params["version_id.$"],
            format!("{result_path}.version_id"),
            "{next_name} receives the version id"
        );
        assert!(params.keys().all(|k| !k.contains("api_key")));
    }
}

const RUNNER_DEFINITION: &str = include_str!("../../infra/retrain-runner.asl.json");

/// Retryable for the runner: the broker's, and a failed upload (5xx or
/// network after the runner's own attempts; a new job gets the data). Not
/// `HandOffFailed`: it means the runner's report never reached Step
/// Functions, so Step Functions can never see it.
const RUNNER_RETRYABLE: &[&str] = &[
    "PredictionOne.Throttled",
    "PredictionOne.Unavailable",
    "PredictionOne.Timeout",
    "PredictionOne.UploadFailed",
];

/// Step Functions' names for a SendMessage of the optimized SQS integration
/// that failed (throttled, a service or client error): retried.
const SQS_SEND_ERRORS: &[&str] = &["SQS.AmazonSQSException", "SQS.SdkClientException"];

/// Storage and data failures that may be passing (S3 5xx or throttling
/// after the SDK's own retries, Secrets Manager throttling): retried twice,
/// briefly, before they are caught.
const RUNNER_BRIEFLY_RETRIED: &[&str] = &["StoreFailed", "DataUnavailable"];

/// The retraining workflow's tasks: each sends a runner request over SQS
/// with its task token.
fn runner_tasks() -> Vec<(String, Value)> {
    let def: Value = serde_json::from_str(RUNNER_DEFINITION)
        .expect("infra/retrain-runner.asl.json is valid JSON");
    let tasks: Vec<(String, Value)> = all_states(&def["States"])
        .into_iter()
        .filter(|(_, s)| s["Type"] == "Task")
        .collect();
    assert_eq!(tasks.len(), 4, "start, status, save_results, switch_model");
    tasks
}

#[test]
fn the_retraining_workflow_sends_each_runner_action_with_its_token() {
    let mut actions = BTreeSet::new();
    for (state, task) in runner_tasks() {
        assert_eq!(
            task["Resource"], "arn:${Partition}:states:::sqs:sendMessage.waitForTaskToken",
            "{state}"
        );
        let body = &task["Parameters"]["MessageBody"];
        assert_eq!(body["task_token.$"], "$$.Task.Token", "{state}");
        actions.insert(body["action"].as_str().expect("an action").to_string());
        // The time limits come from the stack (RunnerTimings), counted
        // from the message being sent: queue wait and redeliveries included.
        assert_eq!(
            task["TimeoutSecondsPath"], "$.settings.task_timeout_seconds",
            "{state}: no task waits forever"
        );
        // A heartbeat limit only where the runner heartbeats: transfers.
        let transfer = matches!(body["action"].as_str(), Some("start" | "save_results"));
        assert_eq!(
            task.get("HeartbeatSecondsPath").and_then(Value::as_str),
            transfer.then_some("$.settings.task_heartbeat_seconds"),
            "{state}"
        );
    }
    assert_eq!(
        actions,
        BTreeSet::from(["start", "status", "save_results", "switch_model"].map(String::from))
    );
    assert!(
        !RUNNER_DEFINITION.contains("api_key") && !RUNNER_DEFINITION.contains("upload_url"),
        "no key or URL is ever asked for"
    );
}

#[test]
fn the_retraining_workflow_retries_the_retryable_and_names_every_permanent_error() {
    let runner_types: Vec<&str> = ERROR_TYPES
        .iter()
        .copied()
        .filter(|t| *t != "RotationError")
        .collect();
    for (state, task) in runner_tasks() {
        let mut retried = BTreeSet::new();
        let mut sqs_retried = BTreeSet::new();
        for rule in task["Retry"].as_array().expect("the task retries") {
            for name in error_equals(rule) {
                if name == "States.Timeout" || name == "States.HeartbeatTimeout" {
                    continue;
                }
                if SQS_SEND_ERRORS.contains(&name.as_str()) {
                    sqs_retried.insert(name);
                    continue;
                }
                assert!(
                    ERROR_TYPES.contains(&name.as_str()),
                    "{state} retries {name}"
                );
                retried.insert(name);
            }
        }
        for name in RUNNER_RETRYABLE {
            assert!(retried.contains(*name), "{state} does not retry {name}");
        }
        assert_eq!(
            sqs_retried.len(),
            SQS_SEND_ERRORS.len(),
            "{state}: a throttled SendMessage is retried, not a failure"
        );
        assert!(
            !retried.contains("HandOffFailed") && !retried.contains("PredictionOne.UploadRefused"),
            "{state} retries what can never come or never helps"
        );
        for name in &retried {
            assert!(
                RUNNER_RETRYABLE.contains(&name.as_str())
                    || RUNNER_BRIEFLY_RETRIED.contains(&name.as_str())
                    || (state == "SaveResults" && name == "ResultsUnavailable"),
                "{state} retries {name}, which a retry cannot help"
            );
        }
        let catchers = task["Catch"].as_array().expect("the task catches");
        let last = catchers.last().expect("a catcher");
        assert_eq!(
            error_equals(last),
            ["States.ALL"],
            "{state}: a catch-all comes last"
        );
        let named: BTreeSet<String> = catchers.iter().flat_map(error_equals).collect();
        for t in &runner_types {
            if !RUNNER_RETRYABLE.contains(t) && *t != "HandOffFailed" {
                assert!(named.contains(*t), "{state}: {t} is not caught by name");
            }
        }
        for name in &named {
            assert!(
                name.starts_with("States.") || ERROR_TYPES.contains(&name.as_str()),
                "{state} catches {name}, which the function never returns"
            );
        }
    }
}
