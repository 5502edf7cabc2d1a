//! `dataplane capture`: the nftables rules that send egress TCP to the proxy, printed, applied
//! or removed. Rule generation is a pure function of the options.
//!
//! - `redirect`: NAT REDIRECT to the outbound port, for traffic forwarded through this host
//!   (prerouting: the node is the egress gateway or router) and for local processes (output,
//!   sidecar style). The proxy reads the destination with SO_ORIGINAL_DST.
//! - `tproxy`: TPROXY to the outbound port for forwarded traffic (prerouting), with the policy
//!   route that delivers marked packets locally. The destination is the socket's local address.
//!
//! The proxy's own upstream sockets carry `--mark`, so the output rules let them through; traffic
//! to this host's own addresses is never captured. `--include-cidrs` / `--exclude-cidrs` and
//! `--include-ports` / `--exclude-ports` scope interception (exclusions win).

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, ExitCode, Stdio};

use clap::Args;
use ipnet::IpNet;

/// The nftables table the rules live in.
pub const TABLE: &str = "dataplane";
/// Policy-routing table for TPROXY.
const TPROXY_ROUTE_TABLE: u32 = 15001;

/// `dataplane capture`
#[derive(Debug, Args, Clone)]
pub struct CaptureArgs {
    /// redirect or tproxy.
    #[arg(long, env = "DATAPLANE_CAPTURE", default_value = "redirect", value_parser = ["redirect", "tproxy"])]
    pub capture: String,
    /// The proxy's capture port.
    #[arg(long, env = "DATAPLANE_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// The mark on the proxy's own upstream sockets (exempted).
    #[arg(long, env = "DATAPLANE_MARK", default_value = "0x539", value_parser = crate::run::parse_mark)]
    pub mark: u32,
    /// The mark TPROXY puts on captured packets for policy routing.
    #[arg(long, default_value = "0x53a", value_parser = crate::run::parse_mark)]
    pub tproxy_mark: u32,
    /// Capture only these destinations (default: all).
    #[arg(long, value_delimiter = ',')]
    pub include_cidrs: Vec<IpNet>,
    /// Never capture these destinations.
    #[arg(long, value_delimiter = ',')]
    pub exclude_cidrs: Vec<IpNet>,
    /// Capture only these destination ports (default: all).
    #[arg(long, value_delimiter = ',')]
    pub include_ports: Vec<u16>,
    /// Never capture these destination ports.
    #[arg(long, value_delimiter = ',')]
    pub exclude_ports: Vec<u16>,
    /// Install the rules (replacing earlier ones) instead of printing them.
    #[arg(long, conflicts_with = "remove")]
    pub apply: bool,
    /// Remove the rules.
    #[arg(long)]
    pub remove: bool,
}

fn set<T: ToString>(items: impl IntoIterator<Item = T>) -> Option<String> {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    (!items.is_empty()).then(|| format!("{{ {} }}", items.join(", ")))
}

/// The scoping rules shared by every chain: returns for what must not be captured.
fn scope(args: &CaptureArgs) -> Vec<String> {
    let mut rules = Vec::new();
    let family = |net: &&IpNet| if net.addr().is_ipv4() { "ip" } else { "ip6" };
    for fam in ["ip", "ip6"] {
        if let Some(s) = set(args.exclude_cidrs.iter().filter(|n| family(n) == fam)) {
            rules.push(format!("{fam} daddr {s} return"));
        }
    }
    if let Some(s) = set(&args.exclude_ports) {
        rules.push(format!("tcp dport {s} return"));
    }
    if !args.include_cidrs.is_empty() {
        for fam in ["ip", "ip6"] {
            match set(args.include_cidrs.iter().filter(|n| family(n) == fam)) {
                Some(s) => rules.push(format!(
                    "meta nfproto {} {fam} daddr != {s} return",
                    if fam == "ip" { "ipv4" } else { "ipv6" }
                )),
                None => rules.push(format!(
                    "meta nfproto {} return",
                    if fam == "ip" { "ipv4" } else { "ipv6" }
                )),
            }
        }
    }
    if let Some(s) = set(&args.include_ports) {
        rules.push(format!("tcp dport != {s} return"));
    }
    rules
}

fn chain(name: &str, hook: &str, kind: &str, priority: &str, rules: &[String]) -> String {
    let mut out = format!(
        "  chain {name} {{\n    type {kind} hook {hook} priority {priority}; policy accept;\n"
    );
    for r in rules {
        out.push_str(&format!("    {r}\n"));
    }
    out.push_str("  }\n");
    out
}

/// The nftables ruleset for `args` (an `nft -f` script that replaces any earlier one).
pub fn ruleset(args: &CaptureArgs) -> String {
    let port = args.outbound_port;
    let mut base = vec![
        "meta l4proto != tcp return".to_owned(),
        "fib daddr type local return".to_owned(),
        format!("tcp dport {port} return"),
    ];
    base.extend(scope(args));
    let mut out = format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    if args.capture == "tproxy" {
        let mut pre = base;
        pre.push(format!(
            "meta nfproto ipv4 meta l4proto tcp tproxy ip to :{port} meta mark set {:#x} accept",
            args.tproxy_mark
        ));
        pre.push(format!(
            "meta nfproto ipv6 meta l4proto tcp tproxy ip6 to :{port} meta mark set {:#x} accept",
            args.tproxy_mark
        ));
        out.push_str(&chain("prerouting", "prerouting", "filter", "mangle", &pre));
    } else {
        let mut pre = base.clone();
        pre.push(format!("meta l4proto tcp redirect to :{port}"));
        out.push_str(&chain("prerouting", "prerouting", "nat", "dstnat", &pre));
        let mut output = vec![format!("meta mark {:#x} return", args.mark)];
        output.extend(base);
        output.push(format!("meta l4proto tcp redirect to :{port}"));
        out.push_str(&chain("output", "output", "nat", "-100", &output));
    }
    out.push_str("}\n");
    out
}

/// The policy-routing commands TPROXY needs (`ip` arguments), per family.
fn tproxy_routes(args: &CaptureArgs, add: bool) -> Vec<Vec<String>> {
    let verb = if add { "add" } else { "del" };
    let mark = format!("{:#x}", args.tproxy_mark);
    let table = TPROXY_ROUTE_TABLE.to_string();
    let mut cmds = Vec::new();
    for (fam, any) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
        cmds.push(
            vec![fam, "rule", verb, "fwmark", &mark, "lookup", &table]
                .into_iter()
                .map(String::from)
                .collect(),
        );
        cmds.push(
            vec![
                fam, "route", verb, "local", any, "dev", "lo", "table", &table,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        );
    }
    cmds
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("nft failed ({status})"))
    }
}

/// Whether `ip` is one of the addresses scoped in (for tests and logs).
pub fn captures(args: &CaptureArgs, ip: IpAddr, port: u16) -> bool {
    let excluded =
        args.exclude_cidrs.iter().any(|n| n.contains(&ip)) || args.exclude_ports.contains(&port);
    let included = (args.include_cidrs.is_empty()
        || args.include_cidrs.iter().any(|n| n.contains(&ip)))
        && (args.include_ports.is_empty() || args.include_ports.contains(&port));
    port != args.outbound_port && !excluded && included
}

/// `dataplane capture`
pub fn capture(args: &CaptureArgs) -> ExitCode {
    if !args.apply && !args.remove {
        print!("{}", ruleset(args));
        return ExitCode::SUCCESS;
    }
    let result = if args.remove {
        let r = nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"));
        if args.capture == "tproxy" {
            for cmd in tproxy_routes(args, false) {
                let _ = Command::new("ip").args(&cmd).stderr(Stdio::null()).status();
            }
        }
        r
    } else {
        let r = nft(&ruleset(args));
        if r.is_ok() && args.capture == "tproxy" {
            for cmd in tproxy_routes(args, true) {
                // An existing identical rule or route is fine.
                let _ = Command::new("ip").args(&cmd).stderr(Stdio::null()).status();
            }
        }
        r
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CaptureArgs,
    }

    fn args(argv: &[&str]) -> CaptureArgs {
        Cli::parse_from(std::iter::once("capture").chain(argv.iter().copied())).args
    }

    #[test]
    fn redirect_ruleset() {
        let r = ruleset(&args(&[]));
        assert!(
            r.starts_with("table inet dataplane\ndelete table inet dataplane\n"),
            "{r}"
        );
        assert!(r.contains("type nat hook prerouting priority dstnat"));
        assert!(
            r.contains("    meta mark 0x539 return\n"),
            "the proxy's own sockets pass: {r}"
        );
        assert!(r.contains("fib daddr type local return"));
        assert!(r.contains("tcp dport 15001 return"), "loop guard: {r}");
        assert_eq!(r.matches("meta l4proto tcp redirect to :15001").count(), 2);
    }

    #[test]
    fn scoping() {
        let a = args(&[
            "--include-cidrs",
            "10.0.0.0/8,2001:db8::/32",
            "--exclude-cidrs",
            "10.1.0.0/16",
            "--exclude-ports",
            "22,53",
            "--include-ports",
            "443",
        ]);
        let r = ruleset(&a);
        assert!(r.contains("ip daddr { 10.1.0.0/16 } return"), "{r}");
        assert!(r.contains("tcp dport { 22, 53 } return"));
        assert!(r.contains("meta nfproto ipv4 ip daddr != { 10.0.0.0/8 } return"));
        assert!(r.contains("meta nfproto ipv6 ip6 daddr != { 2001:db8::/32 } return"));
        assert!(r.contains("tcp dport != { 443 } return"));
        assert!(captures(&a, "10.2.0.1".parse().unwrap(), 443));
        assert!(
            !captures(&a, "10.1.0.1".parse().unwrap(), 443),
            "excluded CIDR"
        );
        assert!(
            !captures(&a, "10.2.0.1".parse().unwrap(), 80),
            "not an included port"
        );
        assert!(
            !captures(&a, "192.0.2.1".parse().unwrap(), 443),
            "not an included CIDR"
        );
        let v4_only = ruleset(&args(&["--include-cidrs", "10.0.0.0/8"]));
        assert!(
            v4_only.contains("meta nfproto ipv6 return"),
            "no IPv6 included: none captured"
        );
    }

    #[test]
    fn tproxy_ruleset() {
        let a = args(&["--capture", "tproxy", "--outbound-port", "15006"]);
        let r = ruleset(&a);
        assert!(r.contains("type filter hook prerouting priority mangle"));
        assert!(
            r.contains("meta l4proto tcp tproxy ip to :15006 meta mark set 0x53a accept"),
            "{r}"
        );
        assert!(!r.contains("hook output"));
        let routes = tproxy_routes(&a, true);
        assert_eq!(
            routes[0],
            ["-4", "rule", "add", "fwmark", "0x53a", "lookup", "15001"]
        );
        assert_eq!(
            routes[1],
            [
                "-4",
                "route",
                "add",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                "15001"
            ]
        );
    }
}
