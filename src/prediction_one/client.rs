//! The HTTP adapter for the vendor's API: one reqwest client (rustls, built
//! once per instance), a per-attempt timeout, retries for transient failures
//! only, and a hard cap on how much of a body is read. `call` is that loop
//! for any JSON call; Get API Key is here, the retraining calls and the
//! pre-signed transfers in `retrain.rs`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Client, RequestBuilder, Url};
use serde_json::Value;

use super::backoff::{self, MAX_RETRY_AFTER};
use super::response::{self, Outcome, Transient};
use super::{IssuedKey, KeyIssuer, PredictionOneError};
use crate::credential::Credential;
use crate::deadline::Deadline;
use crate::sensitive::SecretKey;
use crate::tls::SharedTrust;

/// A response body larger than this is refused without being read whole
/// (SPEC section 8): a real key response is well under 1 KiB.
pub const MAX_BODY: usize = 64 * 1024;

const PATH: &str = "/v1/external/api-key";

pub struct PredictionOneClient {
    /// Built on the first call (see `crate::tls`): a `fresh` request never
    /// needs it.
    client: OnceLock<Client>,
    /// For the pre-signed transfers (`retrain.rs`), built on the first one:
    /// outside local runs it resolves names to public addresses only.
    transfer: OnceLock<Client>,
    trust: SharedTrust,
    endpoint: Url,
    /// The API's base URL (scheme, host, port).
    pub(super) base: Url,
    /// Per attempt (`P1_HTTP_TIMEOUT_MS`), before the deadline shortens it.
    timeout: Duration,
    max_attempts: u32,
}

/// An attempt needs at least this long to be worth starting.
const MIN_ATTEMPT: Duration = Duration::from_millis(20);

/// Why one attempt did not produce an outcome from a response.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    Transient(Transient),
    Connection,
    /// The TLS handshake failed; why (no trusted roots, unknown issuer).
    Tls(String),
}

impl PredictionOneClient {
    /// A client for the API at `base_url` (scheme, host and port; checked by
    /// the configuration), with a per-attempt `timeout`, up to
    /// `max_attempts` attempts per call, trusting the instance's one trust
    /// store (`crate::tls`).
    pub fn new(
        base_url: &Url,
        timeout: Duration,
        max_attempts: u32,
        trust: SharedTrust,
    ) -> Result<Self, String> {
        let endpoint = base_url
            .join(PATH)
            .map_err(|e| format!("{base_url} cannot be joined with {PATH}: {e}"))?;
        Ok(PredictionOneClient {
            client: OnceLock::new(),
            transfer: OnceLock::new(),
            trust,
            endpoint,
            base: base_url.clone(),
            timeout,
            max_attempts,
        })
    }

    /// Whether the API itself is on loopback (local runs and tests): then,
    /// and only then, pre-signed URLs may be plain http or point at
    /// loopback and private addresses (SPEC section 11).
    pub(super) fn is_local(&self) -> bool {
        crate::net::is_loopback(&self.base)
    }

    /// The reqwest client for the API calls, built on first use.
    pub(super) fn client(&self) -> Result<&Client, PredictionOneError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = self.build(false)?;
        Ok(self.client.get_or_init(|| client))
    }

    /// The reqwest client for the pre-signed transfers, built on first use.
    pub(super) fn transfer_client(&self) -> Result<&Client, PredictionOneError> {
        if let Some(client) = self.transfer.get() {
            return Ok(client);
        }
        let client = self.build(true)?;
        Ok(self.transfer.get_or_init(|| client))
    }

    fn build(&self, transfers: bool) -> Result<Client, PredictionOneError> {
        let unavailable = |detail: String| PredictionOneError::Unavailable {
            attempts: 0,
            detail,
        };
        let tls = self
            .trust
            .get()
            .client_config()
            .map_err(|e| unavailable(format!("cannot set up TLS: {e}")))?;
        let mut builder = Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(self.timeout)
            // A redirect would carry the x-api-key header (or a transfer) to
            // another place: never follow one (it surfaces as
            // PredictionOne.BadRequest, or a refused transfer).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("p1-key-broker/", env!("CARGO_PKG_VERSION")));
        if !transfers {
            // Transfers stream for minutes: each one sets its own timeout.
            builder = builder.timeout(self.timeout);
        } else if !self.is_local() {
            builder = builder.dns_resolver(std::sync::Arc::new(crate::net::PublicOnly));
        }
        builder
            .build()
            .map_err(|e| unavailable(format!("cannot build the HTTP client: {e}")))
    }

    async fn attempt(
        &self,
        request: RequestBuilder,
        credential: &str,
        success_field: &str,
        timeout: Duration,
    ) -> Result<(Outcome<Value>, Option<Duration>), Failure> {
        let mut response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(transport_failure)?;

        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| backoff::parse_retry_after(v, chrono::Utc::now()));

        // Whatever the status: SPEC section 8 refuses any body over the cap,
        // and a gateway sending megabytes is not a transient fault to retry.
        let Some(body) = read_capped(&mut response).await? else {
            return Ok((
                Outcome::Fail(PredictionOneError::MalformedResponse(format!(
                    "HTTP {status} with a response body over {} KiB, refused",
                    MAX_BODY / 1024
                ))),
                None,
            ));
        };
        Ok((
            response::classify_json(status, &body, credential, success_field),
            retry_after,
        ))
    }

    /// One vendor call (`what` names it in logs) made with `credential` in
    /// its `x-api-key` header (`unsendable` when it cannot go in one); the
    /// JSON body of its 2xx answer, which has `success_field`.
    ///
    /// Tries up to `max_attempts` times, but starts no attempt, backoff sleep
    /// or `Retry-After` wait that could not end before the deadline's work
    /// point, and gives each attempt the smaller of its timeout and the time
    /// left (SPEC section 10).
    pub(super) async fn call(
        &self,
        what: &'static str,
        success_field: &str,
        credential: &str,
        unsendable: fn() -> PredictionOneError,
        request: impl Fn(&Client) -> RequestBuilder,
        deadline: &Deadline,
    ) -> Result<Value, PredictionOneError> {
        let mut header = HeaderValue::from_str(credential).map_err(|_| unsendable())?;
        // Keeps the value out of hyper's and reqwest's own debug output.
        header.set_sensitive(true);
        let client = self.client()?;
        let mut last: Option<Failure> = None;
        let mut attempts = 0;
        while attempts < self.max_attempts {
            let left = deadline.work_left();
            if left < MIN_ATTEMPT {
                tracing::warn!(
                    call = what,
                    attempts,
                    "no time left for another vendor attempt"
                );
                break;
            }
            attempts += 1;
            let timeout = self.timeout.min(left);
            let started = Instant::now();
            let request = request(client).header("x-api-key", header.clone());
            let outcome = self
                .attempt(request, credential, success_field, timeout)
                .await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let retry_after = match outcome {
                Ok((Outcome::Done(body), _)) => {
                    tracing::debug!(
                        call = what,
                        attempt = attempts,
                        elapsed_ms,
                        "vendor call succeeded"
                    );
                    return Ok(body);
                }
                Ok((Outcome::Fail(error), _)) => {
                    tracing::debug!(
                        call = what,
                        attempt = attempts,
                        elapsed_ms,
                        error_type = error.error_type(),
                        "vendor call failed"
                    );
                    return Err(error);
                }
                Ok((Outcome::Retry(transient), retry_after)) => {
                    last = Some(Failure::Transient(transient));
                    retry_after
                }
                // No other attempt can make the host trusted.
                Err(failure @ Failure::Tls(_)) => {
                    return Err(final_error(Some(failure), attempts));
                }
                Err(failure) => {
                    last = Some(failure);
                    None
                }
            };
            tracing::warn!(call = what, attempt = attempts, elapsed_ms, failure = ?last, "vendor call failed transiently");
            if attempts == self.max_attempts {
                break;
            }
            let wait = match retry_after {
                Some(wait) if wait > MAX_RETRY_AFTER => {
                    tracing::warn!(
                        retry_after_s = wait.as_secs(),
                        "Retry-After is too long to wait for in this invocation"
                    );
                    break;
                }
                Some(wait) => wait,
                None => backoff::jittered(attempts + 1),
            };
            // The wait and at least a short attempt after it must fit.
            if wait + MIN_ATTEMPT > deadline.work_left() {
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "the wait before the next vendor attempt would pass the deadline"
                );
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(final_error(last, attempts))
    }
}

impl KeyIssuer for PredictionOneClient {
    async fn get_api_key(
        &self,
        secret_key: &SecretKey,
        credential: &Credential,
        deadline: &Deadline,
    ) -> Result<IssuedKey, PredictionOneError> {
        let mut url = self.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("credential_type", credential.credential_type.as_str());
            if let Some(model_id) = &credential.model_id {
                query.append_pair("model_id", model_id.as_str());
            }
        }
        let body = self
            .call(
                "get_api_key",
                "api_key",
                secret_key.expose(),
                || PredictionOneError::UnsendableSecretKey,
                |client| client.get(url.clone()),
                deadline,
            )
            .await?;
        response::parse_key(&body).map_err(PredictionOneError::MalformedResponse)
    }
}

/// The error of the last attempt; `Timeout` when no attempt could start.
fn final_error(last: Option<Failure>, attempts: u32) -> PredictionOneError {
    let Some(last) = last else {
        return PredictionOneError::Timeout { attempts };
    };
    match last {
        Failure::Transient(Transient::Throttled) => PredictionOneError::Throttled { attempts },
        Failure::Transient(Transient::Timeout) => PredictionOneError::Timeout { attempts },
        Failure::Transient(Transient::ServerError(status)) => PredictionOneError::Unavailable {
            attempts,
            detail: format!("HTTP {status}"),
        },
        Failure::Tls(why) => PredictionOneError::Unavailable {
            attempts,
            detail: why,
        },
        Failure::Connection => PredictionOneError::Unavailable {
            attempts,
            detail: "connection failed or closed before a complete response".into(),
        },
    }
}

/// reqwest's errors print the URL and more; keep only the class.
pub(super) fn transport_failure(error: reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Transient(Transient::Timeout)
    } else if let Some(why) = crate::tls::failure_of(&error) {
        Failure::Tls(why)
    } else {
        Failure::Connection
    }
}

/// Reads the body, or `None` as soon as it is known to exceed [`MAX_BODY`]
/// (from Content-Length, or while streaming a chunked body).
async fn read_capped(response: &mut reqwest::Response) -> Result<Option<Vec<u8>>, Failure> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_failure)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
