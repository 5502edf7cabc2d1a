//! DNS messages, pure: build an A query, read an answer into addresses and a bounded TTL.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Shortest TTL honoured (a TTL of 0 would mean a query per connection).
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest TTL honoured.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long a negative answer is cached at most.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Negative TTL when the answer carries no SOA.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Addresses kept from one answer.
pub const MAX_ADDRESSES: usize = 64;

/// What an answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Addresses, cacheable for `ttl`.
    Addresses {
        /// The addresses, in answer order.
        addrs: Vec<IpAddr>,
        /// Bounded TTL.
        ttl: Duration,
    },
    /// NXDOMAIN or no address records: cacheable for `ttl`.
    Negative {
        /// Bounded negative TTL.
        ttl: Duration,
        /// The response code (NoError for "no data").
        nxdomain: bool,
    },
    /// The answer did not fit: ask again over TCP.
    Truncated,
    /// The server failed (SERVFAIL, REFUSED, ...): try another server.
    ServerError(String),
}

/// Why an answer was unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadAnswer {
    /// Not a DNS message.
    Malformed(String),
    /// An answer to another query (wrong id or question): ignore it.
    Mismatch,
}

/// An A query for `name` with `id`, recursion desired.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("invalid name {name:?}: {e}"))?;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, RecordType::A));
    msg.to_vec().map_err(|e| e.to_string())
}

fn bound(ttl: u32, max: Duration) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, max)
}

/// Read the answer to the query `id` for `name`.
pub fn answer(bytes: &[u8], id: u16, name: &str) -> Result<Answer, BadAnswer> {
    let msg = Message::from_vec(bytes).map_err(|e| BadAnswer::Malformed(e.to_string()))?;
    if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
        return Err(BadAnswer::Mismatch);
    }
    let asked = msg.queries.first().map(|q| q.name().to_ascii());
    let expected = Name::from_ascii(name).map(|n| n.to_ascii()).ok();
    let same = match (asked, expected) {
        (Some(a), Some(e)) => a
            .trim_end_matches('.')
            .eq_ignore_ascii_case(e.trim_end_matches('.')),
        _ => false,
    };
    if !same {
        return Err(BadAnswer::Mismatch);
    }
    if msg.metadata.truncation {
        return Ok(Answer::Truncated);
    }
    let negative_ttl = || {
        msg.authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(bound(r.ttl.min(soa.minimum), MAX_NEGATIVE_TTL)),
                _ => None,
            })
            .unwrap_or(DEFAULT_NEGATIVE_TTL)
    };
    match msg.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return Ok(Answer::Negative {
                ttl: negative_ttl(),
                nxdomain: true,
            });
        }
        other => return Ok(Answer::ServerError(other.to_string())),
    }
    // CNAME chains come with the final A records in the same answer section.
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for record in &msg.answers {
        if let RData::A(a) = &record.data {
            if addrs.len() < MAX_ADDRESSES {
                addrs.push(IpAddr::V4(a.0));
            }
            ttl = ttl.min(record.ttl);
        }
    }
    if addrs.is_empty() {
        return Ok(Answer::Negative {
            ttl: negative_ttl(),
            nxdomain: false,
        });
    }
    Ok(Answer::Addresses {
        addrs,
        ttl: bound(ttl, MAX_TTL),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};

    use super::*;

    fn response(
        id: u16,
        name: &str,
        code: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    ) -> Vec<u8> {
        let mut msg = Message::new(id, MessageType::Response, OpCode::Query);
        msg.metadata.response_code = code;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        msg.answers = answers;
        msg.authorities = authorities;
        msg.to_vec().unwrap()
    }

    fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::from(ip))),
        )
    }

    #[test]
    fn query_round_trips() {
        let q = query(7, "api.example.com").unwrap();
        let msg = Message::from_vec(&q).unwrap();
        assert_eq!(msg.metadata.id, 7);
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.queries[0].name().to_ascii(), "api.example.com.");
        assert!(query(1, "bad name..x").is_err());
    }

    #[test]
    fn addresses_with_min_ttl_and_cname_chain() {
        let cname = Record::from_rdata(
            Name::from_ascii("a.com").unwrap(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("b.com").unwrap())),
        );
        let bytes = response(
            1,
            "a.com",
            ResponseCode::NoError,
            vec![
                cname,
                a("b.com", 30, [10, 0, 0, 1]),
                a("b.com", 20, [10, 0, 0, 2]),
            ],
            vec![],
        );
        assert_eq!(
            answer(&bytes, 1, "A.COM."),
            Ok(Answer::Addresses {
                addrs: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
                ttl: Duration::from_secs(20)
            })
        );
    }

    #[test]
    fn ttl_bounds() {
        let zero = response(
            1,
            "a.com",
            ResponseCode::NoError,
            vec![a("a.com", 0, [1, 1, 1, 1])],
            vec![],
        );
        assert!(
            matches!(answer(&zero, 1, "a.com"), Ok(Answer::Addresses { ttl, .. }) if ttl == MIN_TTL)
        );
        let huge = response(
            1,
            "a.com",
            ResponseCode::NoError,
            vec![a("a.com", u32::MAX, [1, 1, 1, 1])],
            vec![],
        );
        assert!(
            matches!(answer(&huge, 1, "a.com"), Ok(Answer::Addresses { ttl, .. }) if ttl == MAX_TTL)
        );
        let many: Vec<Record> = (0..200u8).map(|i| a("a.com", 60, [10, 0, 0, i])).collect();
        let bytes = response(1, "a.com", ResponseCode::NoError, many, vec![]);
        assert!(
            matches!(answer(&bytes, 1, "a.com"), Ok(Answer::Addresses { addrs, .. }) if addrs.len() == MAX_ADDRESSES)
        );
    }

    #[test]
    fn negative_answers() {
        let soa = Record::from_rdata(
            Name::from_ascii("com").unwrap(),
            900,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.com").unwrap(),
                Name::from_ascii("h.com").unwrap(),
                1,
                1,
                1,
                1,
                30,
            )),
        );
        let nx = response(2, "a.com", ResponseCode::NXDomain, vec![], vec![soa]);
        assert_eq!(
            answer(&nx, 2, "a.com"),
            Ok(Answer::Negative {
                ttl: Duration::from_secs(30),
                nxdomain: true
            })
        );
        let nodata = response(2, "a.com", ResponseCode::NoError, vec![], vec![]);
        assert_eq!(
            answer(&nodata, 2, "a.com"),
            Ok(Answer::Negative {
                ttl: DEFAULT_NEGATIVE_TTL,
                nxdomain: false
            })
        );
        let servfail = response(2, "a.com", ResponseCode::ServFail, vec![], vec![]);
        assert!(matches!(
            answer(&servfail, 2, "a.com"),
            Ok(Answer::ServerError(_))
        ));
    }

    #[test]
    fn mismatches_and_garbage() {
        let bytes = response(
            1,
            "a.com",
            ResponseCode::NoError,
            vec![a("a.com", 5, [1, 1, 1, 1])],
            vec![],
        );
        assert_eq!(answer(&bytes, 2, "a.com"), Err(BadAnswer::Mismatch));
        assert_eq!(answer(&bytes, 1, "b.com"), Err(BadAnswer::Mismatch));
        assert!(matches!(
            answer(b"\x00\x01garbage", 1, "a.com"),
            Err(BadAnswer::Malformed(_)) | Err(BadAnswer::Mismatch)
        ));
        assert!(answer(&[], 1, "a.com").is_err());
        let mut truncated = Message::new(3, MessageType::Response, OpCode::Query);
        truncated.metadata.truncation = true;
        truncated.add_query(Query::query(
            Name::from_ascii("a.com").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            answer(&truncated.to_vec().unwrap(), 3, "a.com"),
            Ok(Answer::Truncated)
        );
    }
}
