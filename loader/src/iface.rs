//! Interface facts the loader needs (index, MAC, MTU), read from the kernel.
use crate::LoaderError;

/// Index of interface `name`.
pub fn ifindex(name: &str) -> Result<u32, LoaderError> {
    let c = std::ffi::CString::new(name).map_err(|_| LoaderError::UnknownInterface(name.into()))?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(LoaderError::UnknownInterface(name.into())),
        i => Ok(i),
    }
}

/// Name of the interface with index `index`.
pub fn ifname(index: u32) -> Result<String, LoaderError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buffer of IF_NAMESIZE as required.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(LoaderError::UnknownInterface(format!("#{index}")));
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name.
    Ok(unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned())
}

/// What the datapath needs to know about an egress interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// Reads index, MAC and MTU of `name` (from sysfs of the current network namespace).
pub fn interface_info(name: &str) -> Result<InterfaceInfo, LoaderError> {
    let index = ifindex(name)?;
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/{f}")).map_err(|e| {
            LoaderError::Io {
                what: format!("read {f} of interface \"{name}\""),
                source: e,
            }
        })
    };
    let mac = parse_mac(read("address")?.trim())
        .ok_or_else(|| LoaderError::UnknownInterface(format!("{name} (no Ethernet address)")))?;
    let mtu = read("mtu")?.trim().parse::<u32>().unwrap_or(1500);
    Ok(InterfaceInfo {
        name: name.into(),
        index,
        mac,
        mtu: mtu.min(u16::MAX as u32) as u16,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_rejects() {
        let m = parse_mac("02:0a:ff:00:10:9c").unwrap();
        assert_eq!(format_mac(&m), "02:0a:ff:00:10:9c");
        for bad in ["", "02:0a:ff:00:10", "02:0a:ff:00:10:9c:00", "zz:0a:ff:00:10:9c", "1ff:0:0:0:0:0"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
