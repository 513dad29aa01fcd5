//! Request bodies that must keep arriving.
//!
//! A client that declares a large body and then sends a byte now and then would hold its
//! handler, its upload reservation and its connection for as long as it likes. Every
//! request body is wrapped: at most `[http] body_idle_timeout_seconds` between two pieces
//! and `body_timeout_seconds` for the whole body. Past either, reading the body fails
//! with [`BodyTimeout`], which handlers answer with 408 `REQUEST_TIMEOUT` ([`is_timeout`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::{ApiError, ErrorCode};

/// Why a body stopped: it stalled, or took too long altogether.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive in time ({0})")]
pub struct BodyTimeout(&'static str);

/// Whether an error from reading a body (any wrapping) is a [`BodyTimeout`].
pub fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyTimeout>(error)
}

/// Whether `E` is the error or any of its sources.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<E>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// The answer to a body that could not be read whole: 408 where it did not arrive in
/// time, 413 where it is over `limit`, 400 otherwise (the client went away mid-body).
#[expect(
    clippy::needless_pass_by_value,
    reason = "the error is the body's end; its source chain is read as `'static`"
)]
pub fn read_error(error: axum::Error, what: &str, limit: usize) -> ApiError {
    if is_timeout(&error) {
        return ApiError::new(ErrorCode::REQUEST_TIMEOUT, error.to_string());
    }
    match caused_by::<http_body_util::LengthLimitError>(&error) {
        true => ApiError::too_large(what, limit as u64),
        false => ApiError::invalid(format!("the {what} could not be read: {error}")),
    }
}

pin_project_lite::pin_project! {
    /// A body whose every piece must come within `idle` and the whole within its deadline.
    pub struct TimedBody {
        #[pin]
        inner: Body,
        #[pin]
        idle_timer: Sleep,
        #[pin]
        deadline: Sleep,
        idle: Duration,
    }
}

impl TimedBody {
    pub fn new(inner: Body, idle: Duration, total: Duration) -> Self {
        let now = Instant::now();
        TimedBody {
            inner,
            idle_timer: tokio::time::sleep_until(now + idle),
            deadline: tokio::time::sleep_until(now + total),
            idle,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_some() {
                this.idle_timer.reset(Instant::now() + *this.idle);
            }
            return Poll::Ready(frame);
        }
        if this.deadline.poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout("whole body")))));
        }
        if this.idle_timer.poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout("stalled")))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: wraps every request body that has one.
pub async fn middleware(
    axum::extract::State(timeouts): axum::extract::State<(Duration, Duration)>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body::Body as _;
    let (idle, total) = timeouts;
    let request = match request.body().is_end_stream() {
        true => request,
        false => request.map(|body| Body::new(TimedBody::new(body, idle, total))),
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real time, in short steps: idle 300 ms, whole body 1.2 s.
    #[tokio::test]
    async fn a_stalled_body_fails_with_a_timeout_and_a_steady_one_arrives() {
        let (idle, total) = (Duration::from_millis(300), Duration::from_millis(1200));
        let (sender, reader) = timed_reader(idle, total);
        sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        sender.send(Ok(Bytes::from_static(b"def"))).await.unwrap();
        // Then nothing: the idle timer (reset by the second piece) fires.
        let error = reader.await.unwrap().unwrap_err();
        assert!(is_timeout(&error), "{error}");
        assert_eq!(
            read_error(error, "upload", 10).code,
            ErrorCode::REQUEST_TIMEOUT
        );
        drop(sender);

        // Steady pieces, each within the idle time, still fail at the whole-body deadline.
        let (sender, reader) = timed_reader(idle, total);
        for _ in 0..10 {
            if sender.send(Ok(Bytes::from_static(b"x"))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(is_timeout(&reader.await.unwrap().unwrap_err()));

        // A body that arrives in time is untouched; one over the limit is 413, not 408.
        let timed = Body::new(TimedBody::new(Body::from("all of it"), idle, total));
        let bytes = axum::body::to_bytes(timed, 1 << 20).await.unwrap();
        assert_eq!(&bytes[..], b"all of it");
        let timed = Body::new(TimedBody::new(Body::from("all of it"), idle, total));
        let error = axum::body::to_bytes(timed, 4).await.unwrap_err();
        assert_eq!(
            read_error(error, "upload", 4).code,
            ErrorCode::CTX_TOO_LARGE
        );
    }

    type Piece = Result<Bytes, std::io::Error>;

    /// A timed body fed from the returned sender, read whole on a task.
    fn timed_reader(
        idle: Duration,
        total: Duration,
    ) -> (
        tokio::sync::mpsc::Sender<Piece>,
        tokio::task::JoinHandle<Result<Bytes, axum::Error>>,
    ) {
        let (sender, rx) = tokio::sync::mpsc::channel::<Piece>(4);
        let timed = Body::new(TimedBody::new(
            Body::from_stream(stream_of(rx)),
            idle,
            total,
        ));
        (sender, tokio::spawn(axum::body::to_bytes(timed, 1 << 20)))
    }

    fn stream_of(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
