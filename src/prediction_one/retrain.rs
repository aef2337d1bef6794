//! The vendor's retraining API (`vendor-retrain-api.md`): the port the
//! retrain runner calls ([`RetrainApi`]) and its HTTP adapter on the same
//! client as Get API Key.
//!
//! Three JSON calls, each with the model's retrain key in `x-api-key`, go
//! through the client's retry loop. The two transfers go to pre-signed URLs
//! on other hosts: no `x-api-key` (the URL is the credential), no redirects,
//! https only (but loopback), and the URL is never printed, so transport
//! errors are reduced to their class before they are reported. A transfer
//! streams its body; its timeout is the time the invocation has left, not
//! the per-call `P1_HTTP_TIMEOUT_MS`.

use std::future::Future;

use reqwest::Url;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;

use super::{PredictionOneClient, PredictionOneError};
use crate::deadline::Deadline;
use crate::sensitive::{ApiKey, PresignedUrl};
use crate::transfer::{BoxError, Payload};

/// A new retrain job and where its data goes.
#[derive(Debug)]
pub struct UploadTicket {
    pub retrain_job_id: String,
    pub upload_url: PresignedUrl,
}

/// A job status as the vendor reports it.
#[derive(Debug)]
pub struct JobStatus {
    /// Raw: only `job_finished` is documented.
    pub status: String,
    pub message: Option<String>,
    pub download_url: Option<PresignedUrl>,
}

/// How a transfer to or from a pre-signed URL failed. The text never holds
/// the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// 408, 429, 5xx or a broken connection: another attempt may succeed.
    Retryable(String),
    /// The URL answered a 4xx other than 408 and 429: it will refuse the
    /// same data again.
    Refused(String),
    /// Anything else, including running out of time.
    Permanent(String),
    /// The URL itself may not be used (not https off loopback, not a URL):
    /// nothing was sent.
    Unusable(String),
}

impl TransferError {
    pub fn detail(&self) -> &str {
        match self {
            TransferError::Retryable(d)
            | TransferError::Refused(d)
            | TransferError::Permanent(d)
            | TransferError::Unusable(d) => d,
        }
    }
}

/// The port.
pub trait RetrainApi: Send + Sync {
    /// Creates a retrain job for the key's model: its id and upload URL.
    fn upload_url(
        &self,
        api_key: &ApiKey,
        filename: &str,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<UploadTicket, PredictionOneError>> + Send;

    fn job_status(
        &self,
        api_key: &ApiKey,
        retrain_job_id: &str,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<JobStatus, PredictionOneError>> + Send;

    /// Switches the model API to the job's retrained model.
    fn update_model(
        &self,
        api_key: &ApiKey,
        retrain_job_id: &str,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<(), PredictionOneError>> + Send;

    /// One PUT of `payload` (of known length) to the upload URL, by the
    /// deadline's work point.
    fn upload(
        &self,
        url: &PresignedUrl,
        payload: Payload,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<(), TransferError>> + Send;

    /// One GET of the results: the body as it arrives.
    fn download(
        &self,
        url: &PresignedUrl,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<Payload, TransferError>> + Send;
}

const JOBS_PATH: &str = "/v1/external/retrain_jobs";

impl PredictionOneClient {
    /// `{base}/v1/external/retrain_jobs/{id}[/{tail}]`, the id
    /// percent-encoded as one path segment.
    fn job_url(&self, retrain_job_id: &str, tail: Option<&str>) -> Url {
        let mut url = self.base.clone();
        url.set_path(JOBS_PATH);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(retrain_job_id);
            if let Some(tail) = tail {
                segments.push(tail);
            }
        }
        url
    }
}

/// A pre-signed URL that may be used (`crate::net::transfer_refusal`):
/// https to a public host, or anything http(s) in local runs.
fn usable(url: &PresignedUrl, what: &str, local: bool) -> Result<Url, TransferError> {
    let parsed = Url::parse(url.expose())
        .map_err(|_| TransferError::Unusable(format!("the {what} URL is not a URL")))?;
    if let Some(why) = crate::net::transfer_refusal(&parsed, local) {
        return Err(TransferError::Unusable(format!(
            "the {what} URL {why} (plain http, loopback and private addresses are accepted only in local runs, when P1_API_BASE_URL is on loopback)"
        )));
    }
    Ok(parsed)
}

/// A transport error's class, without the URL reqwest would print. A
/// timeout is final only when the invocation's work time is up (the
/// transfer's timeout is that time); a connect timeout is worth another
/// attempt.
fn transport(error: &reqwest::Error, what: &str, deadline: &Deadline) -> TransferError {
    if crate::net::refused_by_resolver(error) {
        TransferError::Unusable(format!(
            "the {what} URL names a host that resolves to no public address; nothing was sent"
        ))
    } else if let Some(why) = crate::tls::failure_of(error) {
        TransferError::Permanent(format!("{why} (for the {what})"))
    } else if error.is_connect() {
        TransferError::Retryable(format!("could not connect for the {what}"))
    } else if error.is_timeout() && deadline.work_left() < OUT_OF_TIME {
        TransferError::Permanent(format!(
            "the {what} did not complete within the time the invocation had left"
        ))
    } else if error.is_timeout() {
        TransferError::Retryable(format!("the {what} timed out"))
    } else {
        TransferError::Retryable(format!("the connection failed during the {what}"))
    }
}

/// Less work time than this left means the transfer was ended by the
/// deadline.
const OUT_OF_TIME: std::time::Duration = std::time::Duration::from_millis(100);

fn status_error(status: u16, what: &str) -> TransferError {
    let detail = format!("the {what} was answered with HTTP {status}");
    match status {
        408 | 429 | 500.. => TransferError::Retryable(detail),
        400..500 => TransferError::Refused(detail),
        _ => TransferError::Permanent(detail),
    }
}

/// A string field, or a number written as one (ids may be either).
fn text_field(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl RetrainApi for PredictionOneClient {
    async fn upload_url(
        &self,
        api_key: &ApiKey,
        filename: &str,
        deadline: &Deadline,
    ) -> Result<UploadTicket, PredictionOneError> {
        let mut url = self.base.clone();
        url.set_path(&format!("{JOBS_PATH}/upload_url"));
        url.query_pairs_mut().append_pair("filename", filename);
        let body = self
            .call(
                "upload_url",
                "retrain_job_id",
                api_key.expose(),
                unsendable_key,
                |client| client.get(url.clone()),
                deadline,
            )
            .await?;
        let retrain_job_id = text_field(&body, "retrain_job_id").ok_or_else(|| {
            PredictionOneError::MalformedResponse(
                "no retrain_job_id in the upload URL answer".into(),
            )
        })?;
        let upload_url = match body.get("upload_url") {
            Some(Value::String(u)) if !u.trim().is_empty() => PresignedUrl::new(u.trim()),
            _ => {
                return Err(PredictionOneError::MalformedResponse(
                    "no upload_url in the upload URL answer".into(),
                ));
            }
        };
        Ok(UploadTicket {
            retrain_job_id,
            upload_url,
        })
    }

    async fn job_status(
        &self,
        api_key: &ApiKey,
        retrain_job_id: &str,
        deadline: &Deadline,
    ) -> Result<JobStatus, PredictionOneError> {
        let url = self.job_url(retrain_job_id, None);
        let body = self
            .call(
                "job_status",
                "status",
                api_key.expose(),
                unsendable_key,
                |client| client.get(url.clone()),
                deadline,
            )
            .await?;
        let status = match body.get("status") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(PredictionOneError::MalformedResponse(
                    "no status in the retrain job answer".into(),
                ));
            }
        };
        // Raw (SPEC section 11), but never with the key in it.
        let redacted = |text: &str| match api_key.expose() {
            "" => text.to_string(),
            key => text.replace(key, "<redacted>"),
        };
        let message = match body.get("message") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(bounded_message(&redacted(s))),
            Some(other) => Some(bounded_message(&redacted(&other.to_string()))),
        };
        let download_url = match body.get("download_url") {
            Some(Value::String(u)) if !u.trim().is_empty() => Some(PresignedUrl::new(u.trim())),
            _ => None,
        };
        Ok(JobStatus {
            status,
            message,
            download_url,
        })
    }

    async fn update_model(
        &self,
        api_key: &ApiKey,
        retrain_job_id: &str,
        deadline: &Deadline,
    ) -> Result<(), PredictionOneError> {
        let url = self.job_url(retrain_job_id, Some("update_model"));
        self.call(
            "update_model",
            "metadata",
            api_key.expose(),
            unsendable_key,
            |client| client.put(url.clone()).header(CONTENT_LENGTH, 0),
            deadline,
        )
        .await
        .map(|_| ())
    }

    async fn upload(
        &self,
        url: &PresignedUrl,
        payload: Payload,
        deadline: &Deadline,
    ) -> Result<(), TransferError> {
        let url = usable(url, "upload", self.is_local())?;
        let length = payload.length.ok_or_else(|| {
            TransferError::Permanent(
                "the data's length is unknown; a pre-signed PUT needs it".into(),
            )
        })?;
        let client = self
            .transfer_client()
            .map_err(|e| TransferError::Permanent(e.to_string()))?;
        // No x-api-key and no Content-Type: the manual's examples send
        // neither, and a header the URL was not signed with can void it.
        let response = client
            .put(url)
            .header(CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap(payload.body))
            .timeout(deadline.work_left())
            .send()
            .await
            .map_err(|e| transport(&e, "upload", deadline))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(status_error(status, "upload"))
        }
    }

    async fn download(
        &self,
        url: &PresignedUrl,
        deadline: &Deadline,
    ) -> Result<Payload, TransferError> {
        use http_body_util::BodyExt;
        let url = usable(url, "download", self.is_local())?;
        let client = self
            .transfer_client()
            .map_err(|e| TransferError::Permanent(e.to_string()))?;
        // The timeout covers reading the body too: it ends with the work time.
        let response = client
            .get(url)
            .timeout(deadline.work_left())
            .send()
            .await
            .map_err(|e| transport(&e, "download", deadline))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(status_error(status, "download"));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Payload {
            length: response.content_length(),
            content_type,
            body: reqwest::Body::from(response)
                .map_err(BoxError::from)
                .boxed(),
        })
    }
}

/// The most of a vendor's job message that is passed on: it ends up in a
/// Step Functions failure cause (at most 32,768 characters) with more text
/// around it.
pub const MAX_MESSAGE: usize = 4096;

/// A vendor's job message as passed on (SPEC section 11's raw message,
/// made safe): any URL in it, which could be a pre-signed one, replaced by
/// `<url>`, and cut to [`MAX_MESSAGE`] characters.
pub fn bounded_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE));
    let mut rest = text;
    loop {
        // ASCII lower-casing keeps every byte offset.
        let lower = rest.to_ascii_lowercase();
        let Some(at) = [lower.find("https://"), lower.find("http://")]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        out.push_str(&rest[..at]);
        out.push_str("<url>");
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    if out.chars().count() > MAX_MESSAGE {
        let cut: String = out.chars().take(MAX_MESSAGE - 1).collect();
        return format!("{cut}…");
    }
    out
}

fn unsendable_key() -> PredictionOneError {
    PredictionOneError::MalformedResponse(
        "the stored API key holds characters that cannot be sent in an HTTP header".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_messages_are_scrubbed_of_urls_and_bounded() {
        assert_eq!(
            bounded_message(
                "failed: see https://bucket.s3.amazonaws.com/x?X-Amz-Signature=abc for logs"
            ),
            "failed: see <url> for logs"
        );
        assert_eq!(
            bounded_message("HTTP://a.example/1 and 'http://b/2'"),
            "<url> and '<url>'"
        );
        assert_eq!(bounded_message("plain 売上"), "plain 売上");
        let long = "é".repeat(MAX_MESSAGE * 3);
        let cut = bounded_message(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE);
        assert!(cut.ends_with('…'));
    }
}
