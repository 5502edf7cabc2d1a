//! ClientHello parser tests on real captures (curl, openssl 1.3 and 1.2, Python, Chromium with
//! GREASE, ECH and X25519MLKEM768), every prefix of each, the same hellos re-framed across
//! several records, and hostile input.

use proptest::prelude::*;

use super::{MAX_CLIENT_HELLO, Parse, parse};

const CAPTURES: &[(&str, &[u8], Option<&str>)] = &[
    (
        "curl",
        include_bytes!("../../../testdata/client_hello_curl.bin"),
        Some("api.example.com"),
    ),
    (
        "openssl",
        include_bytes!("../../../testdata/client_hello_openssl.bin"),
        Some("api.example.com"),
    ),
    (
        "openssl_tls12",
        include_bytes!("../../../testdata/client_hello_openssl_tls12.bin"),
        Some("api.example.com"),
    ),
    (
        "openssl_no_sni",
        include_bytes!("../../../testdata/client_hello_openssl_no_sni.bin"),
        None,
    ),
    (
        "python",
        include_bytes!("../../../testdata/client_hello_python.bin"),
        Some("api.example.com"),
    ),
    (
        "chromium",
        include_bytes!("../../../testdata/client_hello_chromium.bin"),
        Some("api.example.com"),
    ),
];

fn sni(p: &Parse) -> Option<Option<String>> {
    match p {
        Parse::Hello(h) => Some(
            h.server_name()
                .map(|s| String::from_utf8_lossy(s).into_owned()),
        ),
        _ => None,
    }
}

/// The handshake message of a single-record capture, re-framed into records of `size` bytes.
fn reframe(capture: &[u8], size: usize) -> Vec<u8> {
    let len = usize::from(u16::from_be_bytes([capture[3], capture[4]]));
    let message = &capture[5..5 + len];
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn real_captures_parse() {
    for (name, bytes, want) in CAPTURES {
        let p = parse(bytes);
        assert_eq!(sni(&p), Some(want.map(str::to_owned)), "{name}: {p:?}");
        let Parse::Hello(h) = p else { unreachable!() };
        assert_eq!(
            h.consumed,
            bytes.len(),
            "{name}: the capture is exactly one hello"
        );
    }
}

#[test]
fn every_prefix_needs_more() {
    for (name, bytes, _) in CAPTURES {
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Parse::NeedMore, "{name} cut at {cut}");
        }
    }
}

#[test]
fn hellos_split_across_records() {
    for (name, bytes, want) in CAPTURES {
        for size in [1, 7, 100, 512] {
            let framed = reframe(bytes, size);
            let p = parse(&framed);
            assert_eq!(
                sni(&p),
                Some(want.map(str::to_owned)),
                "{name} in {size}-byte records"
            );
            let Parse::Hello(h) = p else { unreachable!() };
            assert_eq!(h.consumed, framed.len());
            if size >= 100 {
                for cut in 0..framed.len() {
                    assert_eq!(
                        parse(&framed[..cut]),
                        Parse::NeedMore,
                        "{name}/{size} cut at {cut}"
                    );
                }
            }
        }
    }
}

#[test]
fn following_data_is_not_consumed() {
    let (_, bytes, _) = CAPTURES[0];
    let mut more = bytes.to_vec();
    more.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
    let Parse::Hello(h) = parse(&more) else {
        panic!()
    };
    assert_eq!(h.consumed, bytes.len());
}

#[test]
fn chromium_exercises_grease_ech_and_post_quantum_key_share() {
    let (_, bytes, _) = CAPTURES[5];
    assert!(
        bytes.len() > 1700,
        "X25519MLKEM768 key share: {} bytes",
        bytes.len()
    );
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(&[0xfe, 0x0d]),
        "encrypted_client_hello (outer) extension"
    );
    assert!(has(&[0x11, 0xec]), "X25519MLKEM768 group");
    let grease = bytes
        .windows(2)
        .any(|w| w[0] == w[1] && w[0] & 0x0f == 0x0a);
    assert!(grease, "GREASE values");
    let Parse::Hello(h) = parse(bytes) else {
        panic!()
    };
    assert!(h.alpn_h2 && h.alpn_http11);
}

#[test]
fn not_tls() {
    for input in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"SSH-2.0-OpenSSH",
        b"\x16\x01\x00",
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",
        b"\x00",
        b"PRI * HTTP/2.0",
    ] {
        assert_eq!(parse(input), Parse::NotTls, "{input:?}");
    }
}

#[test]
fn oversized_hello() {
    let len = MAX_CLIENT_HELLO; // body length: the message (4 + len) is over the cap
    let header = [
        22,
        3,
        1,
        0x40,
        0x00,
        1,
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
    ];
    assert_eq!(parse(&header), Parse::TooLarge);
}

/// A minimal hello with the given extensions block.
fn hello_with(extensions: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    msg.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    rec
}

fn sni_ext(name: &[u8]) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name);
    let mut list = (entry.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&entry);
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
    ext.extend_from_slice(&list);
    ext
}

#[test]
fn server_name_rules() {
    assert_eq!(
        sni(&parse(&hello_with(&sni_ext(b"API.Example.COM")))),
        Some(Some("api.example.com".into()))
    );
    assert_eq!(sni(&parse(&hello_with(&[]))), Some(None));
    assert!(matches!(
        parse(&hello_with(&sni_ext(b"a\0b.com"))),
        Parse::Invalid(_)
    ));
    assert!(matches!(
        parse(&hello_with(&sni_ext(b""))),
        Parse::Invalid(_)
    ));
    assert!(matches!(
        parse(&hello_with(&sni_ext("é.com".as_bytes()))),
        Parse::Invalid(_)
    ));
    let two = [sni_ext(b"a.com"), sni_ext(b"b.com")].concat();
    assert!(matches!(parse(&hello_with(&two)), Parse::Invalid(_)));
    let mut truncated = sni_ext(b"a.com");
    truncated[3] += 1; // extension claims one byte more than the list holds
    assert!(matches!(parse(&hello_with(&truncated)), Parse::Invalid(_)));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
        let mut tls = vec![22, 3, 1];
        tls.extend_from_slice(&bytes);
        let _ = parse(&tls);
    }

    #[test]
    fn mutated_captures_never_panic(which in 0..CAPTURES.len(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = CAPTURES[which].1.to_vec();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Parse::Hello(h) = parse(&bytes) {
            prop_assert!(h.consumed <= bytes.len());
        }
    }
}
