//! Addresses and routes over rtnetlink.
//!
//! - the node's address as a /128 without duplicate address detection (DAD would hold the address
//!   "tentative" for a second and send neighbour solicitations nobody answers);
//! - `fd00::/8 dev gn0` with the node's address as preferred source;
//! - `unreachable fd00::/8` with a high metric. It is never removed: when the daemon is down and
//!   gn0 is gone, overlay traffic fails at once instead of leaking to the LAN's default route.

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::RouteMessageBuilder;
use std::net::{IpAddr, Ipv6Addr};

use super::PlatformError;
use crate::crypto::{OVERLAY_PREFIX, OVERLAY_PREFIX_LEN};

/// Metric of the `fd00::/8 dev gn0` route.
pub const TUN_ROUTE_METRIC: u32 = 256;
/// Metric of the `unreachable fd00::/8` route: above anything a user or DHCP would install.
pub const UNREACHABLE_METRIC: u32 = 4_000_000_000;

/// Maps an rtnetlink error to one that says what was being done.
pub(super) fn nl(what: &str) -> impl FnOnce(rtnetlink::Error) -> PlatformError + '_ {
    move |e| PlatformError::Netlink(format!("{what}: {e}"))
}

/// Runs `f` with a fresh rtnetlink connection (closed afterwards).
pub(super) async fn with_handle<T, F, Fut>(f: F) -> Result<T, PlatformError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, PlatformError>>,
{
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| PlatformError::Netlink(format!("cannot open a netlink socket: {e}")))?;
    let task = tokio::spawn(conn);
    let r = f(handle).await;
    task.abort();
    r
}

/// The index of interface `ifname`, if it exists.
pub(super) async fn find_index(
    handle: &rtnetlink::Handle,
    ifname: &str,
) -> Result<Option<u32>, PlatformError> {
    Ok(handle
        .link()
        .get()
        .match_name(ifname.to_string())
        .execute()
        .try_next()
        .await
        .map_err(nl("looking up the device"))?
        .map(|l| l.header.index))
}

/// The index of interface `ifname`, which must exist.
pub(super) async fn index_of(
    handle: &rtnetlink::Handle,
    ifname: &str,
) -> Result<u32, PlatformError> {
    find_index(handle, ifname)
        .await?
        .ok_or_else(|| PlatformError::Netlink(format!("interface {ifname} vanished")))
}

/// Adds (or replaces) an address; IPv6 ones without duplicate address detection (DAD would hold
/// the address "tentative" for a second and send neighbour solicitations nobody answers).
pub(super) async fn add_address(
    handle: &rtnetlink::Handle,
    index: u32,
    ip: IpAddr,
    len: u8,
) -> Result<(), PlatformError> {
    let mut add = handle.address().add(index, ip, len).replace();
    if ip.is_ipv6() {
        add.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    add.execute().await.map_err(nl("adding an address"))
}

/// Configures `ifname`: address, link up, overlay route, unreachable route.
pub async fn configure(ifname: &str, address: Ipv6Addr) -> Result<(), PlatformError> {
    with_handle(|handle| async move {
        let index = index_of(&handle, ifname).await?;
        add_address(&handle, index, address.into(), 128).await?;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl("bringing the TUN device up"))?;
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(OVERLAY_PREFIX, OVERLAY_PREFIX_LEN)
            .output_interface(index)
            .pref_source(address)
            .priority(TUN_ROUTE_METRIC)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl("adding the fd00::/8 route"))?;
        ensure_unreachable_route(&handle).await
    })
    .await
}

async fn ensure_unreachable_route(handle: &rtnetlink::Handle) -> Result<(), PlatformError> {
    let route = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(OVERLAY_PREFIX, OVERLAY_PREFIX_LEN)
        .kind(RouteType::Unreachable)
        .priority(UNREACHABLE_METRIC)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(nl("adding the unreachable fd00::/8 route"))
}

/// The IPv6 unicast and local routes through interfaces other than `ifname`, as (prefix,
/// length): what the flow layer's inbound source check refuses (DESIGN.md section 3). Reject
/// routes (unreachable, blackhole, prohibit) carry no traffic and are left out.
pub async fn prefixes_elsewhere(ifname: &str) -> Result<Vec<(Ipv6Addr, u8)>, PlatformError> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    with_handle(|handle| async move {
        let own = find_index(&handle, ifname).await?;
        let mut routes = handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute();
        let mut out = Vec::new();
        while let Some(r) = routes.try_next().await.map_err(nl("listing routes"))? {
            if !matches!(r.header.kind, RouteType::Unicast | RouteType::Local) {
                continue;
            }
            let mut dst = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => dst = Some(*d),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Some(d) = dst {
                if oif.is_some() && oif != own {
                    out.push((d, r.header.destination_prefix_length));
                }
            }
        }
        Ok(out)
    })
    .await
}

/// Puts the hosted services' addresses on `ifname` (each a /128 without DAD) and takes those in
/// `remove` off. The node's own address stays the fd00::/8 route's preferred source, so the
/// kernel never picks a service's address for this node's own outgoing flows: a service
/// answers its visitors, it never opens flows.
pub async fn set_service_addresses(
    ifname: &str,
    add: &[Ipv6Addr],
    remove: &[Ipv6Addr],
) -> Result<(), PlatformError> {
    with_handle(|handle| async move {
        let index = index_of(&handle, ifname).await?;
        for a in add {
            add_address(&handle, index, (*a).into(), 128).await?;
        }
        for a in remove {
            let mut found = handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter((*a).into())
                .execute();
            while let Some(msg) = found
                .try_next()
                .await
                .map_err(nl("listing the TUN device's addresses"))?
            {
                handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl("removing a service's address"))?;
            }
        }
        Ok(())
    })
    .await
}
