//! `TransferFuture`: the runtime-agnostic future behind the `*_async` buffer methods.
//!
//! It polls the backend event of the buffer's pending transfer and registers the task's waker
//! with it, so any executor (tokio, smol, pollster, a hand-written one) can drive it. Dropping
//! the future early is safe: the buffer keeps the pending transfer and settles it before its
//! next operation or when dropped.

use super::unified::UnifiedBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Resolves when a buffer's asynchronous transfer has completed.
#[must_use = "futures do nothing unless awaited; the transfer still completes, but errors are lost"]
pub struct TransferFuture<'a, T: Element> {
    buf: &'a mut UnifiedBuffer<T>,
    out: Option<&'a mut [T]>,
    error: Option<Error>,
}

impl<T: Element> std::fmt::Debug for TransferFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferFuture").field("buffer", &*self.buf).field("error", &self.error).finish()
    }
}

impl<'a, T: Element> TransferFuture<'a, T> {
    pub(crate) fn new(buf: &'a mut UnifiedBuffer<T>, out: Option<&'a mut [T]>, error: Option<Error>) -> Self {
        TransferFuture { buf, out, error }
    }
}

impl<T: Element> Future for TransferFuture<'_, T> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        match this.buf.raw.poll_settle(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => match this.out.take() {
                Some(out) => Poll::Ready(this.buf.read_range(0, out)),
                None => Poll::Ready(Ok(())),
            },
        }
    }
}
