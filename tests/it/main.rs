//! The integration tests, as one test binary so that the AWS SDK is linked
//! once: the real SDK against the moto server and the real HTTP client
//! against the vendor stand-in, both started by `scripts/test.sh` (which
//! exports `AWS_ENDPOINT_URL` and `P1_STANDIN_URL`). One module per topic.

mod broker;
mod common;
mod docs;
mod exactly_once;
mod faults;
mod fleet;
mod infra;
mod lambda_runtime;
mod large_transfer;
mod localstack;
mod no_leak;
mod reliability;
mod retrain;
mod retrain_workflow;
mod rotation;
mod runtime_deadline;
mod stepfunctions;
mod sweep;
