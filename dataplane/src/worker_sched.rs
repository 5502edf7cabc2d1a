//! `--worker-sched auto`: each worker runs under `SCHED_BATCH` while its core has idle time
//! and the worker does not queue long for it, and under `SCHED_OTHER` otherwise.
//!
//! Why: under `SCHED_BATCH` a woken worker does not preempt the task on its core. Beside
//! clients and origins that mostly wait on the network that is cheaper (fewer switches per
//! exchange, half the added latency at light load), but beside a program that computes, the
//! worker waits for the scheduler's tick: milliseconds (perf/README, "Worker scheduling").
//! Such a program leaves its core no idle time, and makes a batch worker queue long per run;
//! both are visible from outside the worker:
//! - the core's idle and iowait time, from `/proc/stat` (in ticks of 10 ms);
//! - the worker's run-queue wait and its number of runs, from
//!   `/proc/self/task/TID/schedstat` (nanoseconds).
//!
//! [`Auto`] is the pure decision; [`spawn`] samples every [`WINDOW`] on a thread of its own
//! (never a worker) and applies it with `sched_setscheduler` on the worker's thread id. A
//! worker that fell back because its core was full is promoted again as soon as the core has
//! room; one that fell back because it queued long, only after a hold that doubles with each
//! such fall back (up to [`HOLD_MAX`]) and starts again from [`HOLD_MIN`] after [`SETTLED`]
//! under batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How often the policy is sampled and decided.
const WINDOW: Duration = Duration::from_millis(250);
/// Below this share of its core idle, a worker runs under `SCHED_OTHER`: the core is full and
/// whatever shares it is computing, not waiting.
const IDLE_MIN: f64 = 0.04;
/// A worker is promoted only when its core was at least this idle (hysteresis over
/// [`IDLE_MIN`]).
const IDLE_PROMOTE: f64 = 0.12;
/// A batch worker that queued longer than this per run, on average over a window, falls back.
/// Beside a busy loop a batch worker queued 2.7-3.3 ms per run; beside S3's client and origin,
/// where batch is faster, 0.1-0.8 ms.
const WAIT_MAX: Duration = Duration::from_millis(1);
/// The first hold after a fall back.
const HOLD_MIN: Duration = Duration::from_secs(1);
/// The longest hold.
const HOLD_MAX: Duration = Duration::from_secs(64);
/// Under batch this long, the next fall back holds [`HOLD_MIN`] again.
const SETTLED: Duration = Duration::from_secs(60);

/// A scheduling policy a worker can run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER`.
    Normal,
    /// `SCHED_BATCH`.
    Batch,
}

/// What one window showed about a worker and its core.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Share of the window the core was idle (idle and iowait time), 0 to 1.
    pub idle: f64,
    /// The worker's mean run-queue wait per run in the window; zero when it did not run.
    pub wait_per_run: Duration,
}

/// One worker's policy under `auto`.
#[derive(Debug, Clone)]
pub struct Auto {
    policy: Policy,
    /// Since when the policy holds.
    since: Instant,
    /// No promotion before this.
    hold_until: Instant,
    /// The next fall back's hold.
    hold: Duration,
}

impl Auto {
    /// A worker that starts under `SCHED_OTHER` at `now`, promoted at the first window with an
    /// idle core.
    pub fn new(now: Instant) -> Self {
        Self {
            policy: Policy::Normal,
            since: now,
            hold_until: now,
            hold: HOLD_MIN,
        }
    }

    /// The policy now.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Decide after a window: the policy to switch to, if it changes.
    pub fn decide(&mut self, sample: Sample, now: Instant) -> Option<Policy> {
        match self.policy {
            Policy::Batch => {
                if sample.idle < IDLE_MIN {
                    // A full core: batch gains nothing here, and whether what shares the core
                    // computes is not known. Back to batch as soon as the core has room.
                    self.hold_until = now;
                    return self.switch(Policy::Normal, now);
                }
                if sample.wait_per_run <= WAIT_MAX {
                    return None;
                }
                // Long waits with room on the core: something there computes in long slices.
                if now.duration_since(self.since) >= SETTLED {
                    self.hold = HOLD_MIN;
                }
                self.hold_until = now + self.hold;
                self.hold = (self.hold * 2).min(HOLD_MAX);
                self.switch(Policy::Normal, now)
            }
            Policy::Normal => {
                if now < self.hold_until || sample.idle < IDLE_PROMOTE {
                    return None;
                }
                self.switch(Policy::Batch, now)
            }
        }
    }

    fn switch(&mut self, policy: Policy, now: Instant) -> Option<Policy> {
        self.policy = policy;
        self.since = now;
        Some(policy)
    }
}

/// Idle and total time of each core, in ticks, from the text of `/proc/stat`.
pub fn core_times(stat: &str) -> Vec<(u64, u64)> {
    let mut cores = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        // `cpu0 ...`: the number is joined to the name; the all-cores line has a space.
        let Some((number, times)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(core) = number.parse::<usize>() else {
            continue;
        };
        let fields = times.split_ascii_whitespace();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let times: Vec<u64> = fields.take(8).map(|f| f.parse().unwrap_or(0)).collect();
        if times.len() < 5 {
            continue;
        }
        if cores.len() <= core {
            cores.resize(core + 1, (0, 0));
        }
        cores[core] = (times[3] + times[4], times.iter().sum());
    }
    cores
}

/// Run-queue wait (ns) and runs of a thread, from the text of its `schedstat`.
pub fn thread_waits(schedstat: &str) -> Option<(u64, u64)> {
    let mut fields = schedstat.split_ascii_whitespace().skip(1);
    let wait = fields.next()?.parse().ok()?;
    let runs = fields.next()?.parse().ok()?;
    Some((wait, runs))
}

/// The sample of one window, from the previous and current readings of a worker's core
/// (idle, total ticks) and thread (wait ns, runs). `None` when the core's counters did not
/// move (nothing to judge by).
pub fn sample(core: ((u64, u64), (u64, u64)), thread: ((u64, u64), (u64, u64))) -> Option<Sample> {
    let ((idle0, total0), (idle1, total1)) = core;
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    let idle = idle1.saturating_sub(idle0).min(total);
    let ((wait0, runs0), (wait1, runs1)) = thread;
    let runs = runs1.saturating_sub(runs0);
    let wait = wait1.saturating_sub(wait0);
    let wait_per_run = Duration::from_nanos(wait.checked_div(runs).unwrap_or(0));
    Some(Sample {
        idle: idle as f64 / total as f64,
        wait_per_run,
    })
}

/// The workers' thread ids, each set by its worker when it starts (0 until then).
#[derive(Debug)]
pub struct WorkerThreads {
    ids: Box<[AtomicI32]>,
}

impl WorkerThreads {
    /// Cells for `workers` workers.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self {
            ids: (0..workers).map(|_| AtomicI32::new(0)).collect(),
        })
    }

    /// Worker `id` runs as thread `tid`.
    pub fn set(&self, id: usize, tid: i32) {
        self.ids[id].store(tid, Ordering::Release);
    }

    fn get(&self, id: usize) -> i32 {
        self.ids[id].load(Ordering::Acquire)
    }
}

/// Start the thread that samples and applies `auto` for every worker; worker `i` is pinned to
/// core `i % cores`.
pub fn spawn(threads: Arc<WorkerThreads>, cores: usize) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("worker-sched".into())
        .spawn(move || watch(&threads, cores))?;
    Ok(())
}

/// One worker's state between windows.
struct Watched {
    auto: Auto,
    tid: i32,
    core: usize,
    last_core: (u64, u64),
    last_thread: (u64, u64),
}

fn watch(threads: &WorkerThreads, cores: usize) {
    let read_cores = || {
        std::fs::read_to_string("/proc/stat")
            .map(|s| core_times(&s))
            .unwrap_or_default()
    };
    let read_thread = |tid: i32| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
            .ok()
            .and_then(|s| thread_waits(&s))
    };
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        std::thread::sleep(WINDOW);
        let now = Instant::now();
        let times = read_cores();
        // Workers appear as they start.
        for id in watched.len()..threads.ids.len() {
            let tid = threads.get(id);
            if tid == 0 {
                break;
            }
            let core = id % cores.max(1);
            let (last_core, last_thread) = (times.get(core).copied(), read_thread(tid));
            if last_core.is_none() || last_thread.is_none() {
                tracing::warn!(
                    worker = id,
                    "--worker-sched auto cannot read /proc/stat or the worker's schedstat: it stays under SCHED_OTHER"
                );
            }
            watched.push(Watched {
                auto: Auto::new(now),
                tid,
                core,
                last_core: last_core.unwrap_or_default(),
                last_thread: last_thread.unwrap_or_default(),
            });
        }
        for (id, w) in watched.iter_mut().enumerate() {
            let Some(thread) = read_thread(w.tid) else {
                continue; // the worker has exited
            };
            let core = times.get(w.core).copied().unwrap_or_default();
            let sampled = sample((w.last_core, core), (w.last_thread, thread));
            w.last_core = core;
            w.last_thread = thread;
            let Some(s) = sampled else { continue };
            let Some(policy) = w.auto.decide(s, now) else {
                continue;
            };
            match crate::sys::set_thread_scheduling(w.tid, policy == Policy::Batch) {
                Ok(()) => tracing::info!(
                    worker = id,
                    policy = ?policy,
                    core_idle_pct = (s.idle * 100.0).round(),
                    wait_per_run_us = s.wait_per_run.as_micros() as u64,
                    "worker scheduling policy changed"
                ),
                Err(e) => {
                    tracing::warn!(
                        worker = id,
                        "cannot change the scheduling policy ({e}): auto stops"
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn s(idle: f64, wait_us: u64) -> Sample {
        Sample {
            idle,
            wait_per_run: Duration::from_micros(wait_us),
        }
    }

    #[test]
    fn promoted_when_idle_and_back_when_the_core_is_full_or_the_wait_long() {
        let t = Instant::now();
        let mut a = Auto::new(t);
        // (sample, ms since start, policy switched to)
        let steps = [
            (s(0.10, 5), 250, None),                     // not idle enough to promote
            (s(0.50, 5), 500, Some(Policy::Batch)),      // idle: batch
            (s(0.30, 800), 750, None),                   // S3-like waits: stays
            (s(0.05, 20), 1000, None),                   // busy but not full: stays
            (s(0.00, 20), 1250, Some(Policy::Normal)),   // full core: back, no hold
            (s(0.02, 5), 1500, None),                    // still full
            (s(0.90, 5), 1750, Some(Policy::Batch)),     // room again: batch at once
            (s(0.50, 2700), 2000, Some(Policy::Normal)), // long waits: back, held 1 s
            (s(0.90, 5), 2750, None),                    // held
            (s(0.90, 5), 3000, Some(Policy::Batch)),     // hold over
            (s(0.50, 3000), 3250, Some(Policy::Normal)), // held 2 s now
            (s(0.90, 5), 5000, None),
            (s(0.90, 5), 5250, Some(Policy::Batch)),
        ];
        for (i, (sample, ms, want)) in steps.into_iter().enumerate() {
            assert_eq!(a.decide(sample, at(t, ms)), want, "step {i}");
        }
        assert_eq!(a.policy(), Policy::Batch);
    }

    #[test]
    fn the_hold_doubles_to_its_cap_and_resets_after_a_settled_minute() {
        let t = Instant::now();
        let mut a = Auto::new(t);
        let mut now = t;
        let mut holds = Vec::new();
        for _ in 0..9 {
            assert_eq!(a.decide(s(1.0, 0), now), Some(Policy::Batch));
            now += WINDOW;
            assert_eq!(a.decide(s(0.5, 2000), now), Some(Policy::Normal));
            holds.push(a.hold_until - now);
            now = a.hold_until;
        }
        let secs: Vec<u64> = holds.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(a.decide(s(1.0, 0), now), Some(Policy::Batch));
        now += SETTLED;
        assert_eq!(a.decide(s(0.5, 2000), now), Some(Policy::Normal));
        assert_eq!(a.hold_until - now, HOLD_MIN);
    }

    #[test]
    fn proc_stat_and_schedstat_are_read() {
        let stat = "cpu  10 0 10 100 5 0 0 0 0 0\n\
                    cpu0 1 2 3 40 5 6 7 8 9 10\n\
                    cpu1 5 0 5 60 0 0 0 0 0 0\n\
                    intr 1 2 3\nctxt 99\n";
        assert_eq!(core_times(stat), [(45, 72), (60, 70)]);
        assert_eq!(core_times("cpu 1 2 3 4 5\ncpu 7\nbogus\n"), []);
        assert_eq!(thread_waits("811 2700 3\n"), Some((2700, 3)));
        assert_eq!(thread_waits("811 x 3\n"), None);
        assert_eq!(thread_waits(""), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let got = sample(((40, 100), (50, 150)), ((1_000, 10), (31_000, 20)));
        assert_eq!(got, Some(s(0.2, 3)));
        // A thread that did not run waited nothing; counters that did not move say nothing.
        assert_eq!(
            sample(((0, 0), (25, 25)), ((5, 5), (5, 5))),
            Some(s(1.0, 0))
        );
        assert_eq!(sample(((0, 100), (0, 100)), ((0, 0), (9, 9))), None);
        // Counters that went backwards (a wrapped or reset reading) are not a sample.
        assert_eq!(sample(((0, 100), (0, 90)), ((0, 0), (0, 0))), None);
    }
}
