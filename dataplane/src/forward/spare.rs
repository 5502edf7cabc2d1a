//! Spare copy buffers, per thread. The copying path takes a buffer when bytes are waiting and
//! gives it back once the socket is drained (an idle direction holds none: S9's memory per idle
//! connection). Through a relayed keep-alive exchange that is a buffer taken and given back for
//! each direction of each request. From the allocator, that was two allocations and two frees
//! per request, through mimalloc's slow path: the 2 KiB page emptied by each free was retired
//! and fetched again. callgrind counted about 540 of the relay's 3,704 user-space
//! instructions per request in mimalloc; with the spares a request takes 3,289.
//!
//! Only buffers of the smallest size are kept, at most [`SPARES`] per thread (64 KiB), so what
//! a worker keeps does not grow with its connections. Larger buffers (a bulk transfer's) go
//! back to the allocator.

use std::cell::RefCell;

use super::MIN_BUFFER;

/// Spare buffers a thread keeps at most.
pub(super) const SPARES: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for `size` bytes: a spare one when `size` is the smallest size and
/// the thread has one, a new one otherwise.
pub(super) fn take(size: usize) -> Vec<u8> {
    if size == MIN_BUFFER
        && let Some(buf) = SPARE.with_borrow_mut(Vec::pop)
    {
        return buf;
    }
    Vec::with_capacity(size)
}

/// Done with `buf`: kept for [`take`] when it has the smallest size and the thread keeps fewer
/// than [`SPARES`], freed otherwise.
pub(super) fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() != MIN_BUFFER {
        return;
    }
    buf.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARES {
            spare.push(buf);
        }
    });
}

/// Spare buffers this thread keeps now.
#[cfg(test)]
fn kept() -> usize {
    SPARE.with_borrow(Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_buffers_are_reused_others_are_freed_and_the_count_is_bounded() {
        // A thread of its own: the spares are per thread.
        std::thread::spawn(|| {
            assert_eq!(kept(), 0);
            let first = take(MIN_BUFFER);
            assert_eq!(first.capacity(), MIN_BUFFER);
            let at = first.as_ptr();
            let mut used = first;
            used.extend_from_slice(b"bytes");
            give_back(used);
            assert_eq!(kept(), 1);
            let again = take(MIN_BUFFER);
            assert_eq!(again.as_ptr(), at, "the spare buffer is the one given back");
            assert!(again.is_empty(), "a spare buffer comes back empty");
            assert_eq!(kept(), 0);
            give_back(again);

            // Larger buffers are neither kept nor handed out as spares.
            let large = take(4 * MIN_BUFFER);
            assert_eq!(large.capacity(), 4 * MIN_BUFFER);
            assert_eq!(kept(), 1, "a larger size does not take the spare");
            give_back(large);
            assert_eq!(kept(), 1);

            // At most SPARES are kept: all of these are held at once, then given back.
            let mut many = Vec::new();
            for _ in 0..SPARES + 5 {
                many.push(take(MIN_BUFFER));
            }
            assert_eq!(kept(), 0);
            for buf in many {
                give_back(buf);
            }
            assert_eq!(kept(), SPARES);
        })
        .join()
        .unwrap();
    }
}
