//! Creating the TUN device (tun-rs, no packet-information prefix; gn0 optionally with TSO/USO
//! offload: `IFF_VNET_HDR`, every read and write behind a virtio-net header, `flow::gso`).

use super::PlatformError;

/// Creates the TUN device `name` with `mtu`, up, without addresses (see [`super::routes`]).
///
/// The device is built synchronously so it can be created before the privilege drop and handed to
/// the async runtime afterwards with [`into_async`].
pub fn create(name: &str, mtu: u16) -> Result<tun_rs::SyncDevice, PlatformError> {
    build(name, mtu, false)
}

/// Like [`create`], with TSO/USO offload when `offload` and the kernel agree (the device's
/// `tcp_gso()` then says so, and its reads and writes carry a virtio-net header). A kernel that
/// refuses `IFF_VNET_HDR` or the TCP offloads gets a warning and the plain device.
pub fn create_offload(
    name: &str,
    mtu: u16,
    offload: bool,
) -> Result<tun_rs::SyncDevice, PlatformError> {
    if offload {
        match build(name, mtu, true) {
            Ok(dev) if dev.tcp_gso() => return Ok(dev),
            Ok(dev) => drop(dev),
            Err(e) => tracing::warn!("with offload: {e}; opening {name} without (tun.offload)"),
        }
    }
    build(name, mtu, false)
}

fn build(name: &str, mtu: u16, offload: bool) -> Result<tun_rs::SyncDevice, PlatformError> {
    tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .offload(offload)
        .enable(true)
        .build_sync()
        .map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    " (creating a TUN device needs root or CAP_NET_ADMIN)"
                }
                Some(libc::ENOENT) | Some(libc::ENODEV) => {
                    " (is /dev/net/tun present? `modprobe tun`)"
                }
                Some(libc::EBUSY) => " (another process owns an interface of that name)",
                _ => "",
            };
            PlatformError::Tun(format!("cannot create {name}: {e}{hint}"))
        })
}

/// Registers a device created by [`create`] with the current tokio runtime.
pub fn into_async(dev: tun_rs::SyncDevice) -> Result<tun_rs::AsyncDevice, PlatformError> {
    tun_rs::AsyncDevice::new(dev)
        .map_err(|e| PlatformError::Tun(format!("async registration: {e}")))
}
