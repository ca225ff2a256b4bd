//! `netwatch check`: whether this machine can run netwatch, without loading or attaching
//! anything. One line per check, `ok`, `warn` (works, with a cost or a caveat) or `FAIL` (will
//! not work), each failing one with what to do.

use std::{
    fs,
    io::{self, Write},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya::util::KernelVersion;

use crate::{
    cli::CheckArgs,
    config::{Config, ConfigError},
    datapath::{
        MIN_KERNEL, MIN_KERNEL_SHARED,
        netlink::{self, XDP_FEATURE_BASIC},
    },
    privilege,
    report::escape,
};

/// Why `check` could not check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Writing.
    #[error("cannot write: {0}")]
    Write(#[from] io::Error),
    /// Something netwatch needs is missing (said above, line by line).
    #[error("{0} of the checks above failed: netwatch cannot run here as it is")]
    Failed(usize),
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Warn,
    Fail,
}

struct Report<'a, W: Write> {
    out: &'a mut W,
    failed: usize,
}

impl<W: Write> Report<'_, W> {
    fn line(&mut self, outcome: Outcome, what: &str, text: &str) -> io::Result<()> {
        let mark = match outcome {
            Outcome::Ok => "ok  ",
            Outcome::Warn => "warn",
            Outcome::Fail => {
                self.failed += 1;
                "FAIL"
            }
        };
        writeln!(self.out, "{mark}  {what}: {text}")
    }
}

/// Checks and prints; fails when anything netwatch needs is missing.
pub fn run(args: CheckArgs, out: &mut impl Write) -> Result<(), CheckError> {
    let CheckArgs { config, iface } = args;
    let loaded = Config::load_or_default(config.as_deref())?;
    let ifaces = if iface.is_empty() {
        loaded.monitor.interfaces()
    } else {
        iface
    };
    let mut report = Report { out, failed: 0 };
    kernel(&mut report)?;
    btf(&mut report)?;
    privileges(&mut report)?;
    bpffs(&mut report)?;
    if ifaces.is_empty() {
        report.line(
            Outcome::Warn,
            "interfaces",
            "none given: name one with -i IFACE (or monitor.iface in the configuration)",
        )?;
    }
    for name in &ifaces {
        interface(&mut report, name)?;
    }
    for command in &loaded.mitigate.notify {
        match crate::notify::check_command(command) {
            Some(problem) => report.line(Outcome::Fail, "mitigate.notify", &problem)?,
            None => report.line(
                Outcome::Ok,
                "mitigate.notify",
                &format!("{} can be run", escape(&command.to_string_lossy())),
            )?,
        }
    }
    match report.failed {
        0 => Ok(()),
        failed => Err(CheckError::Failed(failed)),
    }
}

fn kernel(report: &mut Report<'_, impl Write>) -> io::Result<()> {
    match KernelVersion::current() {
        Ok(found) if found >= MIN_KERNEL_SHARED => report.line(
            Outcome::Ok,
            "kernel",
            &format!("Linux {found} (netwatch needs {MIN_KERNEL} or newer)"),
        ),
        Ok(found) if found >= MIN_KERNEL => report.line(
            Outcome::Warn,
            "kernel",
            &format!(
                "Linux {found}: enough, but the shared source map needs {MIN_KERNEL_SHARED} (keep --source-map per-cpu)"
            ),
        ),
        Ok(found) => report.line(
            Outcome::Fail,
            "kernel",
            &format!(
                "Linux {found} is too old: netwatch attaches through BPF links, which need {MIN_KERNEL} or newer; upgrade the kernel"
            ),
        ),
        Err(err) => report.line(
            Outcome::Fail,
            "kernel",
            &format!(
                "cannot read the version ({err}): netwatch reads it from /proc/sys/kernel/osrelease (is /proc mounted?)"
            ),
        ),
    }
}

fn btf(report: &mut Report<'_, impl Write>) -> io::Result<()> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        report.line(
            Outcome::Ok,
            "BTF",
            "/sys/kernel/btf/vmlinux is there (the kernel describes its own types)",
        )
    } else {
        report.line(
            Outcome::Warn,
            "BTF",
            "no /sys/kernel/btf/vmlinux: netwatch's program carries its own type information and loads without it, but bpftool and the verifier's messages are poorer; a kernel built with CONFIG_DEBUG_INFO_BTF=y has it",
        )
    }
}

fn privileges(report: &mut Report<'_, impl Write>) -> io::Result<()> {
    let missing = privilege::missing_capabilities();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if missing.is_empty() {
        let how = if root {
            "root"
        } else {
            "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (file capabilities, or given by systemd)"
        };
        return report.line(Outcome::Ok, "privileges", how);
    }
    report.line(
        Outcome::Fail,
        "privileges",
        &format!(
            "missing {}: run it with sudo, or give the installed binary the capabilities (sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep \"$(command -v netwatch)\"; see the README, Run without root)",
            missing.join(", ")
        ),
    )
}

fn bpffs(report: &mut Report<'_, impl Write>) -> io::Result<()> {
    let mounted = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("bpf"));
    if mounted {
        report.line(Outcome::Ok, "bpffs", "mounted")
    } else {
        report.line(
            Outcome::Warn,
            "bpffs",
            "not mounted: netwatch pins nothing and does not need it; bpftool does (sudo mount -t bpf bpf /sys/fs/bpf)",
        )
    }
}

fn interface(report: &mut Report<'_, impl Write>, name: &str) -> io::Result<()> {
    let shown = escape(name).into_owned();
    let what = format!("interface {shown}");
    let info = match netlink::link_info(name) {
        Ok(info) => info,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return report.line(
                Outcome::Fail,
                &what,
                "no such interface in this network namespace (see `ip link`)",
            );
        }
        Err(err) => {
            return report.line(
                Outcome::Fail,
                &what,
                &format!(
                    "cannot look it up through netlink ({err}): run netwatch where it may open netlink sockets (a sandbox that forbids AF_NETLINK stops it too)"
                ),
            );
        }
    };
    if info.up {
        report.line(Outcome::Ok, &what, &format!("up, ifindex {}", info.ifindex))?;
    } else {
        report.line(
            Outcome::Fail,
            &what,
            &format!("down: bring it up first (sudo ip link set {shown} up)"),
        )?;
    }
    let driver = driver_of(name).unwrap_or_else(|| String::from("unknown"));
    let native = match netlink::xdp_features(info.ifindex) {
        Ok(Some(bits)) if bits & XDP_FEATURE_BASIC != 0 => (
            Outcome::Ok,
            format!("driver {driver} runs XDP natively (driver mode)"),
        ),
        Ok(Some(_)) => (
            Outcome::Warn,
            format!(
                "driver {driver} has no native XDP: netwatch attaches in generic (skb) mode, which works but costs more per packet and sees frames later"
            ),
        ),
        Ok(None) => (
            Outcome::Warn,
            format!(
                "driver {driver}; whether it runs XDP natively this kernel cannot say (before Linux 6.3): netwatch tries driver mode first and falls back to skb mode, and says which"
            ),
        ),
        Err(err) => (
            Outcome::Warn,
            format!("driver {driver}; its XDP features could not be read ({err})"),
        ),
    };
    report.line(native.0, &format!("{what} XDP"), &native.1)?;
    if let Some((mode, prog_id)) = info.xdp {
        report.line(
            Outcome::Warn,
            &format!("{what} XDP"),
            &format!(
                "program id {prog_id} is attached ({mode:?} mode): netwatch leaves it alone unless --force (see bpftool prog show id {prog_id})"
            ),
        )?;
    }
    Ok(())
}

/// The interface's driver, from `ETHTOOL_GDRVINFO` (see `include/uapi/linux/ethtool.h`).
fn driver_of(name: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &raw mut info,
        _pad: [0; 16],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: the request names the interface and points at `info`, which outlives the call;
    // the kernel writes at most a `DrvInfo` there.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &raw mut request) };
    if rc < 0 {
        return None;
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    let driver = String::from_utf8_lossy(&info.driver[..end]).into_owned();
    (!driver.is_empty()).then(|| escape(&driver).into_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A notify command that cannot be run fails `netwatch check -c` with one line naming it;
    /// one that can is an `ok` line (issue 30).
    #[test]
    fn a_notify_command_that_cannot_run_fails_the_check() {
        let dir = std::env::temp_dir().join(format!("netwatch-check-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.sh");
        fs::write(&good, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&good, fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.join("plain.sh");
        fs::write(&plain, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        let config = dir.join("netwatch.toml");
        fs::write(
            &config,
            format!(
                "[mitigate]\nmode = \"dry-run\"\nnotify = [\"{}\", \"{}\"]\n",
                good.display(),
                plain.display()
            ),
        )
        .unwrap();
        let mut out = Vec::new();
        let result = run(
            CheckArgs {
                config: Some(config),
                iface: Vec::new(),
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(matches!(result, Err(CheckError::Failed(_))), "{text}");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("mitigate.notify"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("ok") && lines[0].contains("good.sh"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("FAIL") && lines[1].contains("not executable"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
