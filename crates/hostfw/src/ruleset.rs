//! The nftables text of a [`HostPlan`]: one table, `inet bulwark`, with an
//! input chain that drops by default and, when egress is restricted, an
//! output chain that does too. [`apply_script`] wraps it so that one
//! `nft -f` transaction replaces whatever version of the table is there.
//!
//! Everything written into the text is typed (addresses, networks, ports,
//! numbers) or a role name that the topology's validation limits to
//! letters, digits, `-`, `_` and `.`: nothing in a topology can inject nft
//! syntax.
use crate::plan::{Allowed, HostPlan, Listener, OutProtocol, Protocol, Service};
use ipnet::IpNet;
use std::fmt::Write;
use std::net::IpAddr;

/// The table every rule lives in; nothing else on the host is touched.
pub const TABLE: &str = "bulwark";
/// Its family: one table for IPv4 and IPv6.
pub const FAMILY: &str = "inet";
/// The prefix of dropped packets in the kernel log (`in: ` or `out: `
/// follows).
pub const LOG_PREFIX: &str = "bulwark drop ";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(a: IpAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    fn keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// `{ a, b }`, or `a` alone.
fn set<T: ToString>(items: &[T]) -> String {
    let mut v: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    v.sort();
    v.dedup();
    if v.len() == 1 {
        v.remove(0)
    } else {
        format!("{{ {} }}", v.join(", "))
    }
}

/// A network as nft writes it: a bare address for a /32 or /128.
fn net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.trunc().to_string()
    }
}

fn comment(l: &Listener) -> String {
    let who = match &l.from {
        Allowed::Anyone => "anyone".to_string(),
        Allowed::Only(v) => {
            let mut names: Vec<&str> = v.iter().map(|p| p.who.as_str()).collect();
            names.sort();
            names.dedup();
            names.join(" ")
        }
    };
    // nft comments hold at most 128 bytes.
    let mut c = format!("{} {} from {who}", l.role, l.service.name());
    if c.len() > 120 {
        c.truncate(117);
        c.push_str("...");
    }
    c
}

/// The rules letting `l`'s sources in, one per address family in use (a
/// single one when anyone may reach every address).
fn listener_rules(l: &Listener, out: &mut String) {
    let families = if l.addresses.is_empty() && l.from == Allowed::Anyone {
        vec![None]
    } else {
        vec![Some(Family::V4), Some(Family::V6)]
    };
    for family in families {
        let mut rule = String::new();
        if let Some(family) = family {
            let kw = family.keyword();
            let daddr: Vec<IpAddr> = l.addresses.iter().copied().filter(|a| Family::of(*a) == family).collect();
            if !l.addresses.is_empty() && daddr.is_empty() {
                continue;
            }
            if !daddr.is_empty() {
                let _ = write!(rule, "{kw} daddr {} ", set(&daddr));
            }
            if let Allowed::Only(v) = &l.from {
                // Two callers on one machine are one address.
                let mut saddr: Vec<String> = Vec::new();
                for n in v.iter().filter(|p| Family::of(p.net.addr()) == family).map(|p| net(&p.net)) {
                    if !saddr.contains(&n) {
                        saddr.push(n);
                    }
                }
                if saddr.is_empty() {
                    continue;
                }
                let _ = write!(rule, "{kw} saddr {} ", set(&saddr));
            }
        }
        match (l.protocol, l.port) {
            (Protocol::Tcp, Some(port)) => {
                let _ = write!(rule, "tcp dport {port} ");
            }
            (Protocol::Udp, Some(port)) => {
                let _ = write!(rule, "udp dport {port} ");
            }
            (Protocol::Tcp, None) => rule.push_str("meta l4proto tcp "),
            (Protocol::Udp, None) => rule.push_str("meta l4proto udp "),
            (Protocol::Vrrp, _) => rule.push_str("meta l4proto vrrp "),
        }
        let _ = writeln!(out, "\t\t{rule}accept comment \"{}\"", comment(l));
    }
}

fn out_rules(o: &crate::plan::Outbound, out: &mut String) {
    let families = if o.to.is_empty() { vec![None] } else { vec![Some(Family::V4), Some(Family::V6)] };
    for family in families {
        let mut rule = String::new();
        if let Some(family) = family {
            let to: Vec<String> = o.to.iter().filter(|n| Family::of(n.addr()) == family).map(net).collect();
            if to.is_empty() {
                continue;
            }
            let _ = write!(rule, "{} daddr {} ", family.keyword(), set(&to));
        }
        match (o.protocol, o.port) {
            (OutProtocol::Tcp, Some(p)) => {
                let _ = write!(rule, "tcp dport {p} ");
            }
            (OutProtocol::Udp, Some(p)) => {
                let _ = write!(rule, "udp dport {p} ");
            }
            (OutProtocol::Tcp, None) => rule.push_str("meta l4proto tcp "),
            (OutProtocol::Udp, None) => rule.push_str("meta l4proto udp "),
            (OutProtocol::Vrrp, _) => rule.push_str("meta l4proto vrrp "),
        }
        let _ = writeln!(out, "\t\t{rule}accept comment \"to {}\"", o.why);
    }
}

/// The ruleset of one host: `table inet bulwark { ... }`, with a header of
/// `#` comments naming the host.
pub fn ruleset(plan: &HostPlan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# bulwark host firewall of host {} ({})", plan.host, plan.address);
    let _ = writeln!(s, "# generated from the topology; `bulwark firewall check` compares it with the kernel's");
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    let public: Vec<&Listener> =
        plan.inbound.iter().filter(|l| matches!(l.service, Service::Http | Service::Https)).collect();
    let public_ports: Vec<u16> = public.iter().filter_map(|l| l.port).collect();
    let rate = plan.public_rate_limit.filter(|_| !public_ports.is_empty());
    if rate.is_some() {
        for (name, ty) in [("public_rate4", "ipv4_addr"), ("public_rate6", "ipv6_addr")] {
            let _ = writeln!(
                s,
                "\tset {name} {{\n\t\ttype {ty}\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n\t}}\n"
            );
        }
    }
    let _ = writeln!(s, "\tchain input {{");
    let _ = writeln!(s, "\t\ttype filter hook input priority filter; policy drop;");
    s.push_str("\t\tct state invalid drop\n");
    s.push_str("\t\tiif \"lo\" accept\n");
    s.push_str("\t\tct state established,related accept\n");
    s.push_str("\t\ticmp type { destination-unreachable, echo-request, time-exceeded, parameter-problem } accept\n");
    s.push_str("\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept\n");
    if let Some((per_second, burst)) = rate {
        // Per client: an IPv4 address, or an IPv6 /64 (as the lb counts).
        let ports = set(&public_ports);
        let _ = writeln!(s, "\t\ttcp dport {ports} ct state new add @public_rate4 {{ ip saddr limit rate over {per_second}/second burst {burst} packets }} drop comment \"public connection rate\"");
        let _ = writeln!(s, "\t\ttcp dport {ports} ct state new add @public_rate6 {{ ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over {per_second}/second burst {burst} packets }} drop comment \"public connection rate\"");
    }
    for l in &plan.inbound {
        listener_rules(l, &mut s);
    }
    if plan.log_drops {
        let _ = writeln!(s, "\t\tlimit rate 5/minute burst 5 packets log prefix \"{LOG_PREFIX}in: \" level info");
    }
    s.push_str("\t}\n");
    if let Some(outbound) = &plan.outbound {
        s.push('\n');
        let _ = writeln!(s, "\tchain output {{");
        let _ = writeln!(s, "\t\ttype filter hook output priority filter; policy drop;");
        s.push_str("\t\toif \"lo\" accept\n");
        s.push_str("\t\tct state established,related accept\n");
        // Errors, echo and neighbour discovery: the network needs them.
        s.push_str("\t\tmeta l4proto { icmp, ipv6-icmp } accept\n");
        for o in outbound {
            out_rules(o, &mut s);
        }
        if plan.log_drops {
            let _ = writeln!(s, "\t\tlimit rate 5/minute burst 5 packets log prefix \"{LOG_PREFIX}out: \" level info");
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// `ruleset` as one atomic `nft -f` transaction that replaces any earlier
/// version of the table (creating it empty first makes the delete succeed
/// when there is none) and leaves every other table alone.
pub fn apply_script(plan: &HostPlan) -> String {
    format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n{}", ruleset(plan))
}

/// The transaction that removes the table (and succeeds when it is absent).
pub fn remove_script() -> String {
    format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")
}
