//! Attaching: [`Datapath::attach`] puts the loaded program on an interface through a BPF
//! link, after taking off a netwatch program left there through netlink (another program
//! only if forced), and hands back the [`Attachment`], whose drop detaches it. Also pinning
//! the program on a bpffs for inspection.

use std::{fmt, io};

use aya::programs::{
    ProgramError, Xdp, XdpMode,
    links::{FdLink, Link as _},
    loaded_programs,
};
use netwatch_common::{PROGRAM_NAME, SHARED_PROGRAM_NAME};

use super::{
    error::DatapathError,
    handle::Datapath,
    netlink::{self, LinkInfo, XdpAttached},
};

/// How to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Driver mode, and generic (skb) mode if the driver cannot.
    #[default]
    Auto,
    /// Driver (native) mode only.
    Driver,
    /// Generic (skb) mode only.
    Skb,
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP in the network stack: works everywhere, costs more.
    Skb,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
        })
    }
}

/// A live attachment. Dropping it closes the BPF link, which detaches the program.
#[derive(Debug)]
pub struct Attachment {
    link: FdLink,
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Mode the kernel accepted.
    pub mode: AttachedMode,
    /// A stale netwatch program (or, with force, a foreign one) removed before attaching.
    pub replaced: Option<ReplacedProgram>,
}

impl Attachment {
    /// Detaches now, reporting an error instead of ignoring it as a drop would.
    pub fn detach(self) -> Result<(), DatapathError> {
        let Self { link, .. } = self;
        link.detach().map_err(DatapathError::from)
    }
}

/// A program removed from the interface before netwatch attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplacedProgram {
    /// Kernel program id.
    pub prog_id: u32,
    /// Its name.
    pub name: String,
}

impl Datapath {
    /// Attaches to `iface` through a BPF link.
    ///
    /// A netwatch program left attached through netlink is removed first; another program is
    /// left alone and reported, unless `force`.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        force: bool,
    ) -> Result<Attachment, DatapathError> {
        let info = interface(iface)?;
        let replaced = match info.xdp {
            None => None,
            Some((attached, prog_id)) => {
                Some(clear_attachment(iface, &info, attached, prog_id, force)?)
            }
        };
        let program: &mut Xdp = self
            .ebpf
            .program_mut(self.program)
            .ok_or(DatapathError::Missing("netwatch program"))?
            .try_into()?;
        let (link_id, mode) = match mode {
            AttachMode::Driver => (
                attach_in(program, iface, info.ifindex, XdpMode::Driver, "driver")?,
                AttachedMode::Driver,
            ),
            AttachMode::Skb => (
                attach_in(program, iface, info.ifindex, XdpMode::Skb, "skb")?,
                AttachedMode::Skb,
            ),
            AttachMode::Auto => match program.attach_to_if_index(info.ifindex, XdpMode::Driver) {
                Ok(id) => (id, AttachedMode::Driver),
                Err(_) => (
                    attach_in(program, iface, info.ifindex, XdpMode::Skb, "driver or skb")?,
                    AttachedMode::Skb,
                ),
            },
        };
        let link = program.take_link(link_id)?;
        let link =
            FdLink::try_from(link).map_err(|_| DatapathError::NoBpfLink(iface.to_owned()))?;
        Ok(Attachment {
            link,
            iface: iface.to_owned(),
            ifindex: info.ifindex,
            mode,
            replaced,
        })
    }

    /// Pins the loaded program at `path` on a bpffs, so that `bpftool` or `ip link` can name
    /// it. netwatch itself never needs this; it is for inspection and for tests.
    pub fn pin_program(&mut self, path: &std::path::Path) -> Result<(), DatapathError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(self.program)
            .ok_or(DatapathError::Missing("netwatch program"))?
            .try_into()?;
        program.pin(path).map_err(DatapathError::Pin)
    }
}

fn interface(iface: &str) -> Result<LinkInfo, DatapathError> {
    let info = netlink::link_info(iface).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => DatapathError::UnknownInterface(iface.to_owned()),
        _ => DatapathError::Netlink {
            iface: iface.to_owned(),
            source,
        },
    })?;
    if !info.up {
        return Err(DatapathError::InterfaceDown(iface.to_owned()));
    }
    Ok(info)
}

/// Removes a program found on the interface, if it is netwatch's own or `force` is set.
fn clear_attachment(
    iface: &str,
    info: &LinkInfo,
    attached: XdpAttached,
    prog_id: u32,
    force: bool,
) -> Result<ReplacedProgram, DatapathError> {
    let name = program_name(prog_id).unwrap_or_else(|| String::from("?"));
    if name != PROGRAM_NAME && name != SHARED_PROGRAM_NAME && !force {
        return Err(DatapathError::ForeignProgram {
            iface: iface.to_owned(),
            prog_id,
            name,
            mode: attached,
        });
    }
    match netlink::detach_xdp(info.ifindex, attached) {
        Ok(()) => Ok(ReplacedProgram { prog_id, name }),
        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => Err(DatapathError::HeldByLink {
            iface: iface.to_owned(),
            prog_id,
            name,
        }),
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Err(DatapathError::NotPermitted {
            action: "removing the XDP program already attached",
            detail: err.to_string(),
        }),
        Err(source) => Err(DatapathError::Netlink {
            iface: iface.to_owned(),
            source,
        }),
    }
}

fn program_name(prog_id: u32) -> Option<String> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|program| program.id() == prog_id)
        .and_then(|program| program.name_as_str().map(str::to_owned))
}

fn attach_in(
    program: &mut Xdp,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
    label: &'static str,
) -> Result<aya::programs::xdp::XdpLinkId, DatapathError> {
    program
        .attach_to_if_index(ifindex, mode)
        .map_err(|source| match &source {
            ProgramError::SyscallError(call)
                if matches!(call.io_error.raw_os_error(), Some(libc::EPERM)) =>
            {
                DatapathError::NotPermitted {
                    action: "attaching the XDP program",
                    detail: source.to_string(),
                }
            }
            _ => DatapathError::Attach {
                iface: iface.to_owned(),
                mode: label,
                source,
            },
        })
}
