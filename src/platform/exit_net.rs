//! The kernel's side of exits (docs/decisions.md "Exits"):
//!
//! - at an exit, `gnx0` with the inner networks' gateway addresses, IPv4 and IPv6 forwarding
//!   for `gnx0`'s traffic only (per interface, [`ExitKernel`]), and the nftables table `inet globalnet_exit` that masquerades circuits' packets behind the host's own
//!   address and lets nothing reach `gnx0` but answers (conntrack). The table is made with `nft`
//!   before the privilege drop and deleted over nfnetlink at exit (with `CAP_NET_ADMIN` only);
//! - at a client with `[outbound] routes`, the inner addresses on gn0, the routes in their own
//!   table [`EXIT_TABLE`], and the rule `not fwmark EXIT_MARK lookup EXIT_TABLE`: the daemon's
//!   underlay sockets carry the mark, so links never enter gn0. The main table is never edited;
//!   switching off removes exactly the rule (the table's routes go with gn0).

use ipnet::IpNet;
use rtnetlink::packet_route::rule::{RuleAction, RuleFlags, RuleMessage};
use rtnetlink::RouteMessageBuilder;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::routes::{add_address, index_of, nl, with_handle};
use super::PlatformError;
use crate::exit::gateway::{
    client_v4, client_v6, CLIENT_GROUPS, CLIENT_V4, CLIENT_V6, GNX_V4, GNX_V6, INNER_V4_LEN,
    INNER_V4_NET, INNER_V6_LEN, INNER_V6_NET, RESOLVER_V4,
};

/// The exit's TUN device.
pub const GNX_NAME: &str = "gnx0";
/// The routing table of `[outbound] routes`.
pub const EXIT_TABLE: u32 = 7412;
/// The routing table of SOCKS connections: a default route through gn0, chosen by source address
/// (the isolation groups' inner addresses), so the main table is untouched.
pub const SOCKS_TABLE: u32 = 7413;
/// Priority of the SOCKS source rule.
pub const SOCKS_RULE_PRIORITY: u32 = 7413;
/// The firewall mark of the daemon's underlay sockets.
pub const EXIT_MARK: u32 = 0x7412;
/// Priority of the rule (before the main table's 32766).
pub const EXIT_RULE_PRIORITY: u32 = 7412;
/// The exit's nftables table (family inet).
pub const NFT_TABLE: &str = "globalnet_exit";
/// Conntrack entries one circuit (one inner address) may hold at the exit: the kernel's table is
/// shared by every circuit, and the SYN rate limit alone lets a circuit fill it slowly. A new
/// flow past this is refused (ICMP prohibited, so the client fails at once).
pub const EXIT_CT_MAX: u32 = 1024;

/// The host's resolver for the exit's virtual one: the first IPv4 `nameserver` of
/// `/etc/resolv.conf`.
pub fn host_resolver() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver"))
            .then(|| w.next()?.parse::<Ipv4Addr>().ok())
            .flatten()
    })
}

/// What [`set_up_exit`] changed beyond its own table, for [`tear_down_exit`] to put back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExitKernel {
    /// IPv6 leaves this exit: the host forwards IPv6 (the operator's `all/forwarding`), or the
    /// daemon turned on `force_forwarding` for `gnx0` and the uplinks.
    pub ipv6: bool,
    /// Interfaces whose `force_forwarding` the daemon turned on (`gnx0` and the uplinks).
    pub forced: Vec<String>,
    /// Interfaces whose IPv4 `forwarding` the daemon turned on (`gnx0` and the IPv4 uplinks;
    /// empty when the operator's `net.ipv4.ip_forward` is on).
    pub forced_v4: Vec<String>,
}

fn v6_sysctl(ifname: &str, key: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{ifname}/{key}")
}

fn v4_sysctl(ifname: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding")
}

/// The interfaces answers come back on: every interface but loopback and ours with an address of
/// the family (IPv6: beyond link-local; an uplink with only fe80:: cannot masquerade).
fn uplinks(v6: bool) -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for a in addrs {
        let usable = match a.address.as_ref() {
            Some(x) if v6 => x
                .as_sockaddr_in6()
                .map(|x| x.ip())
                .is_some_and(|ip| !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80),
            Some(x) => x.as_sockaddr_in().is_some_and(|x| !x.ip().is_loopback()),
            None => false,
        };
        if !usable
            || a.interface_name == "lo"
            || a.interface_name.starts_with("gn")
            || out.contains(&a.interface_name)
        {
            continue;
        }
        out.push(a.interface_name);
    }
    out
}

/// IPv4 forwarding for what `gnx0` needs, as for IPv6: `net.ipv4.ip_forward` (which writes
/// every interface's `forwarding`) is not touched; the per-interface `forwarding` that the kernel
/// checks on the incoming interface goes on for `gnx0` (circuits' packets out) and the IPv4
/// uplinks (answers back), and the NAT table drops anything those uplinks would forward
/// elsewhere. Interfaces already forwarding are the operator's and are left alone, now and at
/// exit; with `ip_forward` on nothing is changed.
fn ipv4_forwarding() -> Result<Vec<String>, PlatformError> {
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1") {
        return Ok(Vec::new());
    }
    let mut forced = Vec::new();
    for ifname in std::iter::once(GNX_NAME.to_string()).chain(uplinks(false)) {
        let path = v4_sysctl(&ifname);
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(&path, "1").map_err(|e| PlatformError::Netlink(format!("{path}: {e}")))?;
        forced.push(ifname);
    }
    Ok(forced)
}

/// IPv6 forwarding for what `gnx0` needs and nothing else. `all/forwarding` is not touched: it
/// would turn the whole host into an IPv6 router and stop it accepting router advertisements.
/// Instead `force_forwarding` (Linux 6.17) goes on for `gnx0` (circuits' packets out) and the
/// uplinks (answers back), and the NAT table drops anything the uplinks would forward elsewhere
/// ([`ruleset`]). Without `force_forwarding`, IPv6 leaves only where the operator forwards it.
fn ipv6_forwarding() -> Result<ExitKernel, PlatformError> {
    let all = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
        .is_ok_and(|v| v.trim() == "1");
    if all {
        return Ok(ExitKernel {
            ipv6: true,
            ..ExitKernel::default()
        });
    }
    if !std::path::Path::new(&v6_sysctl(GNX_NAME, "force_forwarding")).exists() {
        return Ok(ExitKernel::default());
    }
    let mut forced = Vec::new();
    for ifname in std::iter::once(GNX_NAME.to_string()).chain(uplinks(true)) {
        let path = v6_sysctl(&ifname, "force_forwarding");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            continue; // the operator's: left as it is, now and at exit
        }
        std::fs::write(&path, "1").map_err(|e| PlatformError::Netlink(format!("{path}: {e}")))?;
        forced.push(ifname);
    }
    Ok(ExitKernel {
        ipv6: true,
        forced,
        forced_v4: Vec::new(),
    })
}

/// At an exit: `gnx0`'s addresses (their prefixes route the inner networks to it), up, IPv4
/// forwarding on, IPv6 forwarding for `gnx0`'s traffic, and the NAT table with DNS to the
/// virtual resolver sent to `resolver`. Before the privilege drop.
pub async fn set_up_exit(resolver: Option<Ipv4Addr>) -> Result<ExitKernel, PlatformError> {
    with_handle(|handle| async move {
        let index = index_of(&handle, GNX_NAME).await?;
        add_address(&handle, index, GNX_V4.into(), INNER_V4_LEN).await?;
        add_address(&handle, index, GNX_V6.into(), INNER_V6_LEN).await?;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl("bringing gnx0 up"))
    })
    .await?;
    let forced_v4 = ipv4_forwarding()?;
    if resolver.is_some_and(|r| r.is_loopback()) {
        // A local stub resolver (127.0.0.53): DNAT to loopback needs route_localnet on gnx0.
        let path = format!("/proc/sys/net/ipv4/conf/{GNX_NAME}/route_localnet");
        std::fs::write(&path, "1").map_err(|e| PlatformError::Netlink(format!("{path}: {e}")))?;
    }
    let kernel = ExitKernel {
        forced_v4,
        ..ipv6_forwarding()?
    };
    nft_set_up(resolver, &kernel)?;
    Ok(kernel)
}

/// The ruleset: masquerade what leaves from the inner networks, let only answers (conntrack)
/// into `gnx0`, so no neighbour can route packets to a circuit's inner address, and cap each
/// inner address's conntrack entries at [`EXIT_CT_MAX`]. An uplink whose `force_forwarding` we
/// turned on forwards only into `gnx0`.
fn ruleset(resolver: Option<Ipv4Addr>, kernel: &ExitKernel) -> String {
    let dns = resolver.map_or_else(String::new, |r| {
        format!(
            "\tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tiifname \"{GNX_NAME}\" ip daddr {RESOLVER_V4} meta l4proto {{ tcp, udp }} th dport 53 dnat ip to {r}\n\
             \t}}\n"
        )
    });
    let only_gnx = |family: &str, forced: &[String]| {
        let uplinks: Vec<String> = forced
            .iter()
            .filter(|i| *i != GNX_NAME)
            .map(|i| format!("\"{i}\""))
            .collect();
        if uplinks.is_empty() {
            String::new()
        } else {
            format!(
                "\t\tmeta nfproto {family} iifname {{ {} }} oifname != \"{GNX_NAME}\" drop\n",
                uplinks.join(", ")
            )
        }
    };
    let only_gnx = only_gnx("ipv4", &kernel.forced_v4) + &only_gnx("ipv6", &kernel.forced);
    format!(
        "table inet {t} {{}}\n\
         delete table inet {t}\n\
         table inet {t} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {v4}/{l4} oifname != \"{dev}\" masquerade\n\
         \t\tip6 saddr {v6}/{l6} oifname != \"{dev}\" masquerade\n\
         \t}}\n\
         \tset flows4 {{ type ipv4_addr; size 65535; flags dynamic; }}\n\
         \tset flows6 {{ type ipv6_addr; size 65535; flags dynamic; }}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\toifname \"{dev}\" ct state established,related accept\n\
         \t\toifname \"{dev}\" drop\n\
         \t\tiifname \"{dev}\" ct state new add @flows4 {{ ip saddr ct count over {ct} }} reject with icmpx admin-prohibited\n\
         \t\tiifname \"{dev}\" ct state new add @flows6 {{ ip6 saddr ct count over {ct} }} reject with icmpx admin-prohibited\n\
         {only_gnx}\
         \t}}\n\
         {dns}\
         }}\n",
        t = NFT_TABLE,
        v4 = INNER_V4_NET,
        l4 = INNER_V4_LEN,
        v6 = INNER_V6_NET,
        l6 = INNER_V6_LEN,
        dev = GNX_NAME,
        ct = EXIT_CT_MAX,
    )
}

fn nft_set_up(resolver: Option<Ipv4Addr>, kernel: &ExitKernel) -> Result<(), PlatformError> {
    let err = |e: String| PlatformError::Netlink(format!("nftables table {NFT_TABLE}: {e}"));
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run nft (is nftables installed?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset(resolver, kernel).as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

/// Deletes the NAT table (at exit, with `CAP_NET_ADMIN` only: one nfnetlink batch, no program)
/// and turns off the IPv6 `force_forwarding` and IPv4 `forwarding` [`set_up_exit`] turned on, so
/// the host forwards as before (a network sysctl is writable
/// with `CAP_NET_ADMIN` in the namespace, whatever the user).
pub fn tear_down_exit(kernel: &ExitKernel) -> Result<(), PlatformError> {
    let mut restored = Ok(());
    let v6 = kernel
        .forced
        .iter()
        .map(|i| v6_sysctl(i, "force_forwarding"));
    for path in v6.chain(kernel.forced_v4.iter().map(|i| v4_sysctl(i))) {
        // gnx0 may be gone already (its sysctls with it).
        if std::path::Path::new(&path).exists() {
            if let Err(e) = std::fs::write(&path, "0") {
                restored = Err(PlatformError::Netlink(format!("{path}: {e}")));
            }
        }
    }
    delete_table()?;
    restored
}

fn delete_table() -> Result<(), PlatformError> {
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_DELTABLE: u16 = 2;
    const NFTA_TABLE_NAME: u16 = 1;
    const NFPROTO_INET: u8 = 1;
    const REQUEST: u16 = 1;
    const ACK: u16 = 4;
    let err = |e: std::io::Error| {
        PlatformError::Netlink(format!("deleting nftables table {NFT_TABLE}: {e}"))
    };
    // nlmsghdr (16) + nfgenmsg (4) [+ attributes], lengths padded to 4.
    fn message(
        out: &mut Vec<u8>,
        kind: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
        attrs: &[u8],
    ) {
        let len = 16 + 4 + attrs.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[family, 0]);
        out.extend_from_slice(&res_id.to_be_bytes());
        out.extend_from_slice(attrs);
    }
    let mut name = NFT_TABLE.as_bytes().to_vec();
    name.push(0);
    let mut attr = Vec::new();
    attr.extend_from_slice(&((4 + name.len()) as u16).to_ne_bytes());
    attr.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    attr.extend_from_slice(&name);
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut batch = Vec::new();
    message(
        &mut batch,
        NFNL_MSG_BATCH_BEGIN,
        REQUEST,
        1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    message(
        &mut batch,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
        REQUEST | ACK,
        2,
        NFPROTO_INET,
        0,
        &attr,
    );
    message(
        &mut batch,
        NFNL_MSG_BATCH_END,
        REQUEST,
        3,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER).map_err(err)?;
    s.bind_auto().map_err(err)?;
    s.connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(err)?;
    s.send(&batch, 0).map_err(err)?;
    let mut ack = vec![0u8; 4096];
    let n = s.recv(&mut &mut ack[..], 0).map_err(err)?;
    // NLMSG_ERROR (2) with error 0 is the ACK; a negative errno is the failure.
    let code = ack
        .get(16..20)
        .filter(|_| n >= 20 && ack.get(4..6) == Some(&2u16.to_ne_bytes()[..]))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_ne_bytes);
    match code {
        Some(0) => Ok(()),
        Some(e) => Err(err(std::io::Error::from_raw_os_error(-e))),
        None => Err(err(std::io::Error::other("no acknowledgement"))),
    }
}

/// The rule of `[outbound] routes` for one family.
fn rule(handle: &rtnetlink::Handle, v6: bool) -> RuleMessage {
    let req = handle
        .rule()
        .add()
        .table_id(EXIT_TABLE)
        .fw_mark(EXIT_MARK)
        .priority(EXIT_RULE_PRIORITY)
        .action(RuleAction::ToTable);
    let mut m = if v6 {
        req.v6().message_mut().clone()
    } else {
        req.v4().message_mut().clone()
    };
    m.header.flags |= RuleFlags::Invert;
    m
}

/// The SOCKS source rule for one family: the isolation groups' addresses (the /120 and /24 hold
/// nothing else of ours).
fn socks_rule(handle: &rtnetlink::Handle, v6: bool) -> RuleMessage {
    let req = handle
        .rule()
        .add()
        .table_id(SOCKS_TABLE)
        .priority(SOCKS_RULE_PRIORITY)
        .action(RuleAction::ToTable);
    if v6 {
        req.v6()
            .source_prefix(Ipv6Addr::from(u128::from(CLIENT_V6) & !0xff), 120)
            .message_mut()
            .clone()
    } else {
        req.v4()
            .source_prefix(Ipv4Addr::from(u32::from(CLIENT_V4) & !0xff), 24)
            .message_mut()
            .clone()
    }
}

/// At a client: gn0's inner addresses (one per isolation group), `routes` in [`EXIT_TABLE`]
/// through gn0 with the rule for each family that has a route, and with `socks` the default
/// routes of [`SOCKS_TABLE`] and its source rules. Rules left by a crashed run are replaced.
pub async fn set_up_outbound(
    ifname: &str,
    routes: &[IpNet],
    socks: bool,
) -> Result<(), PlatformError> {
    let routes = routes.to_vec();
    let ifname = ifname.to_string();
    with_handle(|handle| async move {
        let index = index_of(&handle, &ifname).await?;
        for g in 1..=CLIENT_GROUPS {
            add_address(&handle, index, client_v4(g).into(), 32).await?;
            add_address(&handle, index, client_v6(g).into(), 128).await?;
        }
        if socks {
            let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(index)
                .table_id(SOCKS_TABLE)
                .build();
            let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
                .output_interface(index)
                .table_id(SOCKS_TABLE)
                .build();
            for m in [v4, v6] {
                handle
                    .route()
                    .add(m)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("adding the SOCKS default route"))?;
            }
            for v6 in [false, true] {
                let m = socks_rule(&handle, v6);
                while handle.rule().del(m.clone()).execute().await.is_ok() {}
                let mut add = handle.rule().add();
                *add.message_mut() = m;
                add.execute().await.map_err(nl("adding the SOCKS rule"))?;
            }
        }
        // The exit's virtual resolver, for `nameserver 100.127.255.53`: names leave through the
        // exit like the routed traffic (and the host's other resolvers stay as they were).
        let resolver = IpNet::V4(ipnet::Ipv4Net::from(RESOLVER_V4));
        let with_resolver = (!routes.is_empty()).then_some(resolver);
        for r in routes.iter().chain(with_resolver.iter()) {
            let msg = match r {
                IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(n.network(), n.prefix_len())
                    .output_interface(index)
                    .pref_source(CLIENT_V4)
                    .table_id(EXIT_TABLE)
                    .build(),
                IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(n.network(), n.prefix_len())
                    .output_interface(index)
                    .pref_source(CLIENT_V6)
                    .table_id(EXIT_TABLE)
                    .build(),
            };
            handle
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(|e| PlatformError::Netlink(format!("adding the route {r}: {e}")))?;
        }
        for v6 in [false, true] {
            if !routes.iter().any(|r| matches!(r, IpNet::V6(_)) == v6) {
                continue;
            }
            let m = rule(&handle, v6);
            // A rule of a run that ended without removing it.
            while handle.rule().del(m.clone()).execute().await.is_ok() {}
            let mut add = handle.rule().add();
            *add.message_mut() = m;
            add.execute().await.map_err(nl("adding the routing rule"))?;
        }
        Ok(())
    })
    .await
}

/// Removes the rules [`set_up_outbound`] added (the routes leave with gn0).
pub async fn tear_down_outbound(routes: &[IpNet], socks: bool) -> Result<(), PlatformError> {
    let routes = routes.to_vec();
    with_handle(|handle| async move {
        if socks {
            for v6 in [false, true] {
                handle
                    .rule()
                    .del(socks_rule(&handle, v6))
                    .execute()
                    .await
                    .map_err(nl("removing the SOCKS rule"))?;
            }
        }
        for v6 in [false, true] {
            if routes.iter().any(|r| matches!(r, IpNet::V6(_)) == v6) {
                handle
                    .rule()
                    .del(rule(&handle, v6))
                    .execute()
                    .await
                    .map_err(nl("removing the routing rule"))?;
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn ruleset_names_the_inner_networks() {
        let none = super::ExitKernel::default();
        let r = super::ruleset(Some(std::net::Ipv4Addr::new(198, 19, 250, 2)), &none);
        assert!(
            r.contains("ip daddr 100.127.255.53 meta l4proto { tcp, udp } th dport 53 dnat ip to 198.19.250.2"),
            "{r}"
        );
        assert!(!super::ruleset(None, &none).contains("dnat"));
        assert!(!r.contains("nfproto ipv6"), "{r}");
        assert!(!r.contains("nfproto ipv4"), "{r}");
        // Uplinks whose forwarding we turned on forward only into gnx0.
        let forced = super::ExitKernel {
            ipv6: true,
            forced: vec!["gnx0".into(), "eth0".into(), "inet0".into()],
            forced_v4: vec!["gnx0".into(), "inet0".into()],
        };
        let f = super::ruleset(None, &forced);
        assert!(f.contains(
            "meta nfproto ipv6 iifname { \"eth0\", \"inet0\" } oifname != \"gnx0\" drop"
        ));
        assert!(
            f.contains("meta nfproto ipv4 iifname { \"inet0\" } oifname != \"gnx0\" drop"),
            "{f}"
        );
        assert!(
            r.contains("ip saddr 100.127.0.0/16 oifname != \"gnx0\" masquerade"),
            "{r}"
        );
        assert!(r.contains("ip6 saddr fc00:676e:6578::/64"), "{r}");
        assert!(r.contains("oifname \"gnx0\" drop"), "{r}");
        assert!(
            r.contains("add @flows4 { ip saddr ct count over 1024 } reject"),
            "{r}"
        );
        assert!(
            r.contains("add @flows6 { ip6 saddr ct count over 1024 }"),
            "{r}"
        );
    }
}
