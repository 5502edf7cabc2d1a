//! The crate's only `unsafe`: borrowing a runtime socket's file descriptor as a `socket2`
//! reference, so socket options (original destination, mark, transparent) can be read and set
//! through socket2's safe API.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockRef;

/// Run `f` with a `socket2` view of the socket behind `socket`.
pub fn with_socket<R>(socket: &impl AsRawFd, f: impl FnOnce(&SockRef<'_>) -> R) -> R {
    // SAFETY: `socket` is borrowed for the whole call, so its descriptor stays open and owned by
    // it while `f` runs; the borrowed descriptor does not escape `f` (SockRef borrows it and is
    // dropped before we return), and nothing here closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    f(&SockRef::from(&fd))
}

/// The destination a connection had before an iptables/nftables REDIRECT (SO_ORIGINAL_DST for
/// IPv4, IP6T_SO_ORIGINAL_DST for IPv6).
pub fn original_dst(socket: &impl AsRawFd, local: SocketAddr) -> std::io::Result<SocketAddr> {
    with_socket(socket, |s| {
        let addr = if local.is_ipv4() {
            s.original_dst_v4()?
        } else {
            s.original_dst_v6()?
        };
        addr.as_socket()
            .ok_or_else(|| std::io::Error::other("original destination is not an IP address"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_socket_reads_options_of_a_live_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = with_socket(&l, |s| s.local_addr().unwrap().as_socket().unwrap());
        assert_eq!(local, l.local_addr().unwrap());
        // Not redirected: there is no original destination to read.
        assert!(original_dst(&l, local).is_err());
    }
}
