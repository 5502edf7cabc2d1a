//! Chunked transfer-coding framing (RFC 9112 §7.1), as a byte-at-a-time state machine: it
//! tells where a chunked message ends (so keep-alive knows where the next one starts) and
//! refuses malformed chunk sizes, without buffering or decoding the body. Trailers pass
//! through.

/// Longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 4096;
/// Largest chunk size accepted (16 hex digits would overflow nothing; 15 keeps it sane).
const MAX_SIZE_DIGITS: usize = 15;

/// Where a chunk-size line is after its digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Still in the digits.
    None,
    /// Optional whitespace after the digits.
    Space,
    /// Inside `;name=value` extensions.
    In,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        digits: usize,
        value: u64,
        line: usize,
        ext: Ext,
    },
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// Where a chunked body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    state: State,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Default for Tracker {
    fn default() -> Self {
        Self {
            state: State::Size {
                digits: 0,
                value: 0,
                line: 0,
                ext: Ext::None,
            },
        }
    }
}

impl Tracker {
    /// A tracker at the start of a chunked body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the whole message (last chunk and trailers) has been seen.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Feed bytes; returns how many belong to this message (all of them unless the message
    /// ended inside `bytes`).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data { left } = self.state {
                let take = (left.min((bytes.len() - i) as u64)) as usize;
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match self.state {
                State::Size {
                    digits,
                    value,
                    line,
                    ext,
                } => {
                    if line + 1 > MAX_SIZE_LINE {
                        return Err(Malformed("chunk size line too long"));
                    }
                    match (b, ext) {
                        (b'\r', _) if digits > 0 => State::SizeLf { value },
                        (b';', _) if digits > 0 => State::Size {
                            digits,
                            value,
                            line: line + 1,
                            ext: Ext::In,
                        },
                        (_, Ext::In) if b != b'\n' => State::Size {
                            digits,
                            value,
                            line: line + 1,
                            ext: Ext::In,
                        },
                        // Optional whitespace may only lead to a `;` extension (RFC 9112 §7.1.1).
                        (b' ' | b'\t', Ext::None | Ext::Space) if digits > 0 => State::Size {
                            digits,
                            value,
                            line: line + 1,
                            ext: Ext::Space,
                        },
                        (_, Ext::None) if b.is_ascii_hexdigit() => {
                            if digits == MAX_SIZE_DIGITS {
                                return Err(Malformed("chunk size too large"));
                            }
                            let v = u64::from((b as char).to_digit(16).unwrap_or(0));
                            State::Size {
                                digits: digits + 1,
                                value: value * 16 + v,
                                line: line + 1,
                                ext,
                            }
                        }
                        _ => return Err(Malformed("invalid chunk size")),
                    }
                }
                State::SizeLf { value } => match b {
                    b'\n' if value == 0 => State::TrailerStart,
                    b'\n' => State::Data { left: value },
                    _ => return Err(Malformed("chunk size not followed by CRLF")),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(Malformed("chunk data not followed by CRLF")),
                },
                State::DataLf => match b {
                    b'\n' => State::Size {
                        digits: 0,
                        value: 0,
                        line: 0,
                        ext: Ext::None,
                    },
                    _ => return Err(Malformed("chunk data not followed by CRLF")),
                },
                State::TrailerStart => match b {
                    b'\r' => State::TrailerLf { empty: true },
                    b'\n' => return Err(Malformed("bare LF in trailers")),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf { empty: false },
                    b'\n' => return Err(Malformed("bare LF in trailers")),
                    _ => State::TrailerLine,
                },
                State::TrailerLf { empty } => match (b, empty) {
                    (b'\n', true) => {
                        self.state = State::Done;
                        return Ok(i);
                    }
                    (b'\n', false) => State::TrailerStart,
                    _ => return Err(Malformed("trailer not followed by CRLF")),
                },
                State::Data { .. } => unreachable_data(),
                State::Done => return Ok(i - 1),
            };
        }
        Ok(i)
    }
}

/// `State::Data` is handled before the byte match.
fn unreachable_data() -> State {
    debug_assert!(false, "data state handled above");
    State::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<usize, Malformed> {
        let mut t = Tracker::new();
        let n = t.feed(body)?;
        if t.done() {
            Ok(n)
        } else {
            Err(Malformed("incomplete"))
        }
    }

    #[test]
    fn complete_bodies_and_where_they_end() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /next";
        assert_eq!(
            whole(body),
            Ok(body.len() - 9),
            "stops before the next request"
        );
        let trailers = b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n";
        assert_eq!(whole(trailers), Ok(trailers.len()));
        assert_eq!(whole(b"A\r\n0123456789\r\n0\r\n\r\n"), Ok(20));
        assert_eq!(whole(b"0\r\n\r\n"), Ok(5));
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let body = b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let mut t = Tracker::new();
        let mut total = 0;
        for b in body.iter() {
            total += t.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(t.done());
        assert_eq!(total, body.len());
    }

    proptest::proptest! {
        #[test]
        fn encoded_bodies_end_exactly_where_they_should(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300), 0..8),
            cuts in proptest::collection::vec(1usize..64, 1..50),
            trailer in proptest::prelude::any::<bool>(),
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(if trailer { &b"0\r\nX-T: 1\r\n\r\n"[..] } else { &b"0\r\n\r\n"[..] });
            let end = body.len();
            body.extend_from_slice(b"GET /next HTTP/1.1\r\n");
            let mut t = Tracker::new();
            let (mut at, mut consumed) = (0, 0);
            for cut in cuts.iter().cycle() {
                if t.done() || at >= body.len() {
                    break;
                }
                let to = (at + cut).min(body.len());
                consumed += t.feed(&body[at..to]).unwrap();
                at = to;
            }
            proptest::prop_assert!(t.done());
            proptest::prop_assert_eq!(consumed, end);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut t = Tracker::new();
            if let Ok(n) = t.feed(&bytes) {
                proptest::prop_assert!(n <= bytes.len());
            }
        }
    }

    #[test]
    fn malformed_chunk_sizes() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"5 5\r\nhello",
            b"fffffffffffffffff\r\n",
            b"5\nhello",
            b"5\r\nhelloX\r\n",
            b"0x5\r\nhello\r\n",
            b"0\r\n\n",
        ] {
            let mut t = Tracker::new();
            assert!(t.feed(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
