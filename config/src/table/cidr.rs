//! Destination-address matching for TCP and TLS demultiplexing: longest-prefix match over
//! CIDRs, IPv4 and IPv6 (spec §5.1, §5.4). One hash map per prefix length present, probed from
//! the longest length down; tables here have few distinct lengths, so a lookup is a handful of
//! hash probes and allocates nothing.

use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashMap;

/// A longest-prefix-match table from CIDRs to `T`.
#[derive(Debug, Clone)]
pub struct CidrMap<T> {
    v4: Vec<(u8, FxHashMap<u32, T>)>,
    v6: Vec<(u8, FxHashMap<u128, T>)>,
}

impl<T> Default for CidrMap<T> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn slot<K, T>(tables: &mut Vec<(u8, FxHashMap<K, T>)>, len: u8) -> &mut FxHashMap<K, T> {
    // Kept sorted longest first.
    let at = tables.partition_point(|(l, _)| *l > len);
    if tables.get(at).is_none_or(|(l, _)| *l != len) {
        tables.insert(at, (len, FxHashMap::default()));
    }
    &mut tables[at].1
}

impl<T> CidrMap<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Insert a CIDR (host bits are ignored). The first insert of a block wins; returns
    /// `false` when the block was already present.
    pub fn insert(&mut self, net: IpNet, value: T) -> bool {
        let len = net.prefix_len();
        match net.network() {
            IpAddr::V4(a) => {
                let map = slot(&mut self.v4, len);
                let key = u32::from(a) & mask4(len);
                if map.contains_key(&key) {
                    return false;
                }
                map.insert(key, value);
            }
            IpAddr::V6(a) => {
                let map = slot(&mut self.v6, len);
                let key = u128::from(a) & mask6(len);
                if map.contains_key(&key) {
                    return false;
                }
                map.insert(key, value);
            }
        }
        true
    }

    /// The value of the longest prefix containing `ip`, with that prefix length. An IPv4-mapped
    /// IPv6 address is looked up as IPv4.
    pub fn find(&self, ip: IpAddr) -> Option<(&T, u8)> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&(a & mask4(*len))).map(|v| (v, *len)))
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return self.find(IpAddr::V4(v4));
                }
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&(a & mask6(*len))).map(|v| (v, *len)))
            }
        }
    }

    /// Every block and value, for display (longest prefixes first).
    pub fn entries(&self) -> Vec<(IpNet, &T)> {
        let mut out = Vec::new();
        for (len, map) in &self.v4 {
            for (k, v) in map {
                out.push((
                    IpNet::new(IpAddr::V4((*k).into()), *len).unwrap_or_default(),
                    v,
                ));
            }
        }
        for (len, map) in &self.v6 {
            for (k, v) in map {
                out.push((
                    IpNet::new(IpAddr::V6((*k).into()), *len).unwrap_or_default(),
                    v,
                ));
            }
        }
        out.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut m = CidrMap::new();
        m.insert("10.0.0.0/8".parse().unwrap(), "8");
        m.insert("10.1.0.0/16".parse().unwrap(), "16");
        m.insert("10.1.2.3/32".parse().unwrap(), "32");
        m.insert("0.0.0.0/0".parse().unwrap(), "0");
        m.insert("2001:db8::/32".parse().unwrap(), "v6");
        let cases: &[(&str, Option<(&str, u8)>)] = &[
            ("10.1.2.3", Some(("32", 32))),
            ("10.1.2.4", Some(("16", 16))),
            ("10.2.0.1", Some(("8", 8))),
            ("11.0.0.1", Some(("0", 0))),
            ("2001:db8::5", Some(("v6", 32))),
            ("2001:db9::5", None),
            ("::ffff:10.1.2.3", Some(("32", 32))),
        ];
        for (ip, want) in cases {
            let got = m.find(ip.parse().unwrap()).map(|(v, l)| (*v, l));
            assert_eq!(got, *want, "{ip}");
        }
    }

    #[test]
    fn host_bits_ignored_and_first_wins() {
        let mut m = CidrMap::new();
        assert!(m.insert("10.0.0.7/24".parse().unwrap(), 1));
        assert!(!m.insert("10.0.0.0/24".parse().unwrap(), 2));
        assert_eq!(m.find("10.0.0.200".parse().unwrap()), Some((&1, 24)));
    }
}
