//! DNS for DNS-resolved upstreams: the pure message layer ([`message`]) and a per-worker async
//! resolver ([`resolver`]) with a TTL cache and negative caching. Spoken with hickory-proto over
//! UDP (TCP when truncated) to `--dns-server` or the nameservers of /etc/resolv.conf; never
//! blocking a worker.

pub mod message;
pub mod resolver;

use std::net::{IpAddr, SocketAddr};

/// The nameservers of a resolv.conf text (port 53), in order.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
        let got: Vec<String> = super::nameservers(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.2:53", "[fe80::1]:53"]);
    }
}
