//! Admission for answers: a fixed number of generation workers, a bounded
//! queue in front of them, and cancellation.
//!
//! Generation is CPU-bound and uses every core, so answers run a few at a
//! time on blocking threads, each holding a [`Slot`]. A request that finds
//! the queue full is refused at once (429) rather than left to time out.
//! Searches do not come through here, so they never wait behind answers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The answer workers and their queue.
pub struct Pool {
    workers: usize,
    queue: usize,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Set on shutdown once the grace period is over: every answer stops.
    stop_all: Arc<AtomicBool>,
}

/// The right to run one answer; the worker is free again when it drops.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Tells a running answer to stop: set by the request's side when the
/// client goes away, checked by the generation loop at every token.
#[derive(Clone)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    stop_all: Arc<AtomicBool>,
    deadline: Instant,
}

/// Why an answer was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The client went away.
    Client,
    /// The deadline passed.
    Deadline,
    /// The server is shutting down.
    Shutdown,
}

impl Cancel {
    /// Whether the answer should stop, and why.
    pub fn stopped(&self) -> Option<Stopped> {
        if self.flag.load(Ordering::Relaxed) {
            Some(Stopped::Client)
        } else if self.stop_all.load(Ordering::Relaxed) {
            Some(Stopped::Shutdown)
        } else if Instant::now() >= self.deadline {
            Some(Stopped::Deadline)
        } else {
            None
        }
    }

    /// Marks the client as gone.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// A guard that cancels when dropped: held by the request's future, so
    /// a client that disconnects (axum drops the future) stops its answer.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            cancel: self.clone(),
            armed: true,
        }
    }
}

/// See [`Cancel::on_drop`].
pub struct CancelOnDrop {
    cancel: Cancel,
    armed: bool,
}

impl CancelOnDrop {
    /// The answer finished normally: dropping no longer cancels.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.cancel.cancel();
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// `workers` answers at once, `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Pool {
        Pool {
            workers,
            queue,
            permits: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            stop_all: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Waits for a worker, or fails at once with 429 when the queue is
    /// full, or with 504 when `deadline` passes first.
    pub async fn admit(&self, deadline: Instant) -> Result<Slot, ApiError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(Slot { _permit: p });
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Busy { retry_after: 5 });
        }
        let _waiting = Waiting(&self.waiting);
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Slot { _permit: p }),
            Ok(Err(_)) => Err(ApiError::Unavailable("the server is shutting down".into())),
            Err(_) => Err(ApiError::Timeout(wait.as_secs())),
        }
    }

    /// A cancellation handle for an answer that must end by `deadline`.
    pub fn cancel_handle(&self, deadline: Instant) -> Cancel {
        Cancel {
            flag: Arc::new(AtomicBool::new(false)),
            stop_all: self.stop_all.clone(),
            deadline,
        }
    }

    /// Stops every running answer (at its next token) and admits no more.
    pub fn stop_all(&self) {
        self.stop_all.store(true, Ordering::SeqCst);
        self.permits.close();
    }

    /// Answers waiting for a worker.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Answers being generated.
    pub fn running(&self) -> usize {
        self.workers - self.permits.available_permits().min(self.workers)
    }
}

/// The deadline for a request that starts now.
pub fn deadline_in(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_is_refused_and_freed_slots_are_reused() {
        let pool = Arc::new(Pool::new(1, 1));
        let far = deadline_in(60);
        let first = pool.admit(far).await.unwrap();
        assert_eq!(pool.running(), 1);
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.admit(far).await.map(|_| ()) });
        while pool.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(pool.admit(far).await, Err(ApiError::Busy { .. })));
        drop(first);
        queued.await.unwrap().unwrap();
        assert_eq!(pool.queued(), 0);
    }

    #[test]
    fn cancel_reports_why() {
        let pool = Pool::new(1, 0);
        let c = pool.cancel_handle(deadline_in(60));
        assert_eq!(c.stopped(), None);
        drop(c.on_drop());
        assert_eq!(c.stopped(), Some(Stopped::Client));
        let c = pool.cancel_handle(Instant::now());
        assert_eq!(c.stopped(), Some(Stopped::Deadline));
        let c = pool.cancel_handle(deadline_in(60));
        c.on_drop().disarm();
        pool.stop_all();
        assert_eq!(c.stopped(), Some(Stopped::Shutdown));
    }
}
