//! The crate's only `unsafe`: borrowing a runtime socket's file descriptor as a `socket2`
//! reference (so socket options are read and set through socket2's safe API), the one-call
//! `ioctl(FIONBIO)` that makes a socket non-blocking, the `pipe2`, `fcntl(F_SETPIPE_SZ)` and
//! `splice` system calls for zero-copy forwarding, the copy loop's non-blocking `send` and
//! `recv`, marking the bytes such a `recv` wrote into a buffer's spare capacity as initialised,
//! a worker thread's id and scheduling policy; and one allocator option set before `main`.
//! In the unit tests only, the global allocator that counts a thread's allocations.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::SockRef;

/// mimalloc's `arena_eager_commit` option (the same index in mimalloc v2 and v3).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Run by the loader before `main`, so before mimalloc's first allocation reserves its arena:
/// arena memory is committed on demand and purged pages are decommitted. With eager commit,
/// pages freed after a connection's setup stay resident (3.8 kB of RSS per idle connection
/// against 1.3 kB without, measured with 8,000 connections). The binary names this static so
/// the linker keeps it.
#[used]
#[unsafe(link_section = ".init_array")]
pub static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

extern "C" fn tune_allocator() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; it allocates
    // nothing and is valid before mimalloc is initialised (the value then wins over the
    // environment).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

/// Run `f` with a `socket2` view of the socket behind `socket`.
pub fn with_socket<R>(socket: &impl AsRawFd, f: impl FnOnce(&SockRef<'_>) -> R) -> R {
    // SAFETY: `socket` is borrowed for the whole call, so its descriptor stays open and owned by
    // it while `f` runs; the borrowed descriptor does not escape `f` (SockRef borrows it and is
    // dropped before we return), and nothing here closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    f(&SockRef::from(&fd))
}

/// Put the socket behind `socket` in non-blocking mode with one `ioctl(FIONBIO)`, as std does
/// (socket2's `set_nonblocking` reads the flags and writes them back: two system calls).
pub fn set_nonblocking(socket: &impl AsRawFd) -> io::Result<()> {
    let mut on: libc::c_int = 1;
    // SAFETY: `socket` is borrowed for the call, so its descriptor is open; FIONBIO reads one
    // `c_int` from the pointer, which points at `on` on this stack frame.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONBIO, &raw mut on) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's id (what `/proc/self/task/` and `sched_setscheduler` name it by).
pub fn thread_id() -> i32 {
    // SAFETY: gettid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::gettid() }
}

/// Move thread `tid` of this process (0: the calling thread) to `SCHED_BATCH` (`batch`) or back
/// to `SCHED_OTHER`, nice level unchanged. `SCHED_BATCH` keeps the thread's share of the CPU,
/// but its wake-ups do not preempt the task running on its core (the scheduler's tick decides).
pub fn set_thread_scheduling(tid: i32, batch: bool) -> io::Result<()> {
    let policy = if batch {
        libc::SCHED_BATCH
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the kernel only reads the `sched_param` behind the pointer, which lives on this
    // stack frame for the whole call; an unknown or exited `tid` is an error (ESRCH), not
    // undefined behaviour.
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &raw const param) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether an idle connected socket has neither been closed by its peer nor received bytes
/// (a pooled keep-alive connection that is safe to reuse): a non-blocking `MSG_PEEK` that
/// would block. `fd` must be the descriptor of a socket its caller owns and keeps open.
pub fn idle_socket_is_quiet(fd: RawFd) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    // SAFETY: the caller owns the socket behind `fd` and keeps it open for this call (the pool
    // holds the stream while it asks); recv(2) with MSG_PEEK | MSG_DONTWAIT writes at most one
    // byte into `byte`, which lives on this stack frame, and never blocks.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match SockRef::from(&fd).recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

/// The destination a connection had before an iptables/nftables REDIRECT (SO_ORIGINAL_DST for
/// IPv4, IP6T_SO_ORIGINAL_DST for IPv6).
pub fn original_dst(socket: &impl AsRawFd, local: SocketAddr) -> io::Result<SocketAddr> {
    with_socket(socket, |s| {
        let addr = if local.is_ipv4() {
            s.original_dst_v4()?
        } else {
            s.original_dst_v6()?
        };
        addr.as_socket()
            .ok_or_else(|| io::Error::other("original destination is not an IP address"))
    })
}

/// A pipe's read and write ends.
#[derive(Debug)]
pub struct PipeFds {
    /// Read end.
    pub read: OwnedFd,
    /// Write end.
    pub write: OwnedFd,
}

/// A non-blocking, close-on-exec pipe of (at least) `size` bytes, or of the kernel's default
/// size when the system refuses `size` (`/proc/sys/fs/pipe-max-size`).
pub fn pipe(size: usize) -> io::Result<(PipeFds, usize)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as pipe2(2) requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else; each is
    // wrapped exactly once and closed when its OwnedFd drops.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int and touches no memory.
    let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    let actual = if set > 0 {
        set as usize
    } else {
        // SAFETY: as above, F_GETPIPE_SZ takes no argument.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        usize::try_from(got).unwrap_or(65536)
    };
    Ok((PipeFds { read, write }, actual))
}

/// Move up to `len` bytes from `from` to `to` without copying them through user space, without
/// blocking: `Err(WouldBlock)` when `from` has nothing or `to` has no room.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice(2) reads and writes only kernel objects named by the descriptors, which
    // the callers keep open for the duration of the call; null offsets are valid for sockets
    // and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Send from `bytes` without blocking, whatever the socket's mode (`MSG_DONTWAIT`): the count
/// sent, or `Err(WouldBlock)` when the socket has no room.
pub fn send(socket: &impl AsRawFd, bytes: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `socket` is borrowed for the call, so its descriptor is open; the kernel reads at
    // most `bytes.len()` bytes from `bytes`, borrowed for the call; no address is passed. Made
    // with syscall(2): libc's `send` is a cancellation point, two atomic updates around every
    // call for thread cancellation, which nothing here uses.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            socket.as_raw_fd(),
            bytes.as_ptr(),
            bytes.len(),
            flags,
            std::ptr::null::<libc::sockaddr>(),
            0,
        )
    };
    syscall_count(n)
}

/// A count returned by syscall(2), or the error it reported.
fn syscall_count(n: libc::c_long) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Read what `socket` has into `buf`'s spare capacity without blocking, whatever the socket's
/// mode (`MSG_DONTWAIT`): `Ok(0)` at end of stream, `Err(WouldBlock)` when nothing is waiting.
/// The bytes are appended to `buf`.
pub fn recv_append(socket: &impl AsRawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let len = buf.len();
    let spare = buf.spare_capacity_mut();
    // SAFETY: `socket` is borrowed for the call, so its descriptor is open; the kernel writes at
    // most `spare.len()` bytes to `spare`, `buf`'s spare capacity, borrowed for the call; no
    // address is asked for. Made with syscall(2), as [`send`] is.
    let n = syscall_count(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            socket.as_raw_fd(),
            spare.as_mut_ptr(),
            spare.len(),
            libc::MSG_DONTWAIT,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    })?;
    // SAFETY: recv(2) initialised the first `n` bytes of the spare capacity it was given, and
    // `n` is at most that capacity, so `len + n` bytes of `buf` are initialised.
    unsafe { buf.set_len(len + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_and_splice_move_bytes_between_sockets() {
        use std::io::{Read, Write};
        let (pipe, size) = pipe(1 << 20).unwrap();
        assert!(size >= 65536);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let (c_listener, mut c) = {
            let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let c = std::net::TcpStream::connect(l2.local_addr().unwrap()).unwrap();
            (l2, c)
        };
        let (d, _) = c_listener.accept().unwrap();
        a.write_all(b"spliced").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // b -> pipe -> d, then read at c.
        assert_eq!(
            splice(b.as_raw_fd(), pipe.write.as_raw_fd(), size).unwrap(),
            7
        );
        assert_eq!(splice(pipe.read.as_raw_fd(), d.as_raw_fd(), 7).unwrap(), 7);
        let mut got = [0u8; 7];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"spliced");
        b.set_nonblocking(true).unwrap();
        let e = splice(b.as_raw_fd(), pipe.write.as_raw_fd(), size).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "nothing to move: {e}");
    }

    #[test]
    fn send_and_recv_append_report_counts_waits_ends_and_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        // Nothing waiting: WouldBlock on a blocking socket too (MSG_DONTWAIT).
        let mut buf = b"kept".to_vec();
        buf.reserve(64);
        let e = recv_append(&b, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert_eq!(send(&a, b"bytes").unwrap(), 5);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(recv_append(&b, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"keptbytes", "appended after what was there");
        // A full socket: WouldBlock, not a wait.
        let chunk = vec![7u8; 1 << 16];
        let e = loop {
            match send(&a, &chunk) {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        // End of stream: Ok(0); then sends to the closed peer fail.
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (d, _) = l.accept().unwrap();
        drop(d);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(recv_append(&c, &mut buf).unwrap(), 0);
        let e = (0..50)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                send(&c, b"x").err()
            })
            .expect("a send to a closed peer fails");
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{e}"
        );
    }

    #[test]
    fn with_socket_reads_options_of_a_live_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = with_socket(&l, |s| s.local_addr().unwrap().as_socket().unwrap());
        assert_eq!(local, l.local_addr().unwrap());
        // Not redirected: there is no original destination to read.
        assert!(original_dst(&l, local).is_err());
    }
}

/// The unit tests' global allocator: the system's, counting the allocations of the threads
/// that ask it to (see [`counting::count`]).
#[cfg(test)]
pub(crate) mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        /// Allocations so far on this thread while counting; `None`: not counting. A `const`
        /// cell with nothing to drop: reading it allocates nothing and works at any time.
        static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Start (`true`) or stop counting this thread's allocations; returns the count so far.
    pub(crate) fn count(on: bool) -> u64 {
        COUNT.with(|c| {
            let so_far = c.get().unwrap_or(0);
            c.set(on.then_some(so_far));
            so_far
        })
    }

    /// Assert that `run(n, uring)` (allocations while doing `n` of something, counted on a
    /// fresh connection) allocates no more for 70 than for 10, under io_uring and epoll: after
    /// its first few, each one allocates nothing. A run of 5 first makes what a process or
    /// thread makes once. `what` names the unit in the failure message.
    pub(crate) fn assert_none_per(what: &str, run: impl Fn(usize, bool) -> u64) {
        for uring in [true, false] {
            run(5, uring);
            let few = run(10, uring);
            let many = run(70, uring);
            assert!(few > 0, "the counting allocator counts");
            assert_eq!(
                many, few,
                "allocations for 60 more {what} (io_uring: {uring})"
            );
        }
    }

    struct Counting;

    fn counted() {
        let _ = COUNT.try_with(|c| {
            if let Some(n) = c.get() {
                c.set(Some(n + 1));
            }
        });
    }

    // SAFETY: every method forwards to the system allocator with the caller's arguments, so
    // the `GlobalAlloc` contract holds as it does for `System`; counting touches only a
    // thread-local `Cell` and allocates nothing.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            counted();
            // SAFETY: the caller's contract for `alloc`, passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            counted();
            // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            counted();
            // SAFETY: the caller's contract for `realloc`, passed on (`ptr` came from `System`
            // through this allocator).
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract for `dealloc`, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}
