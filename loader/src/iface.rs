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

/// Reads index, MAC and MTU of `name` in the calling thread's network namespace (ioctl on
/// a fresh socket, so it is right after `setns`, unlike sysfs).
pub fn interface_info(name: &str) -> Result<InterfaceInfo, LoaderError> {
    let index = ifindex(name)?;
    let io = |what: &str| LoaderError::Io {
        what: format!("{what} of interface \"{name}\""),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name fits IFNAMSIZ (ifindex
    // succeeded, so the name is a valid interface name).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io("open socket to query"));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let hw = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req);
        let sa = req.ifr_ifru.ifru_hwaddr;
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *d = *s as u8;
        }
        let mtu = libc::ioctl(fd, libc::SIOCGIFMTU, &mut req);
        let mtu_val = req.ifr_ifru.ifru_mtu;
        libc::close(fd);
        if hw < 0 || mtu < 0 {
            return Err(io("read MAC and MTU"));
        }
        Ok(InterfaceInfo {
            name: name.into(),
            index,
            mac,
            mtu: mtu_val.clamp(0, u16::MAX as i32) as u16,
        })
    }
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
        for bad in [
            "",
            "02:0a:ff:00:10",
            "02:0a:ff:00:10:9c:00",
            "zz:0a:ff:00:10:9c",
            "1ff:0:0:0:0:0",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
