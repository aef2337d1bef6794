//! The S3 adapter behind [`ObjectStore`].
//!
//! Bodies are streamed both ways: `open` hands out the SDK's body as it
//! arrives, and `save` gives S3 the caller's stream. A stream of known
//! length is one PutObject (up to S3's 5 GiB limit for it); one of unknown
//! length (a chunked download) or over that limit goes up as a multipart
//! upload in [`PART_SIZE`] parts, so memory holds one part at most.
//!
//! Checksums are computed only when an operation requires one: the SDK's
//! default would wrap a streamed PutObject in `aws-chunked` encoding with a
//! trailing checksum, which S3-compatible stand-ins do not all accept, and
//! HTTPS already protects the bytes in transit. Endpoints on loopback are
//! addressed path-style (SPEC section 11).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::{ObjectError, ObjectStore, ObjectVersion, WriteIf};
use crate::aws::{describe_sdk_error, error_code};
use crate::transfer::{BoxError, Payload};

/// One multipart part: S3's minimum is 5 MiB (but for the last part).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// The largest object one PutObject may write.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

pub struct S3Objects {
    client: Client,
}

impl S3Objects {
    /// The S3 client for `aws`, path-style when the S3 endpoint
    /// (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`) is a loopback host.
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .ok()
            .or_else(|| aws.endpoint_url().map(str::to_string))
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        let path_style = endpoint
            .and_then(|e| url::Url::parse(&e).ok())
            .is_some_and(|u| crate::net::is_loopback(&u));
        let config = aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        S3Objects {
            client: Client::from_conf(config),
        }
    }

    async fn put_whole(
        &self,
        bucket: &str,
        key: &str,
        payload: Payload,
        length: u64,
    ) -> Result<u64, ObjectError> {
        let mut put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(length as i64)
            .body(ByteStream::from_body_1_x(payload.body));
        if let Some(content_type) = payload.content_type {
            put = put.content_type(content_type);
        }
        put.send().await.map_err(object_error)?;
        Ok(length)
    }

    async fn put_in_parts(
        &self,
        bucket: &str,
        key: &str,
        payload: Payload,
    ) -> Result<u64, ObjectError> {
        let mut body = payload.body;
        // A short stream is one PutObject: no multipart upload to manage.
        let first = read_part(&mut body).await?;
        if first.len() < PART_SIZE {
            let length = first.len() as u64;
            let whole = Payload {
                content_type: payload.content_type,
                ..Payload::from_bytes(first)
            };
            return self.put_whole(bucket, key, whole, length).await;
        }
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key);
        if let Some(content_type) = payload.content_type {
            create = create.content_type(content_type);
        }
        let upload_id = create
            .send()
            .await
            .map_err(object_error)?
            .upload_id
            .ok_or_else(|| ObjectError::Other("S3 returned no multipart upload id".into()))?;
        let uploaded = self
            .upload_parts(bucket, key, &upload_id, first, &mut body)
            .await;
        if uploaded.is_err() {
            // Parts of an unfinished upload are billed until aborted.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(error = %describe_sdk_error(&e), "could not abort the multipart upload");
            }
        }
        uploaded
    }

    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut crate::transfer::Body,
    ) -> Result<u64, ObjectError> {
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut part = first;
        loop {
            let number = parts.len() as i32 + 1;
            total += part.len() as u64;
            let done = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(part.len() as i64)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(object_error)?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(done.e_tag)
                    .part_number(number)
                    .build(),
            );
            part = read_part(body).await?;
            if part.is_empty() {
                break;
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(object_error)?;
        Ok(total)
    }
}

/// Up to [`PART_SIZE`] bytes from the stream (fewer only at its end).
async fn read_part(body: &mut crate::transfer::Body) -> Result<Bytes, ObjectError> {
    let mut part = BytesMut::with_capacity(PART_SIZE);
    while part.len() < PART_SIZE {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| ObjectError::Source(source_error(&e)))?;
        if let Ok(data) = frame.into_data() {
            part.extend_from_slice(&data);
        }
    }
    Ok(part.freeze())
}

/// A source stream's error, without anything that could name a URL.
fn source_error(e: &BoxError) -> String {
    if let Some(re) = e.downcast_ref::<reqwest::Error>() {
        return if re.is_timeout() {
            "the download timed out".into()
        } else {
            "the download failed or was cut short".into()
        };
    }
    "the stream failed".into()
}

fn object_error<E>(err: SdkError<E>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = describe_sdk_error(&err);
    match &err {
        SdkError::TimeoutError(_) => return ObjectError::TimedOut,
        // The body being streamed failed while the request was sent.
        SdkError::DispatchFailure(d) if !d.is_io() && !d.is_timeout() => {
            return ObjectError::Source(text);
        }
        _ => {}
    }
    // A HEAD's error has no body, hence no code: its status says it.
    let status = match &err {
        SdkError::ServiceError(s) => s.raw().status().as_u16(),
        _ => 0,
    };
    match (error_code(&err), status) {
        (Some("NoSuchKey" | "NoSuchBucket" | "NoSuchVersion" | "NotFound"), _) | (_, 404) => {
            ObjectError::NotFound(text)
        }
        (Some("AccessDenied" | "AllAccessDisabled" | "InvalidObjectState" | "Forbidden"), _)
        | (_, 403) => ObjectError::AccessDenied(text),
        (Some("PreconditionFailed" | "ConditionalRequestConflict"), _) | (_, 409 | 412) => {
            ObjectError::Conflict(text)
        }
        _ => ObjectError::Other(text),
    }
}

/// Each small call's attempts sized to the time it has (`crate::aws`);
/// never a transfer's, which streams for minutes.
fn sized() -> aws_sdk_s3::config::Builder {
    crate::aws::sized_override!(aws_sdk_s3::config::Builder)
}

/// S3's "null" version is no version at all.
fn version_of(id: Option<String>) -> Option<String> {
    id.filter(|v| !v.is_empty() && v != "null")
}

impl ObjectStore for S3Objects {
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectVersion, ObjectError> {
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(object_error)?;
        Ok(ObjectVersion {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: version_of(out.version_id),
            etag: out.e_tag,
            last_modified: out
                .last_modified
                .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()),
            length: out.content_length.map(|n| n.max(0) as u64),
        })
    }

    async fn open(&self, object: &ObjectVersion) -> Result<Payload, ObjectError> {
        // The version found, and no other: by its id, or by its ETag.
        let if_match = match &object.version_id {
            Some(_) => None,
            None => object.etag.clone(),
        };
        // Sized like a small call: the attempt ends when the headers are
        // in; the body streams after it.
        let object = self
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(object.version_id.clone())
            .set_if_match(if_match)
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(object_error)?;
        Ok(Payload {
            length: object.content_length.map(|n| n.max(0) as u64),
            content_type: object.content_type,
            body: object.body.into_inner().map_err(BoxError::from).boxed(),
        })
    }

    async fn save(&self, bucket: &str, key: &str, payload: Payload) -> Result<u64, ObjectError> {
        match payload.length {
            Some(length) if length <= MAX_SINGLE_PUT => {
                self.put_whole(bucket, key, payload, length).await
            }
            _ => self.put_in_parts(bucket, key, payload).await,
        }
    }

    async fn read_small(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, String)>, ObjectError> {
        let out = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(object_error)
        {
            Ok(out) => out,
            Err(ObjectError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = out.e_tag.clone().unwrap_or_default();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| ObjectError::Other(format!("reading the object failed: {e}")))?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    async fn write_small(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        condition: WriteIf<'_>,
    ) -> Result<String, ObjectError> {
        let put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        let put = match condition {
            WriteIf::Absent => put.if_none_match("*"),
            WriteIf::Unchanged(etag) => put.if_match(etag),
        };
        let out = put
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(object_error)?;
        Ok(out.e_tag.unwrap_or_default())
    }
}
