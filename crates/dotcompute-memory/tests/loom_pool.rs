//! Loom model of the ObjectPool hand-off protocol: per-thread stacks with reservations, the
//! shared tier, the budget, and maintenance passes racing with owners.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p dotcompute-memory --test loom_pool --release`.
//! Loom cannot see inside crossbeam, so under `--cfg loom` the shared tier is a loom mutex
//! around a deque and every atomic of the protocol is loom's; the model checks our logic, not
//! crossbeam's queue.
#![cfg(loom)]

use dotcompute_memory::pool::object::model::{Core, Local};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

/// Exhaustive exploration (no preemption bound): the three models run about 57,000
/// executions in all, a few seconds in release mode.
fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = None;
    b
}

/// Objects are ids; the model checks that none is lost or duplicated.
struct World {
    core: Core<usize>,
    next_id: AtomicUsize,
}

impl World {
    fn new(max_size: usize, thread_cache: usize, idle: Option<Duration>, prewarm: usize) -> Arc<Self> {
        Arc::new(World {
            core: Core::new(max_size, thread_cache, idle, (0..prewarm).collect()),
            next_id: AtomicUsize::new(prewarm),
        })
    }
    fn create(&self) -> usize {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// What one thread ends with: its stack and everything it dropped.
struct Outcome {
    local: Local<usize>,
    gone: Vec<usize>,
}

/// Checks the reservation invariant and that every created id is in exactly one place.
fn check(world: &World, outcomes: Vec<Outcome>, max_size: usize, held: Vec<usize>) {
    let quotas: usize = outcomes.iter().map(|o| o.local.quota()).sum();
    assert_eq!(world.core.budget() + quotas + world.core.global_len(), max_size, "reservations leaked");
    for o in &outcomes {
        assert!(o.local.len() <= o.local.quota(), "a stack holds more than it reserved");
    }
    let idle: usize = outcomes.iter().map(|o| o.local.len()).sum::<usize>() + world.core.global_len();
    assert!(idle <= max_size, "{idle} idle objects exceed max_size {max_size}");
    let mut all = held;
    all.extend(world.core.drain_global());
    for mut o in outcomes {
        all.extend(o.local.drain());
        all.extend(o.gone);
    }
    all.sort_unstable();
    let created = world.next_id.load(Ordering::Relaxed);
    assert_eq!(all, (0..created).collect::<Vec<_>>(), "an object was lost or duplicated");
}

/// Two owners get and return through their stacks and the shared tier at once; one returns more
/// than its stack can hold (spill), the other refills from the shared tier.
#[test]
fn two_owners_hand_off_through_the_shared_tier() {
    builder().check(|| {
        let max_size = 2;
        let world = World::new(max_size, 1, None, 1);
        let w1 = world.clone();
        let a = thread::spawn(move || {
            let mut local = w1.core.local();
            let mut gone = Vec::new();
            let x = w1.core.take(&mut local, &mut gone).unwrap_or_else(|| w1.create());
            let y = w1.create();
            for obj in [x, y] {
                if let Err(obj) = w1.core.put(&mut local, obj, &mut gone) {
                    gone.push(obj);
                }
            }
            Outcome { local, gone }
        });
        let w2 = world.clone();
        let b = thread::spawn(move || {
            let mut local = w2.core.local();
            let mut gone = Vec::new();
            let x = w2.core.take(&mut local, &mut gone).unwrap_or_else(|| w2.create());
            if let Err(obj) = w2.core.put(&mut local, x, &mut gone) {
                gone.push(obj);
            }
            Outcome { local, gone }
        });
        let outcomes = vec![a.join().unwrap(), b.join().unwrap()];
        check(&world, outcomes, max_size, Vec::new());
    });
}

/// An owner works while a maintenance pass evicts (idle time zero): eviction, the tick
/// hand-off and the owner's own trim never lose an object or a reservation.
#[test]
fn maintenance_races_with_an_owner() {
    builder().check(|| {
        let max_size = 3;
        let world = World::new(max_size, 2, Some(Duration::ZERO), 0);
        let w1 = world.clone();
        let owner = thread::spawn(move || {
            let mut local = w1.core.local();
            let mut gone = Vec::new();
            for _ in 0..2 {
                let obj = w1.create();
                if let Err(obj) = w1.core.put(&mut local, obj, &mut gone) {
                    gone.push(obj);
                }
            }
            let mut held = Vec::new();
            if let Some(obj) = w1.core.take(&mut local, &mut gone) {
                held.push(obj);
            }
            w1.core.flush(&mut local);
            (Outcome { local, gone }, held)
        });
        let w2 = world.clone();
        let maintainer = thread::spawn(move || {
            let mut victims = w2.core.maintain(2);
            victims.extend(w2.core.maintain(2));
            victims
        });
        let (outcome, held) = owner.join().unwrap();
        let victims = maintainer.join().unwrap();
        let maint = Outcome { local: world.core.local(), gone: victims };
        check(&world, vec![outcome, maint], max_size, held);
    });
}

/// The shared-tier-only paths (thread cache 0, or a busy slot) against an owner's stack.
#[test]
fn direct_and_cached_paths_share_one_budget() {
    builder().check(|| {
        let max_size = 2;
        let world = World::new(max_size, 2, None, 0);
        let w1 = world.clone();
        let direct = thread::spawn(move || {
            let mut gone = Vec::new();
            for _ in 0..2 {
                let obj = w1.create();
                if let Err(obj) = w1.core.put_direct(obj) {
                    gone.push(obj);
                }
            }
            let held: Vec<usize> = w1.core.take_direct().into_iter().collect();
            (gone, held)
        });
        let w2 = world.clone();
        let cached = thread::spawn(move || {
            let mut local = w2.core.local();
            let mut gone = Vec::new();
            let obj = w2.core.take(&mut local, &mut gone).unwrap_or_else(|| w2.create());
            if let Err(obj) = w2.core.put(&mut local, obj, &mut gone) {
                gone.push(obj);
            }
            Outcome { local, gone }
        });
        let (gone, held) = direct.join().unwrap();
        let outcome = cached.join().unwrap();
        let d = Outcome { local: world.core.local(), gone };
        check(&world, vec![outcome, d], max_size, held);
    });
}
