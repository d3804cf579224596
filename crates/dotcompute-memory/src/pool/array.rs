//! `ArrayPool<T>`: arrays of [`Element`]s rented by size class.
//!
//! # Size classes
//!
//! Lengths (in elements) are rounded up to a class: `1..=16` share the 16-element class; above
//! that, each power-of-two interval `(2^k, 2^(k+1)]` is split into four equal steps of `2^(k-2)`
//! (20, 24, 28, 32, 40, 48, 56, 64, 80, …). **Waste bound:** a rented array's capacity exceeds
//! the requested length by less than a quarter of that length (`capacity - len < len / 4`) above
//! 16 elements, and by at most 15 elements below. [`array_class`] is the rounding function.
//!
//! # Length
//!
//! A [`Rented`] array dereferences to **exactly the requested length**; the class size is its
//! [`capacity`](Rented::capacity). (Handing out the whole class, as .NET's `ArrayPool` does,
//! invites reading past the data one asked for; here the slack stays hidden.) Fresh arrays
//! are zeroed. Reused ones hold whatever the previous renter wrote (any bit pattern is a valid
//! `Element`) unless [`ArrayPoolOptions::clear_on_return`] is set, in which case every array in
//! the pool is all zeroes.
//!
//! # Structure
//!
//! One bounded lock-free queue (`crossbeam_queue::ArrayQueue`, Vyukov's bounded MPMC queue) per
//! class, created on first return to that class and holding at most
//! `min(max_arrays_per_class, max(1, max_bytes_per_class / class_bytes), MAX_ARRAYS_PER_CLASS)`
//! arrays; a returned array that does not fit is freed. The queue's slots are allocated when it
//! is created, so [`MAX_ARRAYS_PER_CLASS`] bounds that allocation (a few tens of KiB) whatever
//! the options say. Counters are per thread (written by their thread only, with
//! a relaxed load and store) and summed by [`ArrayPool::statistics`]; bytes held are computed
//! from the queue lengths when asked, so rent and return bump no shared counter.
//!
//! # Raw handles
//!
//! Guards make a double return impossible in safe code. For FFI-style code that must pass an
//! integer-like token around, [`ArrayPool::rent_raw`] returns a `Copy` [`ArrayHandle`];
//! [`ArrayPool::return_raw`] detects a second return of the same handle
//! ([`Error::DoubleReturn`]) and a handle from another pool ([`Error::ForeignHandle`]). Each
//! handle carries a generation unique within its pool, so a stale handle can never return an
//! array someone else rented since.

use crate::element::Element;
use crate::error::{byte_len, Error, Result};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock};
use thread_local::ThreadLocal;

/// Smallest class, in elements.
pub const MIN_CLASS_LEN: usize = 16;
/// Most idle arrays a class keeps, whatever [`ArrayPoolOptions::max_arrays_per_class`] and
/// [`ArrayPoolOptions::max_bytes_per_class`] allow: a class's queue has one slot per array it
/// may keep, allocated when the class first gets an array back.
pub const MAX_ARRAYS_PER_CLASS: usize = 1024;
const STEPS_LOG2: u32 = 2;
/// Number of classes (enough for every length whose rounding fits in `usize`).
pub(crate) const CLASS_COUNT: usize = 1 + ((usize::BITS - MIN_CLASS_LEN.trailing_zeros()) as usize) * (1 << STEPS_LOG2);

/// The class a request for `len` elements (`len >= 1`) is served from, as `(index, class_len)`;
/// `None` when rounding would overflow `usize`. `len == 0` maps to the smallest class (the pool
/// itself serves empty requests without an array).
pub fn array_class(len: usize) -> Option<(usize, usize)> {
    if len <= MIN_CLASS_LEN {
        return Some((0, MIN_CLASS_LEN));
    }
    // 2^k < len <= 2^(k+1)
    let k = usize::BITS - 1 - (len - 1).leading_zeros();
    let step = 1usize << (k - STEPS_LOG2);
    let rounded = (len - 1).checked_add(step)? / step * step;
    let j = rounded / step - (1 << STEPS_LOG2); // 1..=4
    let index = 1 + (k - MIN_CLASS_LEN.trailing_zeros()) as usize * (1 << STEPS_LOG2) + (j - 1);
    Some((index, rounded))
}

/// The length of class `index` (the inverse of [`array_class`]); `None` past the last class.
pub fn class_len(index: usize) -> Option<usize> {
    if index == 0 {
        return Some(MIN_CLASS_LEN);
    }
    if index >= CLASS_COUNT {
        return None;
    }
    let k = (index - 1) as u32 / (1 << STEPS_LOG2) + MIN_CLASS_LEN.trailing_zeros();
    let j = (index - 1) % (1 << STEPS_LOG2) + 1;
    (1usize << k).checked_add(j << (k - STEPS_LOG2))
}

/// Options of an [`ArrayPool`]. Build with struct update syntax:
/// `ArrayPoolOptions::default().with_clear_on_return(true)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArrayPoolOptions {
    /// Longest array (in elements) the pool rents; longer requests fail with
    /// [`Error::ArrayTooLarge`]. Default 16 Mi elements.
    pub max_array_len: usize,
    /// Most idle arrays kept per size class (default 32); 0 keeps none. Values above
    /// [`MAX_ARRAYS_PER_CLASS`] (`usize::MAX` included) keep that many.
    pub max_arrays_per_class: usize,
    /// Most idle bytes kept per size class (default 64 MiB), though always room for one array
    /// unless `max_arrays_per_class` is 0. Any value is valid (`usize::MAX`: no byte bound).
    pub max_bytes_per_class: usize,
    /// Zero the used part of each array when it comes back (default off), so renters never see
    /// another renter's data.
    pub clear_on_return: bool,
}

crate::setters::with_setters!(ArrayPoolOptions {
    with_max_array_len => max_array_len: usize,
    with_max_arrays_per_class => max_arrays_per_class: usize,
    with_max_bytes_per_class => max_bytes_per_class: usize,
    with_clear_on_return => clear_on_return: bool,
});

impl Default for ArrayPoolOptions {
    fn default() -> Self {
        ArrayPoolOptions {
            max_array_len: 1 << 24,
            max_arrays_per_class: 32,
            max_bytes_per_class: 64 << 20,
            clear_on_return: false,
        }
    }
}

/// A snapshot of an [`ArrayPool`]'s counters. Exact when no rent or return is in flight; at
/// rest `hits + misses == rents` and `returns == rents - outstanding` (outstanding = rented
/// arrays not yet returned or detached).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArrayPoolStatistics {
    /// Successful rents (guard and raw, empty ones included).
    pub rents: u64,
    /// Rents served from the pool (or empty: nothing to allocate).
    pub hits: u64,
    /// Rents that allocated a fresh array.
    pub misses: u64,
    /// Arrays that came back (guard dropped or `return_raw`), kept or not.
    pub returns: u64,
    /// Returned arrays freed because their class was full.
    pub dropped: u64,
    /// Arrays taken out of the pool with [`Rented::detach`].
    pub detached: u64,
    /// Raw handles rented and not yet returned.
    pub raw_outstanding: u64,
    /// Idle arrays in the pool.
    pub arrays_held: u64,
    /// Bytes of the idle arrays.
    pub bytes_held: u64,
    /// `hits / rents` (0 when there were no rents).
    pub hit_rate: f64,
}

#[derive(Default)]
struct Counters {
    rents: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    returns: AtomicU64,
    dropped: AtomicU64,
    detached: AtomicU64,
}

/// Single-writer increment: only the owning thread writes its counters.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// The idle arrays of one class, created on first return.
type ClassQueue<T> = OnceLock<ArrayQueue<Box<[T]>>>;

struct RawEntry<T> {
    generation: u64,
    /// `None` once returned (or while `with_raw_mut` holds it: then `busy`).
    array: Option<Box<[T]>>,
    busy: bool,
    len: usize,
}

struct RawTable<T> {
    entries: Vec<RawEntry<T>>,
    free: Vec<u32>,
    next_generation: u64,
    outstanding: u64,
}

/// A pool of `[T]` arrays by size class; see the [module docs](self).
///
/// ```
/// use dotcompute_memory::*;
/// # fn main() -> Result<()> {
/// let arrays = ArrayPool::<f32>::new(ArrayPoolOptions::default());
/// {
///     let mut a = arrays.rent(1000)?;     // Rented<f32>: exactly 1000 elements
///     assert_eq!(a.len(), 1000);
///     assert_eq!(a.capacity(), 1024);     // the size class
///     a.fill(1.5);
/// }                                       // back in the pool
/// let b = arrays.rent(900)?;              // same class: reused
/// assert_eq!(arrays.statistics().hits, 1);
/// assert!(matches!(arrays.rent(usize::MAX), Err(Error::ArrayTooLarge { .. })));
/// # drop(b);
/// # Ok(())
/// # }
/// ```
pub struct ArrayPool<T: Element> {
    id: u64,
    options: ArrayPoolOptions,
    classes: Box<[ClassQueue<T>]>,
    counters: ThreadLocal<CachePadded<Counters>>,
    raw: Mutex<RawTable<T>>,
}

impl<T: Element> fmt::Debug for ArrayPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayPool")
            .field("id", &self.id)
            .field("element", &T::TYPE_TAG.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<T: Element> Default for ArrayPool<T> {
    fn default() -> Self {
        Self::new(ArrayPoolOptions::default())
    }
}

fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Element> ArrayPool<T> {
    /// An empty pool. Options that can never serve anything (e.g. `max_array_len == 0`) are
    /// allowed; the pool then fails every non-empty rent with [`Error::ArrayTooLarge`].
    pub fn new(options: ArrayPoolOptions) -> Self {
        ArrayPool {
            id: NEXT_POOL_ID.fetch_add(1, Relaxed),
            options,
            classes: (0..CLASS_COUNT).map(|_| OnceLock::new()).collect(),
            counters: ThreadLocal::new(),
            raw: Mutex::new(RawTable { entries: Vec::new(), free: Vec::new(), next_generation: 1, outstanding: 0 }),
        }
    }

    /// This pool's id (unique in the process); handles record it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The options the pool was made with.
    pub fn options(&self) -> &ArrayPoolOptions {
        &self.options
    }

    #[inline]
    fn counters(&self) -> &Counters {
        self.counters.get_or(|| CachePadded::new(Counters::default()))
    }

    /// Most idle arrays kept for a class of `class_len` elements: the capacity of its queue,
    /// at most [`MAX_ARRAYS_PER_CLASS`].
    fn class_limit(&self, class_len: usize) -> usize {
        if self.options.max_arrays_per_class == 0 {
            return 0;
        }
        let class_bytes = class_len.saturating_mul(std::mem::size_of::<T>()).max(1);
        let by_bytes = (self.options.max_bytes_per_class / class_bytes).max(1);
        self.options.max_arrays_per_class.min(by_bytes).min(MAX_ARRAYS_PER_CLASS)
    }

    /// An array of at least `len` elements: from the pool, or freshly zeroed.
    fn take(&self, len: usize) -> Result<Box<[T]>> {
        if len == 0 {
            let c = self.counters();
            bump(&c.rents);
            bump(&c.hits);
            return Ok(Box::default());
        }
        let too_large = Error::ArrayTooLarge { requested: len, max_array_len: self.options.max_array_len };
        if len > self.options.max_array_len {
            return Err(too_large);
        }
        let (index, class_len) = array_class(len).ok_or(too_large)?;
        byte_len::<T>(class_len)?;
        let c = self.counters();
        if let Some(array) = self.classes[index].get().and_then(ArrayQueue::pop) {
            bump(&c.rents);
            bump(&c.hits);
            return Ok(array);
        }
        let array = bytemuck::allocation::try_zeroed_slice_box::<T>(class_len).map_err(|()| Error::OutOfMemory {
            backend: "host",
            // What the caller asked for (at most the class's bytes, which fit in `isize`).
            requested: (len * std::mem::size_of::<T>()) as u64,
            rounded: (class_len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
            free: 0,
            cached: self.bytes_held(),
            largest_free_block: 0,
        })?;
        bump(&c.rents);
        bump(&c.misses);
        Ok(array)
    }

    /// Takes back an array whose first `used` elements were exposed.
    fn give_back(&self, mut array: Box<[T]>, used: usize) {
        let c = self.counters();
        bump(&c.returns);
        if array.is_empty() {
            return;
        }
        let class = array_class(array.len()).filter(|&(_, class_len)| class_len == array.len());
        let Some((index, class_len)) = class else {
            bump(&c.dropped);
            return;
        };
        let limit = self.class_limit(class_len);
        if limit == 0 {
            bump(&c.dropped);
            return;
        }
        if self.options.clear_on_return {
            array[..used].fill(T::zeroed());
        }
        if self.classes[index].get_or_init(|| ArrayQueue::new(limit)).push(array).is_err() {
            bump(&c.dropped);
        }
    }

    /// Rents an array of exactly `len` elements (capacity: `len` rounded up to its class). The
    /// guard returns it when dropped. `rent(0)` is a valid empty array and allocates nothing.
    ///
    /// # Errors
    ///
    /// [`Error::ArrayTooLarge`] when `len > max_array_len`; [`Error::LengthOverflow`] when the
    /// class's byte size does not fit in `isize`; [`Error::OutOfMemory`] when the allocator
    /// fails.
    pub fn rent(&self, len: usize) -> Result<Rented<'_, T>> {
        Ok(Rented { array: self.take(len)?, len, pool: self })
    }

    /// Rents an array by handle, for code that cannot hold a guard (FFI). Give it back with
    /// [`return_raw`](Self::return_raw); reach its data with [`with_raw_mut`](Self::with_raw_mut)
    /// or [`raw_ptr`](Self::raw_ptr). An unreturned array is freed with the pool.
    ///
    /// # Errors
    ///
    /// As [`rent`](Self::rent).
    pub fn rent_raw(&self, len: usize) -> Result<ArrayHandle> {
        let array = self.take(len)?;
        let mut table = lock(&self.raw);
        let generation = table.next_generation;
        let entry = RawEntry { generation, array: Some(array), busy: false, len };
        let slot = match table.free.pop() {
            Some(slot) => {
                table.entries[slot as usize] = entry;
                slot
            }
            None => {
                let Ok(slot) = u32::try_from(table.entries.len()) else {
                    drop(table);
                    return Err(Error::InvalidArgument {
                        option: "rent_raw",
                        value: format!("{} outstanding handles", u32::MAX),
                        reason: "too many raw handles outstanding; return some first",
                    });
                };
                table.entries.push(entry);
                slot
            }
        };
        table.next_generation += 1;
        table.outstanding += 1;
        Ok(ArrayHandle { pool: self.id, slot, generation, len })
    }

    /// Checks `handle` against the table: the entry it names, if it is live and idle.
    fn entry_mut<'t>(&self, table: &'t mut RawTable<T>, handle: &ArrayHandle) -> Result<&'t mut RawEntry<T>> {
        if handle.pool != self.id {
            return Err(Error::ForeignHandle { handle_pool: handle.pool, pool: self.id });
        }
        let issued = handle.generation < table.next_generation;
        match table.entries.get_mut(handle.slot as usize) {
            Some(entry) if entry.generation == handle.generation && entry.busy => Err(Error::InvalidArgument {
                option: "handle",
                value: handle.to_string(),
                reason: "the array is being accessed by with_raw_mut",
            }),
            Some(entry) if entry.generation == handle.generation && entry.array.is_some() => Ok(entry),
            Some(_) if issued => Err(Error::DoubleReturn { pool: self.id, handle: handle.generation }),
            _ => Err(Error::InvalidArgument {
                option: "handle",
                value: handle.to_string(),
                reason: "this pool never issued that handle",
            }),
        }
    }

    /// Returns a raw-rented array.
    ///
    /// # Errors
    ///
    /// [`Error::DoubleReturn`] when the handle was already returned; [`Error::ForeignHandle`]
    /// when another pool issued it; [`Error::InvalidArgument`] for a handle no pool issued or
    /// one whose array is inside [`with_raw_mut`](Self::with_raw_mut). Nothing changes on error.
    pub fn return_raw(&self, handle: ArrayHandle) -> Result<()> {
        let mut table = lock(&self.raw);
        let entry = self.entry_mut(&mut table, &handle)?;
        let array = entry.array.take();
        let used = entry.len;
        table.free.push(handle.slot);
        table.outstanding -= 1;
        drop(table);
        self.give_back(array.unwrap_or_default(), used);
        Ok(())
    }

    /// Runs `f` on the `len` elements of a raw-rented array. The pool's lock is not held while
    /// `f` runs, so `f` may use the pool; returning the same handle inside `f` is an error.
    ///
    /// # Errors
    ///
    /// As [`return_raw`](Self::return_raw) (a returned handle gives [`Error::DoubleReturn`]).
    pub fn with_raw_mut<R>(&self, handle: ArrayHandle, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        let (array, len) = {
            let mut table = lock(&self.raw);
            let entry = self.entry_mut(&mut table, &handle)?;
            entry.busy = true;
            (entry.array.take(), entry.len)
        };
        /// Puts the array back even if `f` panics.
        struct Restore<'p, T: Element> {
            pool: &'p ArrayPool<T>,
            slot: u32,
            array: Option<Box<[T]>>,
        }
        impl<T: Element> Drop for Restore<'_, T> {
            fn drop(&mut self) {
                let mut table = lock(&self.pool.raw);
                if let Some(entry) = table.entries.get_mut(self.slot as usize) {
                    entry.array = self.array.take();
                    entry.busy = false;
                }
            }
        }
        let mut restore = Restore { pool: self, slot: handle.slot, array };
        let result = match restore.array.as_mut() {
            Some(array) => f(&mut array[..len]),
            None => unreachable!("entry_mut only yields entries that hold their array"),
        };
        drop(restore);
        Ok(result)
    }

    /// A pointer to the first of the `len` elements of a raw-rented array, for foreign code.
    /// It stays valid until the handle is returned or the pool dropped, but not across a call
    /// to [`with_raw_mut`](Self::with_raw_mut) on the same handle (get it again after).
    ///
    /// # Errors
    ///
    /// As [`return_raw`](Self::return_raw).
    pub fn raw_ptr(&self, handle: ArrayHandle) -> Result<*mut T> {
        let mut table = lock(&self.raw);
        let entry = self.entry_mut(&mut table, &handle)?;
        match entry.array.as_mut() {
            Some(array) => Ok(array.as_mut_ptr()),
            None => unreachable!("entry_mut only yields entries that hold their array"),
        }
    }

    /// Frees every idle array; returns the bytes released.
    pub fn clear(&self) -> u64 {
        let mut freed = 0u64;
        for (index, slot) in self.classes.iter().enumerate() {
            let Some(queue) = slot.get() else { continue };
            let bytes = class_len(index).unwrap_or(0).saturating_mul(std::mem::size_of::<T>()) as u64;
            while let Some(array) = queue.pop() {
                drop(array);
                freed += bytes;
            }
        }
        freed
    }

    fn bytes_held(&self) -> u64 {
        self.held().1
    }

    /// (arrays, bytes) idle in the pool.
    fn held(&self) -> (u64, u64) {
        let mut arrays = 0u64;
        let mut bytes = 0u64;
        for (index, slot) in self.classes.iter().enumerate() {
            let Some(queue) = slot.get() else { continue };
            let n = queue.len() as u64;
            arrays += n;
            bytes += n * class_len(index).unwrap_or(0).saturating_mul(std::mem::size_of::<T>()) as u64;
        }
        (arrays, bytes)
    }

    /// A snapshot of the counters.
    pub fn statistics(&self) -> ArrayPoolStatistics {
        let mut s = ArrayPoolStatistics::default();
        for c in self.counters.iter() {
            s.rents += c.rents.load(Relaxed);
            s.hits += c.hits.load(Relaxed);
            s.misses += c.misses.load(Relaxed);
            s.returns += c.returns.load(Relaxed);
            s.dropped += c.dropped.load(Relaxed);
            s.detached += c.detached.load(Relaxed);
        }
        s.raw_outstanding = lock(&self.raw).outstanding;
        (s.arrays_held, s.bytes_held) = self.held();
        if s.rents > 0 {
            s.hit_rate = s.hits as f64 / s.rents as f64;
        }
        s
    }
}

/// A token for a raw-rented array (see [`ArrayPool::rent_raw`]). Plain data: copying it does
/// not copy the array, and the pool detects a second return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArrayHandle {
    pool: u64,
    slot: u32,
    generation: u64,
    len: usize,
}

impl ArrayHandle {
    /// Id of the pool that issued the handle.
    pub fn pool_id(&self) -> u64 {
        self.pool
    }
    /// The handle's id, unique within its pool.
    pub fn id(&self) -> u64 {
        self.generation
    }
    /// Elements requested.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for an empty array.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for ArrayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handle {} of pool {} ({} elements)", self.generation, self.pool, self.len)
    }
}

/// An array on loan from an [`ArrayPool`]: dereferences to exactly the requested number of
/// elements and goes back to the pool when dropped.
pub struct Rented<'a, T: Element> {
    array: Box<[T]>,
    len: usize,
    pool: &'a ArrayPool<T>,
}

impl<T: Element> Rented<'_, T> {
    /// The size class: how many elements the underlying array has (at least `len()`).
    pub fn capacity(&self) -> usize {
        self.array.len()
    }

    /// Keeps the array: it leaves the pool for good, as a `Vec` of the requested length whose
    /// capacity is the class size.
    pub fn detach(mut this: Self) -> Vec<T> {
        bump(&this.pool.counters().detached);
        let mut v = std::mem::take(&mut this.array).into_vec();
        v.truncate(this.len);
        // Nothing left to give back; skip Drop so the return is not counted.
        std::mem::forget(this);
        v
    }
}

impl<T: Element> Deref for Rented<'_, T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        &self.array[..self.len]
    }
}

impl<T: Element> DerefMut for Rented<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.array[..self.len]
    }
}

impl<T: Element> Drop for Rented<'_, T> {
    fn drop(&mut self) {
        let array = std::mem::take(&mut self.array);
        self.pool.give_back(array, self.len);
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for Rented<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rented").field("len", &self.len).field("capacity", &self.capacity()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_known_values_and_inverse() {
        assert_eq!(array_class(1), Some((0, 16)));
        assert_eq!(array_class(16), Some((0, 16)));
        assert_eq!(array_class(17), Some((1, 20)));
        assert_eq!(array_class(1000), Some((array_class(1024).unwrap().0, 1024)));
        assert_eq!(array_class(1025), Some((array_class(1024).unwrap().0 + 1, 1280)));
        assert_eq!(array_class(usize::MAX), None);
        for index in 0..CLASS_COUNT {
            let Some(len) = class_len(index) else { continue };
            assert_eq!(array_class(len), Some((index, len)), "class {index}");
        }
        assert_eq!(class_len(CLASS_COUNT), None);
    }
}
