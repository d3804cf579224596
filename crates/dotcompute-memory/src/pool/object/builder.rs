//! [`ObjectPoolBuilder`]: the options of an [`ObjectPool`], their validation, and the hooks it
//! calls on objects.

use super::eviction::{EvictionPolicy, Maintainer};
use super::reserve::Shared;
use super::ObjectPool;
use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use thread_local::ThreadLocal;

/// Default `max_size`.
pub const DEFAULT_MAX_SIZE: usize = 1024;
/// Default per-thread cache capacity.
pub const DEFAULT_THREAD_CACHE: usize = 16;

/// Creates an object (pre-warming and misses).
pub(super) type CreateFn<T> = Box<dyn Fn() -> T + Send + Sync>;
/// Resets an object coming back.
pub(super) type ResetFn<T> = Box<dyn Fn(&mut T) + Send + Sync>;
/// Accepts (`true`) or rejects an object coming back.
pub(super) type ValidateFn<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// Builder for [`ObjectPool`]; see [`ObjectPool::builder`].
pub struct ObjectPoolBuilder<T> {
    create: CreateFn<T>,
    reset: Option<ResetFn<T>>,
    validate: Option<ValidateFn<T>>,
    max_size: usize,
    min_size: usize,
    eviction: EvictionPolicy,
    maintenance_interval: Option<Duration>,
    metrics: bool,
    thread_cache: usize,
}

impl<T> fmt::Debug for ObjectPoolBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectPoolBuilder")
            .field("max_size", &self.max_size)
            .field("min_size", &self.min_size)
            .field("eviction", &self.eviction)
            .field("maintenance_interval", &self.maintenance_interval)
            .field("metrics", &self.metrics)
            .field("thread_cache", &self.thread_cache)
            .field("reset", &self.reset.is_some())
            .field("validate", &self.validate.is_some())
            .finish()
    }
}

impl<T: Send + 'static> ObjectPoolBuilder<T> {
    /// Called on every object coming back, after `validate` accepted it.
    pub fn reset(mut self, reset: impl Fn(&mut T) + Send + Sync + 'static) -> Self {
        self.reset = Some(Box::new(reset));
        self
    }

    /// Called on every object coming back; `false` drops it (counted in `dropped_invalid`).
    pub fn validate(mut self, validate: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.validate = Some(Box::new(validate));
        self
    }

    /// The most idle objects the pool keeps, thread caches included (default
    /// [`DEFAULT_MAX_SIZE`]); must be at least 1. Objects returned beyond it are dropped. Any
    /// value up to `usize::MAX` is valid: it is a bound, not a size to allocate (the shared tier
    /// grows as objects come back).
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// Objects created by `build()` (pre-warmed), and the floor eviction keeps (default 0).
    /// `build()` calls the pool's `create` this many times.
    pub fn min_size(mut self, min_size: usize) -> Self {
        self.min_size = min_size;
        self
    }

    /// When maintenance drops idle objects (default [`EvictionPolicy::None`]).
    pub fn eviction(mut self, policy: EvictionPolicy) -> Self {
        self.eviction = policy;
        self
    }

    /// Runs [`ObjectPool::maintain`] on a background thread at this interval; the thread stops
    /// when the pool is dropped. Without it, call `maintain()` yourself.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = Some(interval);
        self
    }

    /// Whether to count gets, hits, returns, … (default on; the counters are per-thread and
    /// cost about a nanosecond per get/return pair). Off, statistics report only sizes and
    /// evictions.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Objects each thread caches privately (default [`DEFAULT_THREAD_CACHE`], clamped to
    /// `max_size` and to [`MAX_THREAD_CACHE`]). 0 sends every get and return through the shared
    /// queue, where every idle object is visible to all threads and to maintenance, at several
    /// atomic operations and an allocation per pair (roughly ten times the cost of a cached
    /// pair).
    ///
    /// [`MAX_THREAD_CACHE`]: super::MAX_THREAD_CACHE
    pub fn thread_cache(mut self, objects: usize) -> Self {
        self.thread_cache = objects;
        self
    }

    /// Validates the options, creates `min_size` objects and starts the maintenance thread.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `max_size` is 0, `min_size > max_size`, or the
    /// maintenance interval is zero; [`Error::ThreadSpawn`] when the maintenance thread cannot
    /// be started.
    pub fn build(self) -> Result<ObjectPool<T>> {
        if self.max_size == 0 {
            return Err(Error::InvalidArgument {
                option: "max_size",
                value: "0".into(),
                reason: "a pool must be able to keep at least one object",
            });
        }
        if self.min_size > self.max_size {
            return Err(Error::InvalidArgument {
                option: "min_size",
                value: format!("{} (max_size is {})", self.min_size, self.max_size),
                reason: "min_size must not exceed max_size",
            });
        }
        if self.maintenance_interval == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument {
                option: "maintenance_interval",
                value: "0s".into(),
                reason: "the interval must be positive",
            });
        }
        let idle_time = match self.eviction {
            EvictionPolicy::None => None,
            EvictionPolicy::IdleTime(d) => Some(d),
        };
        let prewarm = (0..self.min_size).map(|_| (self.create)());
        let shared = Arc::new(Shared::new(self.max_size, self.thread_cache, idle_time, prewarm));
        let maintainer = match self.maintenance_interval {
            Some(interval) => Some(Maintainer::start(Arc::downgrade(&shared), interval)?),
            None => None,
        };
        Ok(ObjectPool {
            shared,
            slots: ThreadLocal::new(),
            create: self.create,
            reset: self.reset,
            validate: self.validate,
            metrics: self.metrics,
            maintainer,
        })
    }
}

impl<T> ObjectPoolBuilder<T> {
    /// The defaults, with `create` as the pool's constructor.
    pub(super) fn new(create: CreateFn<T>) -> Self {
        ObjectPoolBuilder {
            create,
            reset: None,
            validate: None,
            max_size: DEFAULT_MAX_SIZE,
            min_size: 0,
            eviction: EvictionPolicy::None,
            maintenance_interval: None,
            metrics: true,
            thread_cache: DEFAULT_THREAD_CACHE,
        }
    }
}
