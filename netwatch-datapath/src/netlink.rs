//! Just enough rtnetlink to look an interface up and see or clear its XDP attachment, and
//! just enough generic netlink to ask which XDP features its driver has.
//!
//! aya attaches and detaches its own links, but it cannot say what else is attached to an
//! interface, nor remove a program left there by another process through netlink. Both need an
//! `RTM_GETLINK` / `RTM_SETLINK` exchange (see `rtnetlink(7)` and `include/uapi/linux/if_link.h`).
//! The XDP features are the `netdev` family's `dev-get` (Linux 6.3;
//! `Documentation/netlink/specs/netdev.yaml`).

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const RTA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_IFNAME: u16 = 3;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `NETDEV_XDP_ACT_BASIC`: the driver runs XDP programs itself (native mode).
pub const XDP_FEATURE_BASIC: u64 = 1;

/// How an XDP program is attached to an interface, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttached {
    /// Native, in the driver.
    Driver,
    /// Generic, in the kernel's network stack.
    Skb,
    /// Offloaded to the NIC.
    Hardware,
    /// More than one mode at once.
    Multi,
}

/// What netlink says about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub ifindex: u32,
    /// `IFF_UP` is set.
    pub up: bool,
    /// The attached XDP program, with the mode it is attached in.
    pub xdp: Option<(XdpAttached, u32)>,
}

/// Looks an interface up by name.
///
/// Fails with `io::ErrorKind::NotFound` when there is no such interface in this network
/// namespace.
pub fn link_info(name: &str) -> io::Result<LinkInfo> {
    let name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    let mut request = Request::new(RTM_GETLINK, NLM_F_REQUEST, 0);
    request.attr(IFLA_IFNAME, name.as_bytes_with_nul());
    let socket = Socket::open(libc::NETLINK_ROUTE)?;
    let reply = socket.exchange(&request.finish(), RTM_NEWLINK)?;
    parse_newlink(&reply)
}

/// The XDP features the driver of `ifindex` declares (`NETDEV_XDP_ACT_*` bits, see
/// [`XDP_FEATURE_BASIC`]); `None` when the kernel is too old to say (before Linux 6.3).
pub fn xdp_features(ifindex: u32) -> io::Result<Option<u64>> {
    let socket = Socket::open(libc::NETLINK_GENERIC)?;
    let mut request = Request::generic(GENL_ID_CTRL, CTRL_CMD_GETFAMILY);
    request.attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0");
    let family = match socket.exchange(&request.finish(), GENL_ID_CTRL) {
        Ok(reply) => genl_attribute(&reply, CTRL_ATTR_FAMILY_ID)
            .and_then(|id| Some(u16::from_ne_bytes(id.get(..2)?.try_into().ok()?)))
            .ok_or_else(|| invalid("no id in the netdev family's answer"))?,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut request = Request::generic(family, NETDEV_CMD_DEV_GET);
    request.attr(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes());
    let reply = socket.exchange(&request.finish(), family)?;
    Ok(genl_attribute(&reply, NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|bits| Some(u64::from_ne_bytes(bits.get(..8)?.try_into().ok()?))))
}

/// The payload of the first attribute of type `wanted` in a generic netlink reply.
fn genl_attribute(reply: &[u8], wanted: u16) -> Option<&[u8]> {
    attributes(reply.get(GENLMSG_HDRLEN..).unwrap_or_default())
        .find(|(kind, _)| *kind == wanted)
        .map(|(_, payload)| payload)
}

/// A generic netlink message's own header: command, version, reserved.
const GENLMSG_HDRLEN: usize = 4;

/// Removes whatever XDP program is attached to `ifindex` in `mode` through netlink.
///
/// Fails with `EBUSY` when the program is held by a BPF link: only its owner can remove it.
pub fn detach_xdp(ifindex: u32, mode: XdpAttached) -> io::Result<()> {
    let flags = match mode {
        XdpAttached::Driver => XDP_FLAGS_DRV_MODE,
        XdpAttached::Skb => XDP_FLAGS_SKB_MODE,
        XdpAttached::Hardware => XDP_FLAGS_HW_MODE,
        XdpAttached::Multi => 0,
    };
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    let mut request = Request::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    let nested = request.begin_nested(IFLA_XDP);
    request.attr(IFLA_XDP_FD, &(-1i32).to_ne_bytes());
    request.attr(IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    request.end_nested(nested);
    let socket = Socket::open(libc::NETLINK_ROUTE)?;
    socket.exchange(&request.finish(), RTM_NEWLINK).map(drop)
}

/// A request under construction: header, `ifinfomsg`, attributes.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16, ifindex: i32) -> Self {
        let mut request = Self::header(kind, flags);
        // struct ifinfomsg: family, pad, type, index, flags, change.
        request
            .buf
            .extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        request.buf.extend_from_slice(&ifindex.to_ne_bytes());
        request.buf.extend_from_slice(&0u32.to_ne_bytes());
        request.buf.extend_from_slice(&0u32.to_ne_bytes());
        request
    }

    /// A generic netlink request of `family`: its header, command `cmd`, version 1.
    fn generic(family: u16, cmd: u8) -> Self {
        let mut request = Self::header(family, NLM_F_REQUEST);
        request.buf.extend_from_slice(&[cmd, 1, 0, 0]);
        request
    }

    fn header(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        Self { buf }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = RTA_HDRLEN + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn begin_nested(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nested(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

struct Socket(OwnedFd);

impl Socket {
    fn open(protocol: libc::c_int) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one request and returns the payload of the first answer: a message of type
    /// `answer`, or an empty vector for a positive acknowledgement. A negative one becomes
    /// the error.
    fn exchange(&self, request: &[u8], answer: u16) -> io::Result<Vec<u8>> {
        // SAFETY: request is a valid buffer of the given length.
        let sent = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is a valid, writable buffer of the given length.
            let received =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
            let mut rest = &buf[..received];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(invalid("netlink message length out of bounds"));
                }
                let payload = &rest[NLMSG_HDRLEN..len];
                match kind {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or_else(|| invalid("short netlink error message"))?;
                        return match code {
                            0 => Ok(Vec::new()),
                            code if code == -libc::ENODEV => Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                "no such network interface",
                            )),
                            code => Err(io::Error::from_raw_os_error(-code)),
                        };
                    }
                    kind if kind == answer => return Ok(payload.to_vec()),
                    _ => {}
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Walks the attributes in `buf`, yielding (type without flags, payload).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < RTA_HDRLEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED;
        if len < RTA_HDRLEN || len > buf.len() {
            return None;
        }
        let payload = &buf[RTA_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((kind, payload))
    })
}

fn parse_newlink(payload: &[u8]) -> io::Result<LinkInfo> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(invalid("short ifinfomsg"));
    }
    let ifindex = i32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let flags = u32::from_ne_bytes([payload[8], payload[9], payload[10], payload[11]]);
    let mut xdp_mode = None;
    let mut xdp_prog_id = None;
    for (kind, value) in attributes(&payload[IFINFOMSG_LEN..]) {
        if kind != IFLA_XDP {
            continue;
        }
        for (kind, value) in attributes(value) {
            match (kind, value) {
                (IFLA_XDP_ATTACHED, [mode, ..]) => {
                    xdp_mode = match *mode {
                        XDP_ATTACHED_DRV => Some(XdpAttached::Driver),
                        XDP_ATTACHED_SKB => Some(XdpAttached::Skb),
                        XDP_ATTACHED_HW => Some(XdpAttached::Hardware),
                        XDP_ATTACHED_MULTI => Some(XdpAttached::Multi),
                        _ => None,
                    }
                }
                (IFLA_XDP_PROG_ID, [a, b, c, d, ..]) => {
                    xdp_prog_id = Some(u32::from_ne_bytes([*a, *b, *c, *d]));
                }
                _ => {}
            }
        }
    }
    Ok(LinkInfo {
        ifindex: u32::try_from(ifindex).map_err(|_| invalid("negative ifindex"))?,
        up: flags & libc::IFF_UP as u32 != 0,
        xdp: xdp_mode.zip(xdp_prog_id),
    })
}

const _: () = assert!(size_of::<libc::nlmsghdr>() == NLMSG_HDRLEN);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_up() {
        let info = link_info("lo").unwrap_or_else(|err| panic!("lo: {err}"));
        assert_eq!(info.ifindex, 1);
        assert!(info.up);
    }

    /// Loopback's driver runs no XDP itself: the kernel says so (or, before 6.3, nothing).
    #[test]
    fn loopback_has_no_native_xdp() {
        let features = xdp_features(1).unwrap_or_else(|err| panic!("lo: {err}"));
        assert!(
            features.is_none_or(|bits| bits & XDP_FEATURE_BASIC == 0),
            "{features:?}"
        );
    }

    #[test]
    fn unknown_interface_is_not_found() {
        let err = link_info("nw-no-such-if0").expect_err("found an interface that does not exist");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn nested_attributes_are_read() {
        let mut request = Request::new(RTM_NEWLINK, 0, 7);
        let nested = request.begin_nested(IFLA_XDP);
        request.attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_SKB]);
        request.attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes());
        request.end_nested(nested);
        let message = request.finish();
        let info = parse_newlink(&message[NLMSG_HDRLEN..]).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(info.ifindex, 7);
        assert_eq!(info.xdp, Some((XdpAttached::Skb, 42)));
        assert!(!info.up);
    }
}
