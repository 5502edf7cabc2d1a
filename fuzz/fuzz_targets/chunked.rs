//! Chunked framing on arbitrary bytes, fed whole and in two pieces: never panics, the two agree.
#![no_main]

use dataplane::http::chunked::Tracker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut whole = Tracker::new();
    let a = whole.feed(data);
    let mut split = Tracker::new();
    let cut = data.len() / 2;
    let b = split.feed(&data[..cut]).and_then(|n| {
        if split.done() {
            Ok(n)
        } else {
            split.feed(&data[cut..]).map(|m| n + m)
        }
    });
    if let (Ok(a), Ok(b)) = (a, b) {
        assert!(a <= data.len());
        assert_eq!(a, b, "split feeding disagrees");
        assert_eq!(whole.done(), split.done());
    }
});
