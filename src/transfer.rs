//! A file on its way between S3 and Prediction One's pre-signed URLs: a
//! streamed body, its length when known, and its content type.
//!
//! Both ends speak `http-body` 1 (the AWS SDK's `SdkBody` and reqwest's
//! `Body`), so a body is handed from one client to the other as a boxed
//! `http_body::Body` and never collected: memory stays bounded by the two
//! clients' buffers whatever the file's size (SPEC section 11). The two
//! adapters that produce and consume it (`objects::s3`,
//! `prediction_one::retrain`) meet only here.

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

/// Any error a body's source can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A file being moved: read from S3 or from a download URL.
pub struct Payload {
    pub body: Body,
    /// From Content-Length; `None` for a chunked download.
    pub length: Option<u64>,
    pub content_type: Option<String>,
}

impl Payload {
    /// A body held in memory (tests, small files).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes: Bytes = bytes.into();
        let length = bytes.len() as u64;
        Payload {
            body: http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed(),
            length: Some(length),
            content_type: None,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("length", &self.length)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}
