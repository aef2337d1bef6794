//! A file on its way between S3 and Prediction One's pre-signed URLs: a
//! streamed body, its length when known, and its content type.
//!
//! Both ends speak `http-body` 1 (the AWS SDK's `SdkBody` and reqwest's
//! `Body`), so a body is handed from one client to the other as a boxed
//! `http_body::Body` and never collected: memory stays bounded by the two
//! clients' buffers whatever the file's size (SPEC section 11). The two
//! adapters that produce and consume it (`objects::s3`,
//! `prediction_one::retrain`) meet only here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock, which tests can pause and advance.
use tokio::time::Instant;

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

impl Payload {
    /// The same payload, its bytes counted into `progress` as they are
    /// read from it (by whichever client sends them on).
    pub fn watched(self, progress: &Progress) -> Self {
        Payload {
            body: Watched {
                inner: self.body,
                progress: progress.clone(),
            }
            .boxed(),
            ..self
        }
    }
}

/// A body that counts what is read from it. Written by hand because
/// http-body-util's `map_frame` forgets the inner body's size hint, and a
/// body of known length must stay one (a PutObject sends it whole).
struct Watched {
    inner: Body,
    progress: Progress,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.progress.moved(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How far a transfer has come, and when it last moved: the runner's
/// heartbeat tells a stalled transfer (no byte moved for a while) from a
/// slow one, so that a stall costs a retry, not the invocation.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Counters>);

#[derive(Debug)]
struct Counters {
    started: Instant,
    bytes: AtomicU64,
    /// Milliseconds after `started` of the last move.
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(Counters {
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }))
    }
}

impl Progress {
    fn moved(&self, n: usize) {
        let c = &self.0;
        c.bytes.fetch_add(n as u64, Ordering::Relaxed);
        c.last_ms
            .store(c.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Bytes moved so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// How long since a byte last moved (or since the start).
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed));
        self.0.started.elapsed().saturating_sub(last)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watched_payload_counts_what_is_read() {
        let progress = Progress::default();
        let payload = Payload::from_bytes(vec![7u8; 1000]).watched(&progress);
        assert_eq!(progress.bytes(), 0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(progress.idle() >= Duration::from_millis(30));
        assert_eq!(
            http_body::Body::size_hint(&payload.body).exact(),
            Some(1000)
        );
        let read = payload.body.collect().await.unwrap().to_bytes();
        assert_eq!(read.len(), 1000);
        assert_eq!(progress.bytes(), 1000);
        assert!(progress.idle() < Duration::from_millis(30));
    }
}
