//! `--idle-yields`: before a worker sleeps, it gives its core to whatever else is runnable
//! there (`sched_yield`) and then looks for completions once more.
//!
//! Why: a proxy's clients and origins often share its cores, and the worker's last act before
//! it runs out of work is usually a write that wakes one of them. Asleep, the worker must be
//! woken again for the reply: a switch and, on a virtual machine, the exit from a halted vCPU.
//! Yielding instead, it stays runnable, lets the peer run, and finds the reply on its next
//! turn. On the bench's two vCPUs one yield per quiet spell made 7% more TLS connections per
//! second at 15% less proxy CPU per connection, and 36 us less p50 latency at 1,000
//! requests/s (perf/README, "Yield before sleeping").
//!
//! The hazard: beside a program that computes, a yield hands it the rest of its time slice
//! (milliseconds), with the worker's work waiting. When a quarter of a window of yields take
//! [`LONG`] or more, yielding is held off for a while that doubles while it recurs
//! ([`Yielder`]), so such a core costs a few slow yields per hold.
//!
//! How: monoio parks only when its run queue is empty, so a task that keeps itself queued
//! keeps the worker awake. Connection tasks run inside [`Active`], which counts their polls
//! (that is "activity") and wakes the yielding task when it sleeps. The yielding task must let
//! the worker park: a version that never slept stalled its connections on io_uring (a test
//! read timed out), the worker turning without ever waiting for completions.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A yield this long means a program that computes held the core.
const LONG: Duration = Duration::from_millis(1);
/// Long yields are counted over windows of this many yields...
const WINDOW: u32 = 64;
/// ...and this many in one window (a quarter) turn yielding off. Beside a busy loop on each
/// core 37% of the yields were long; beside S3's client, which computes for the connections
/// the worker relays, 0.1-0.7%, though now and then 4 in a window (perf/README, "Yield before
/// sleeping").
const LONG_PER_WINDOW: u32 = 16;
/// The first hold without yields.
const HOLD_MIN: Duration = Duration::from_secs(1);
/// The longest hold. Bulk transfers trip the guard too (a sender that fills its socket as fast
/// as it can looks like a busy program, though yielding to it pays), and a long hold outlives
/// them: at 64 s, S3 run after S1 and S2 in the bench found yielding still held off.
const HOLD_MAX: Duration = Duration::from_secs(8);
/// Yielding this long without a hold, the next hold is [`HOLD_MIN`] again.
const SETTLED: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Shared {
    /// Polls of connection tasks on this thread so far.
    polls: Cell<u64>,
    /// The yielding task's waker while it sleeps.
    sleeping: Cell<Option<Waker>>,
}

thread_local! {
    static SHARED: Shared = Shared::default();
}

pin_project_lite::pin_project! {
    /// A connection task: each poll counts as activity and wakes a sleeping yielder.
    pub struct Active<F> {
        #[pin]
        task: F,
    }
}

impl<F> Active<F> {
    /// Wrap a connection task.
    pub fn new(task: F) -> Self {
        Self { task }
    }
}

impl<F: Future> Future for Active<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        SHARED.with(|s| {
            s.polls.set(s.polls.get().wrapping_add(1));
            if let Some(w) = s.sleeping.take() {
                w.wake();
            }
        });
        self.project().task.poll(cx)
    }
}

/// What the yielding task does on one turn of the worker's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stay queued, without yielding: the loop submits what the active tasks queued.
    Again,
    /// Yield the core, then stay queued.
    Yield,
    /// Leave the queue until the next activity: the worker may sleep.
    Sleep,
}

/// The pure decision: how many yields a quiet spell gets, and when yielding is held off.
#[derive(Debug, Clone)]
pub struct Yielder {
    per_spell: u32,
    left: u32,
    /// No yields before this.
    off_until: Option<Instant>,
    /// The next hold.
    hold: Duration,
    /// When yielding last resumed (or began).
    resumed: Instant,
    /// Yields and long yields in the current window.
    window: u32,
    long: u32,
}

impl Yielder {
    /// `per_spell` yields after each activity before the worker may sleep, from `now`.
    pub fn new(per_spell: u32, now: Instant) -> Self {
        Self {
            per_spell,
            left: 0,
            off_until: None,
            hold: HOLD_MIN,
            resumed: now,
            window: 0,
            long: 0,
        }
    }

    /// The next step, given whether connection tasks ran since the last one. `now` is read
    /// only on quiet turns that may yield.
    pub fn step(&mut self, active: bool, now: impl FnOnce() -> Instant) -> Step {
        if active {
            self.left = self.per_spell;
            return Step::Again;
        }
        if self.left == 0 {
            return Step::Sleep;
        }
        if let Some(until) = self.off_until {
            let now = now();
            if now < until {
                self.left = 0;
                return Step::Sleep;
            }
            self.off_until = None;
            self.resumed = now;
        }
        self.left -= 1;
        Step::Yield
    }

    /// A yield ended at `now` after `took`.
    pub fn yielded(&mut self, now: Instant, took: Duration) {
        self.window += 1;
        if took >= LONG {
            self.long += 1;
        }
        if self.long >= LONG_PER_WINDOW {
            if now.saturating_duration_since(self.resumed) >= SETTLED {
                self.hold = HOLD_MIN;
            }
            self.off_until = Some(now + self.hold);
            self.hold = (self.hold * 2).min(HOLD_MAX);
            self.left = 0;
            (self.window, self.long) = (0, 0);
        } else if self.window >= WINDOW {
            (self.window, self.long) = (0, 0);
        }
    }

    /// Whether yields are held off at `now`.
    #[cfg(test)]
    fn holding(&self, now: Instant) -> bool {
        self.off_until.is_some_and(|t| now < t)
    }
}

/// Yield `per_spell` times after each activity before letting the worker sleep, forever.
/// Spawn once per worker (not at all for zero).
pub async fn run(per_spell: u32) {
    let mut yielder = Yielder::new(per_spell, Instant::now());
    let mut seen = 0u64;
    std::future::poll_fn(move |cx| {
        let polls = SHARED.with(|s| s.polls.get());
        let active = polls != seen;
        seen = polls;
        match yielder.step(active, Instant::now) {
            Step::Again => cx.waker().wake_by_ref(),
            Step::Yield => {
                let start = Instant::now();
                std::thread::yield_now();
                let end = Instant::now();
                yielder.yielded(end, end - start);
                cx.waker().wake_by_ref();
            }
            Step::Sleep => SHARED.with(|s| s.sleeping.set(Some(cx.waker().clone()))),
        }
        Poll::<()>::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps `y` takes at `t` for turns with and without activity.
    fn steps(y: &mut Yielder, t: Instant, turns: &[bool]) -> Vec<Step> {
        turns.iter().map(|&active| y.step(active, || t)).collect()
    }

    #[test]
    fn a_quiet_spell_gets_its_yields_then_sleeps_until_the_next_activity() {
        let t = Instant::now();
        let mut y = Yielder::new(2, t);
        // Nothing happened yet: sleep.
        assert_eq!(y.step(false, || t), Step::Sleep);
        assert_eq!(
            steps(&mut y, t, &[true, false, false, false, false]),
            [
                Step::Again,
                Step::Yield,
                Step::Yield,
                Step::Sleep,
                Step::Sleep
            ]
        );
        // Activity during the spell starts it again.
        assert_eq!(
            steps(&mut y, t, &[true, false, true, false, false, false]),
            [
                Step::Again,
                Step::Yield,
                Step::Again,
                Step::Yield,
                Step::Yield,
                Step::Sleep
            ]
        );
    }

    #[test]
    fn zero_yields_never_yields() {
        let t = Instant::now();
        let mut y = Yielder::new(0, t);
        assert_eq!(y.step(true, || t), Step::Again);
        assert_eq!(y.step(false, || t), Step::Sleep);
    }

    /// `n` long yields at `now` (each after activity, as the worker makes them).
    fn long_yields(y: &mut Yielder, now: Instant, n: u32) {
        for _ in 0..n {
            y.step(true, || now);
            assert_eq!(y.step(false, || now), Step::Yield);
            y.yielded(now, LONG);
        }
    }

    #[test]
    fn long_yields_hold_yielding_off_only_when_they_are_frequent() {
        let t0 = Instant::now();
        let mut y = Yielder::new(1, t0);
        // One long yield short of the threshold, then a window of short ones: no hold, and the
        // window starts over.
        long_yields(&mut y, t0, LONG_PER_WINDOW - 1);
        for _ in 0..WINDOW {
            y.step(true, || t0);
            assert_eq!(y.step(false, || t0), Step::Yield);
            y.yielded(t0, LONG / 2);
        }
        assert!(!y.holding(t0));
        long_yields(&mut y, t0, LONG_PER_WINDOW - 1);
        assert!(!y.holding(t0));
        // The threshold's last one in a window holds yields off for HOLD_MIN: quiet turns sleep
        // at once.
        long_yields(&mut y, t0, 1);
        assert!(y.holding(t0 + HOLD_MIN - Duration::from_millis(1)));
        y.step(true, || t0);
        assert_eq!(y.step(false, || t0 + HOLD_MIN / 2), Step::Sleep);
        assert!(!y.holding(t0 + HOLD_MIN));
    }

    #[test]
    fn holds_double_up_to_the_longest_and_settle_back() {
        let t0 = Instant::now();
        let mut y = Yielder::new(1, t0);
        let mut t = t0;
        let mut holds = Vec::new();
        for _ in 0..9 {
            long_yields(&mut y, t, LONG_PER_WINDOW);
            let until = y.off_until.unwrap();
            holds.push((until - t).as_secs());
            t = until;
        }
        assert_eq!(holds, [1, 2, 4, 8, 8, 8, 8, 8, 8]);
        // Yielding resumes when the last hold ends; a long run without trouble after it, and
        // the next hold is short again.
        y.step(true, || t);
        assert_eq!(y.step(false, || t), Step::Yield);
        y.yielded(t, LONG / 2);
        t += SETTLED;
        long_yields(&mut y, t, LONG_PER_WINDOW);
        assert_eq!(y.off_until.unwrap() - t, HOLD_MIN);
    }
}
