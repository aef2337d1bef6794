//! Files in S3: the retrain runner reads new training data from one prefix
//! and writes the vendor's results and its start records under another
//! (SPEC section 11).
//!
//! - [`ObjectStore`], the port: find one version of an object, open it as
//!   a stream, save a stream, and read or conditionally write a small
//!   object (the start records of `retrain::starts`).
//! - [`s3`]: the AWS SDK adapter (path-style addressing on loopback).
//! - [`find_as_written`]: an object named as S3 writes keys in its events
//!   (URL-encoded), and the version to read. Key decoding and the choice of
//!   version live here, where the object is opened, not in the runner.
//!
//! Only the retrain runner builds this; the key broker's binary never links
//! the S3 client.

pub mod s3;

use std::future::Future;

use crate::deadline::OutOfTime;
use crate::transfer::Payload;

pub use s3::S3Objects;

/// How an object call failed, by what the caller decides on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("no such object, version or bucket ({0})")]
    NotFound(String),
    #[error("access denied ({0})")]
    AccessDenied(String),
    /// A conditional write or read found the object not as expected
    /// (412 PreconditionFailed, 409 ConditionalRequestConflict).
    #[error("the object changed meanwhile ({0})")]
    Conflict(String),
    /// The stream being saved failed (its source, not S3).
    #[error("the data being saved could not be read: {0}")]
    Source(String),
    #[error("no answer within the time the invocation had left")]
    TimedOut,
    #[error("{0}")]
    Other(String),
}

impl From<OutOfTime> for ObjectError {
    fn from(_: OutOfTime) -> Self {
        ObjectError::TimedOut
    }
}

/// One version of an object, as found: the key it was found under and what
/// tells this version from any other object ever written under that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub bucket: String,
    pub key: String,
    /// `None` in a bucket that never had versioning (S3's "null" version).
    pub version_id: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub length: Option<u64>,
}

impl ObjectVersion {
    /// What names this version uniquely (SPEC section 11): the bucket, the
    /// key and the version id, or without one its ETag and Last-Modified,
    /// so that new content, or the same content uploaded again, is another
    /// object.
    pub fn identity(&self) -> String {
        match &self.version_id {
            Some(v) => format!("s3://{}/{}\nversion {v}", self.bucket, self.key),
            None => format!(
                "s3://{}/{}\netag {}\nlast-modified {}",
                self.bucket,
                self.key,
                self.etag.as_deref().unwrap_or_default(),
                self.last_modified.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// How a small object may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteIf<'a> {
    /// Only if no object has the key (`If-None-Match: *`).
    Absent,
    /// Only if the object is still the one with this ETag (`If-Match`).
    Unchanged(&'a str),
}

/// The port.
pub trait ObjectStore: Send + Sync {
    /// The object `key` (of `version_id`, else the current one), without
    /// its body.
    fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<ObjectVersion, ObjectError>> + Send;

    /// That very version's body as a stream, with its length and content
    /// type (by version id, or by ETag when the bucket has no versions: an
    /// object replaced since it was found is a `Conflict`).
    fn open(
        &self,
        object: &ObjectVersion,
    ) -> impl Future<Output = Result<Payload, ObjectError>> + Send;

    /// Writes `payload` as the object; returns how many bytes were written.
    /// A payload of unknown length is written in parts, so that memory
    /// stays bounded.
    fn save(
        &self,
        bucket: &str,
        key: &str,
        payload: Payload,
    ) -> impl Future<Output = Result<u64, ObjectError>> + Send;

    /// A small object's bytes and ETag, `None` when there is none.
    fn read_small(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, String)>, ObjectError>> + Send;

    /// Writes a small object under a condition; its new ETag, or
    /// `Conflict` when the condition does not hold.
    fn write_small(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        condition: WriteIf<'_>,
    ) -> impl Future<Output = Result<String, ObjectError>> + Send;
}

/// The key as S3 writes it in its event notifications, decoded: `+` as a
/// space and `%XX` as UTF-8 bytes. `None` when it decodes to itself or to
/// something that is not UTF-8.
pub fn decoded_key(key: &str) -> Option<String> {
    let spaced = key.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()?
        .into_owned();
    (decoded != key && !decoded.is_empty() && !decoded.chars().any(char::is_control))
        .then_some(decoded)
}

/// The object a request names (SPEC section 11): `key` as given, or, when
/// no object has that key and it URL-decodes to another one, the decoded
/// key, as S3 writes keys in its events ("red flower.csv" arrives as
/// "red+flower.csv" or "red%20flower.csv"). `version_id` when given, else
/// the current version. The error is the key as given's.
pub async fn find_as_written(
    store: &impl ObjectStore,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<ObjectVersion, ObjectError> {
    let first = match store.head(bucket, key, version_id).await {
        Ok(found) => return Ok(found),
        Err(e) => e,
    };
    // A missing key is NotFound with s3:ListBucket, AccessDenied without;
    // a version id that is not one of this key's may be a 400.
    let retry = matches!(
        first,
        ObjectError::NotFound(_) | ObjectError::AccessDenied(_) | ObjectError::Other(_)
    );
    match decoded_key(key) {
        Some(decoded) if retry => match store.head(bucket, &decoded, version_id).await {
            Ok(found) => {
                tracing::info!("the key was found URL-decoded, as S3 events write keys");
                Ok(found)
            }
            Err(_) => Err(first),
        },
        _ => Err(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_as_s3_events_write_them() {
        for (given, decoded) in [
            (
                "retrain/42/red+flower.csv",
                Some("retrain/42/red flower.csv"),
            ),
            (
                "retrain/42/red%20flower.csv",
                Some("retrain/42/red flower.csv"),
            ),
            ("retrain/42/a%2Bb.csv", Some("retrain/42/a+b.csv")),
            ("retrain/42/100%25.csv", Some("retrain/42/100%.csv")),
            (
                "retrain/42/%E5%A3%B2%E4%B8%8A%20data%2B1.csv",
                Some("retrain/42/売上 data+1.csv"),
            ),
            ("retrain/42/plain.csv", None),
            ("retrain/42/売上.csv", None),
            // Not UTF-8, or a control character: not a key S3 wrote.
            ("retrain/42/%FF.csv", None),
            ("retrain/42/%0A.csv", None),
            // A lone % stays as it is.
            ("retrain/42/100%.csv", None),
        ] {
            assert_eq!(decoded_key(given).as_deref(), decoded, "{given}");
        }
    }

    #[test]
    fn an_object_is_its_version_or_its_etag_and_time() {
        let mut v = ObjectVersion {
            bucket: "b".into(),
            key: "retrain/42/a.csv".into(),
            version_id: None,
            etag: Some("\"e1\"".into()),
            last_modified: Some("2026-12-03T10:00:00Z".into()),
            length: Some(3),
        };
        let unversioned = v.identity();
        v.last_modified = Some("2026-12-03T10:00:01Z".into());
        assert_ne!(v.identity(), unversioned, "uploaded again");
        v.version_id = Some("3HL4kqtJlcpXroDTDmJ".into());
        let versioned = v.identity();
        v.etag = Some("\"e2\"".into());
        assert_eq!(v.identity(), versioned, "a version is itself");
    }
}
