//! A per-worker timer for the timeouts that every open connection and every HTTP exchange hold
//! (the TCP idle timeout; the client idle, stream idle, per-try and route timeouts). A runtime
//! timer (`monoio::time::sleep`) is 640 bytes, cache-line padded, and goes in and out of the
//! runtime's wheel: stored in every connection's task, or made for every read and write of an
//! exchange, it was 7% of a keep-alive request's user-space instructions. An entry here is a
//! deadline and a waker in one slab, and one sweeper task per worker wakes the entries that are
//! due.
//!
//! Precision: an entry is woken at or after its deadline, and no sooner than [`SWEEP_MIN`] after
//! the previous sweep. A deadline due before the sweeper's plan wakes it to plan again, so short
//! timeouts (a per-try timeout) cost a sweep over every entry each [`SWEEP_MIN`] while they run.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

/// The sweeper never sleeps longer than this, so a stale plan costs at most one extra sweep.
const SWEEP_MAX: Duration = Duration::from_secs(1);
/// Nor shorter: deadlines closer together than this are served by one sweep.
const SWEEP_MIN: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Inner {
    entries: Slab<(Instant, Option<Waker>)>,
    /// When the sweeper plans to wake, and how to wake it sooner.
    planned: Option<Instant>,
    sweeper: Option<Waker>,
}

/// A worker's coarse timer: cheap to clone (an `Rc`).
#[derive(Clone, Default)]
pub struct CoarseTimer {
    inner: Rc<RefCell<Inner>>,
}

impl std::fmt::Debug for CoarseTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoarseTimer")
            .field("entries", &self.inner.borrow().entries.len())
            .finish()
    }
}

impl CoarseTimer {
    /// Wake the entries that are due, forever. Spawn once per worker, on its runtime.
    pub async fn sweep(self) {
        loop {
            let next = {
                let mut inner = self.inner.borrow_mut();
                let now = Instant::now();
                let mut next = now + SWEEP_MAX;
                for (_, (deadline, waker)) in &mut inner.entries {
                    if *deadline <= now {
                        if let Some(w) = waker.take() {
                            w.wake();
                        }
                    } else {
                        next = next.min(*deadline);
                    }
                }
                let next = next.max(now + SWEEP_MIN);
                inner.planned = Some(next);
                next
            };
            Sweep {
                timer: &self,
                sleep: Box::pin(monoio::time::sleep_until(next.into())),
            }
            .await;
        }
    }

    /// A future that completes at (or soon after) `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> SleepUntil<'_> {
        SleepUntil {
            timer: self,
            deadline,
            entry: Entry::Unregistered { ahead: false },
        }
    }

    /// `future`'s output, or [`Elapsed`] once `deadline` has passed first.
    pub fn timeout_at<F: Future>(&self, deadline: Instant, future: F) -> Timeout<'_, F> {
        Timeout {
            future,
            sleep: self.sleep_until(deadline),
        }
    }

    /// [`CoarseTimer::timeout_at`] `after` from now. Its deadline is ahead when it is made, so
    /// its first wait registers it without reading the clock again.
    pub fn timeout<F: Future>(&self, after: Duration, future: F) -> Timeout<'_, F> {
        let mut timeout = self.timeout_at(Instant::now() + after, future);
        timeout.sleep.entry = Entry::Unregistered {
            ahead: !after.is_zero(),
        };
        timeout
    }

    /// Entries registered now (for tests).
    pub fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }

    /// Whether no entry is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sweeper's wait: the runtime timer, or a registration due sooner than planned.
struct Sweep<'t> {
    timer: &'t CoarseTimer,
    sleep: Pin<Box<monoio::time::Sleep>>,
}

impl Future for Sweep<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.timer.inner.borrow_mut();
        if inner.planned.is_none() {
            // A registration cancelled the plan: sweep now.
            return Poll::Ready(());
        }
        inner.sweeper = Some(cx.waker().clone());
        drop(inner);
        self.sleep.as_mut().poll(cx)
    }
}

/// See [`CoarseTimer::sleep_until`]. Once registered, it is due when the sweeper has taken its
/// waker (the sweeper alone reads the clock for it), so a wait polled again and again reads no
/// clock.
pub struct SleepUntil<'t> {
    timer: &'t CoarseTimer,
    deadline: Instant,
    entry: Entry,
}

/// A [`SleepUntil`]'s place in the timer (the size of an `Option<usize>`: every idle
/// connection's task holds one).
#[derive(Clone, Copy)]
enum Entry {
    /// Not yet polled. `ahead`: the deadline was ahead when it was made, so the first poll
    /// need not read the clock.
    Unregistered { ahead: bool },
    /// In the slab under this key.
    Registered(usize),
}

impl Future for SleepUntil<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if matches!(self.entry, Entry::Unregistered { ahead: false })
            && Instant::now() >= self.deadline
        {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let mut inner = self.timer.inner.borrow_mut();
        match self.entry {
            Entry::Registered(key) => match &mut inner.entries[key].1 {
                // Only the sweeper takes an entry's waker, and only once it is due.
                None => return Poll::Ready(()),
                Some(w) if !w.will_wake(cx.waker()) => *w = cx.waker().clone(),
                Some(_) => {}
            },
            Entry::Unregistered { .. } => {
                let key = inner.entries.insert((deadline, Some(cx.waker().clone())));
                // Due before the sweeper's next wake: have it plan again.
                if inner.planned.is_some_and(|p| deadline < p) {
                    inner.planned = None;
                    if let Some(w) = inner.sweeper.take() {
                        w.wake();
                    }
                }
                drop(inner);
                self.entry = Entry::Registered(key);
            }
        }
        Poll::Pending
    }
}

/// The deadline of a [`Timeout`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// See [`CoarseTimer::timeout_at`]. The future is polled first: one that is ready when its
    /// deadline passes still wins.
    pub struct Timeout<'t, F> {
        #[pin]
        future: F,
        sleep: SleepUntil<'t>,
    }
}

impl<F: Future> Future for Timeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

impl Drop for SleepUntil<'_> {
    fn drop(&mut self) {
        if let Entry::Registered(key) = self.entry {
            self.timer.inner.borrow_mut().entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    #[test]
    fn entries_wake_at_their_deadlines_in_order_and_deregister() {
        runtime().block_on(async {
            let timer = CoarseTimer::default();
            monoio::spawn(timer.clone().sweep());
            let start = Instant::now();
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            // Registered latest first: each registration is due before the sweeper's plan.
            for ms in [300u64, 120, 40] {
                let (timer, order) = (timer.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    timer.sleep_until(start + Duration::from_millis(ms)).await;
                    order.borrow_mut().push((ms, start.elapsed()));
                }));
            }
            for t in tasks {
                t.await;
            }
            let order = order.borrow();
            assert_eq!(
                order.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(),
                [40, 120, 300]
            );
            for (ms, at) in order.iter() {
                assert!(*at >= Duration::from_millis(*ms), "{ms} ms woke at {at:?}");
            }
            assert!(timer.is_empty(), "finished sleeps leave no entry");
        });
    }

    #[test]
    fn a_dropped_sleep_leaves_no_entry() {
        runtime().block_on(async {
            let timer = CoarseTimer::default();
            monoio::spawn(timer.clone().sweep());
            let far = timer.sleep_until(Instant::now() + Duration::from_secs(3600));
            let mut far = Box::pin(far);
            monoio::select! {
                () = &mut far => panic!("an hour passed"),
                () = monoio::time::sleep(Duration::from_millis(20)) => {}
            }
            assert_eq!(timer.len(), 1);
            drop(far);
            assert!(timer.is_empty());
        });
    }

    #[test]
    fn a_timeout_returns_the_output_or_elapsed_and_deregisters() {
        runtime().block_on(async {
            let timer = CoarseTimer::default();
            monoio::spawn(timer.clone().sweep());
            let quick = timer.timeout(Duration::from_secs(3600), async { 7 }).await;
            assert_eq!(quick, Ok(7));
            let start = Instant::now();
            let never = std::future::pending::<()>();
            let late = timer.timeout(Duration::from_millis(30), never).await;
            assert_eq!(late, Err(Elapsed));
            assert!(start.elapsed() >= Duration::from_millis(30));
            // Ready at once: the future wins even with its deadline already passed.
            let past = timer.timeout_at(start, async { "first" }).await;
            assert_eq!(past, Ok("first"));
            assert!(timer.is_empty(), "finished timeouts leave no entry");
        });
    }
}
