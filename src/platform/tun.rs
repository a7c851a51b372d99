//! Creating the TUN device (tun-rs, no packet-information prefix, no offload yet).

use super::PlatformError;

/// Creates the TUN device `name` with `mtu`, up, without addresses (see [`super::routes`]).
///
/// The device is built synchronously so it can be created before the privilege drop and handed to
/// the async runtime afterwards with [`into_async`].
pub fn create(name: &str, mtu: u16) -> Result<tun_rs::SyncDevice, PlatformError> {
    tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
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
