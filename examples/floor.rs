//! The floor of the cold-start benchmark (`scripts/bench.sh`, README
//! "Performance"): the least a key broker can do on the function's own
//! runtime and SDK crates (lambda_runtime on a multi-thread tokio runtime,
//! aws-sdk-secretsmanager, reqwest with rustls, as in Cargo.toml).
//!
//! - A fresh request is one GetSecretValue of the target and a comparison
//!   of its `expires_at` with now + one day.
//! - An issuing request (`"force": true`, or a stale or missing target) is
//!   one vendor GET and one PutSecretValue (CreateSecret when the target is
//!   missing), plus one GetSecretValue of the secret key on first use.
//! - Clients are built on first use, with the crates' defaults; nothing is
//!   validated, nothing is logged; train keys only, into
//!   `P1_TRAIN_SECRET_ID`. Same environment as the function
//!   (`P1_SECRET_KEY_SECRET_ID`, `P1_API_BASE_URL`, `P1_TRAIN_SECRET_ID`).
//!
//! Not a broker: it is the measuring stick for one. Build it with
//! `cargo build --release --example floor`.

use aws_sdk_secretsmanager::Client;
use chrono::{SecondsFormat, Utc};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static SECRETS: OnceCell<Client> = OnceCell::const_new();
static SECRET_KEY: OnceCell<String> = OnceCell::const_new();
static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();

async fn secrets() -> &'static Client {
    SECRETS
        .get_or_init(|| async {
            Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
        })
        .await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let target = std::env::var("P1_TRAIN_SECRET_ID")?;
    let sm = secrets().await;
    let now = Utc::now();
    if event.payload["force"].as_bool() != Some(true)
        && let Ok(current) = sm.get_secret_value().secret_id(&target).send().await
    {
        let record: Value = serde_json::from_str(current.secret_string().unwrap_or("{}"))?;
        // RFC 3339 UTC strings of one format compare as text.
        let renew_by = (now + chrono::Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
        if record["expires_at"]
            .as_str()
            .is_some_and(|e| e > renew_by.as_str())
        {
            return Ok(json!({"status": "fresh", "version_id": current.version_id()}));
        }
    }

    let secret_key = SECRET_KEY
        .get_or_try_init(|| async {
            let id = std::env::var("P1_SECRET_KEY_SECRET_ID")?;
            let out = sm.get_secret_value().secret_id(id).send().await?;
            Ok::<_, Error>(out.secret_string().unwrap_or_default().to_string())
        })
        .await?;
    let base = std::env::var("P1_API_BASE_URL")?;
    let issued: Value = HTTP
        .get_or_init(reqwest::Client::new)
        .get(format!("{base}/v1/external/api-key?credential_type=train"))
        .header("x-api-key", secret_key)
        .send()
        .await?
        .json()
        .await?;
    let end_date = issued["end_date"].as_str().unwrap_or_default();
    let record = json!({
        "api_key": issued["api_key"],
        "end_date": end_date,
        // The stand-in's "YYYY-MM-DD HH:MM:SS" (UTC) as RFC 3339.
        "expires_at": format!("{}Z", end_date.replacen(' ', "T", 1)),
        "credential_type": "train",
        "model_id": null,
        "issued_at": now.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
    .to_string();

    let version_id = match sm
        .put_secret_value()
        .secret_id(&target)
        .secret_string(&record)
        .send()
        .await
    {
        Ok(out) => out.version_id().map(str::to_string),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            let out = sm
                .create_secret()
                .name(&target)
                .secret_string(&record)
                .send()
                .await?;
            out.version_id().map(str::to_string)
        }
        Err(e) => return Err(e.into()),
    };
    Ok(json!({"status": "issued", "version_id": version_id}))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}
