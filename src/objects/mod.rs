//! Files in S3: the retrain runner reads new training data from one prefix
//! and writes the vendor's results under another (SPEC section 11).
//!
//! - [`ObjectStore`], the port: open an object as a stream, save a stream.
//! - [`s3`]: the AWS SDK adapter (path-style addressing on loopback).
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
    #[error("no such object or bucket ({0})")]
    NotFound(String),
    #[error("access denied ({0})")]
    AccessDenied(String),
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

/// The port.
pub trait ObjectStore: Send + Sync {
    /// The object's body as a stream, with its length and content type.
    fn open(
        &self,
        bucket: &str,
        key: &str,
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
}
