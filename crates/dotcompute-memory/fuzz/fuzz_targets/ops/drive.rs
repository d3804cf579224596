//! Driving the asynchronous forms: to completion, polled once, or dropped unpolled.

use super::*;

pub(crate) struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls, parks until woken, polls again.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// What a driven future gave: its result, or nothing when it was dropped before resolving.
pub(crate) fn drive<F: Future>(f: F, how: Drive) -> Option<F::Output> {
    match how {
        Drive::Block => Some(block_on(f)),
        Drive::PollOnce => {
            let mut f = std::pin::pin!(f);
            match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(v) => Some(v),
                Poll::Pending => None,
            }
        }
        Drive::Drop => {
            drop(f);
            None
        }
    }
}
