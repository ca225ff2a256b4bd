//! `cargo xtask package`: the Debian package, assembled by hand and built by `dpkg-deb`
//! (Debian's own tool: no packaging crate to build). What it holds:
//!
//! - `/usr/bin/netwatch`;
//! - `/etc/netwatch/netwatch.toml`, the example configuration, as a conffile (kept on
//!   removal and on upgrades the admin edited it);
//! - `/lib/systemd/system/netwatch.service` (a dynamic user with exactly the three
//!   capabilities), installed but neither enabled nor started: the configuration names an
//!   interface to edit first;
//! - `/var/lib/netwatch`, the store's folder, created 0700 by the maintainer script, removed
//!   only on purge;
//! - man pages and bash, zsh and fish completions, generated from the command line itself
//!   (`netwatch-docs`);
//! - the README, the Grafana dashboard and the copyright.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{output_of, run, say};

const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    install -d -m 0700 /var/lib/netwatch
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # An upgrade: a running daemon takes the new binary (bans are kept in the store).
        if [ -n "$2" ]; then
            systemctl try-restart netwatch.service || true
        fi
    fi
    if [ -z "$2" ]; then
        echo "netwatch: edit /etc/netwatch/netwatch.toml (monitor.iface), then: systemctl enable --now netwatch"
    fi
fi
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop netwatch.service || true
fi
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = purge ]; then
    # The store (known sources, history, bans, the webhook queue) and the logs: only on
    # purge; and the unit's enablement, as debhelper does.
    rm -rf /var/lib/netwatch /var/lib/private/netwatch /var/log/netwatch /var/log/private/netwatch
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper purge netwatch.service >/dev/null || true
    fi
    rm -f /etc/systemd/system/multi-user.target.wants/netwatch.service
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
"#;

/// Builds the package from `target/PROFILE`; returns the .deb's path in `out`.
pub fn build(root: &Path, profile: &str, out: &Path) -> Result<PathBuf> {
    let built = root.join("target").join(profile);
    let binary = built.join("netwatch");
    let docs_tool = built.join("netwatch-docs");
    for needed in [&binary, &docs_tool] {
        if !needed.is_file() {
            bail!(
                "{} is not built: run `cargo build --package netwatch{}` first (or drop --no-build)",
                needed.display(),
                if profile == "release" {
                    " --release"
                } else {
                    ""
                }
            );
        }
    }
    // xtask's own version is the workspace's.
    let version = env!("CARGO_PKG_VERSION");
    let arch = output_of("dpkg", &["--print-architecture"])
        .map(|arch| arch.trim().to_owned())
        .context("dpkg --print-architecture: is this a Debian system?")?;
    // Staged beside the package, so that a build as root (the tests) leaves nothing of root's
    // in the user's target folder.
    let stage = out.join(format!(".stage-netwatch_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    fs::create_dir_all(out)?;
    let put = |path: &str, contents: &[u8], mode: u32| -> Result<()> {
        let file = stage.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))?;
        fs::set_permissions(&file, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let read = |path: &Path| fs::read(path).with_context(|| format!("reading {}", path.display()));

    put("usr/bin/netwatch", &read(&binary)?, 0o755)?;
    // As dh_strip would: the debug information stays with the build, not on servers.
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg(stage.join("usr/bin/netwatch")))?;
    put(
        "etc/netwatch/netwatch.toml",
        &read(&root.join("netwatch.example.toml"))?,
        0o644,
    )?;
    let unit = String::from_utf8(read(&root.join("packaging/netwatch.service"))?)?
        .replace("/usr/local/bin/netwatch", "/usr/bin/netwatch")
        .replace(
            "# netwatch as a systemd service. Install the binary as /usr/local/bin/netwatch and the\n# configuration as /etc/netwatch/netwatch.toml (start from netwatch.example.toml), then:",
            "# netwatch as a systemd service, from the Debian package. Edit\n# /etc/netwatch/netwatch.toml (monitor.iface), then:",
        );
    put(
        "lib/systemd/system/netwatch.service",
        unit.as_bytes(),
        0o644,
    )?;

    // Man pages and completions from the command line itself.
    let generated = out.join(".stage-generated");
    if generated.exists() {
        fs::remove_dir_all(&generated)?;
    }
    run(Command::new(&docs_tool).arg(&generated))?;
    for entry in fs::read_dir(generated.join("man1"))? {
        let page = entry?.path();
        let name = page
            .file_name()
            .and_then(|name| name.to_str())
            .context("a man page without a name")?
            .to_owned();
        let gzipped = Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(&page)
            .output()
            .context("gzip")?;
        if !gzipped.status.success() {
            bail!("gzip {} failed", page.display());
        }
        put(
            &format!("usr/share/man/man1/{name}.gz"),
            &gzipped.stdout,
            0o644,
        )?;
    }
    let completions = generated.join("completions");
    for (from, to) in [
        (
            "netwatch.bash",
            "usr/share/bash-completion/completions/netwatch",
        ),
        ("_netwatch", "usr/share/zsh/vendor-completions/_netwatch"),
        (
            "netwatch.fish",
            "usr/share/fish/vendor_completions.d/netwatch.fish",
        ),
    ] {
        put(to, &read(&completions.join(from))?, 0o644)?;
    }
    put(
        "usr/share/doc/netwatch/README.md",
        &read(&root.join("README.md"))?,
        0o644,
    )?;
    put(
        "usr/share/doc/netwatch/grafana-dashboard.json",
        &read(&root.join("packaging/grafana-dashboard.json"))?,
        0o644,
    )?;
    // Signature rules announced upstream through ExaBGP (see the README's mitigation).
    for script in ["netwatch-exabgp", "netwatch-exabgp-process"] {
        put(
            &format!("usr/share/netwatch/exabgp/{script}"),
            &read(&root.join("packaging/exabgp").join(script))?,
            0o755,
        )?;
    }
    // The fleet's ClickHouse schema and queries (see the README's Fleets).
    for file in ["schema.sql", "queries.sql"] {
        put(
            &format!("usr/share/netwatch/clickhouse/{file}"),
            &read(&root.join("packaging/clickhouse").join(file))?,
            0o644,
        )?;
    }
    put(
        "usr/share/doc/netwatch/copyright",
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: netwatch\n\nFiles: *\nCopyright: the netwatch developers\nLicense: MIT or Apache-2.0\n",
        0o644,
    )?;

    let installed_kib = dir_size(&stage)? / 1024;
    let control = format!(
        "Package: netwatch\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: netwatch developers <netwatch@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {}\n\
         Suggests: python3, exabgp\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://github.com/netwatch/netwatch\n\
         Description: loss-free network monitor: an XDP program counts, a daemon reports\n \
         netwatch counts every packet per source address in the kernel (XDP), samples\n \
         suspicious payloads, detects floods, scans and tunnels, and reports to the\n \
         console, JSON lines, SQLite, a SIEM webhook and Prometheus. Opt-in, it drops\n \
         attackers in XDP.\n",
        depends(&binary)
    );
    put("DEBIAN/control", control.as_bytes(), 0o644)?;
    put("DEBIAN/conffiles", b"/etc/netwatch/netwatch.toml\n", 0o644)?;
    put("DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put("DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put("DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    // Every folder 0755 whatever the umask.
    set_dir_modes(&stage)?;

    let deb = out.join(format!("netwatch_{version}_{arch}.deb"));
    say(&format!("dpkg-deb --build {}", stage.display()));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    fs::remove_dir_all(&stage)?;
    fs::remove_dir_all(&generated)?;
    Ok(deb)
}

/// The packages the binary links against, with the newest glibc symbol version it uses.
fn depends(binary: &Path) -> String {
    let newest = output_of("objdump", &["-T", &binary.to_string_lossy()])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|word| {
            word.strip_prefix("(GLIBC_")
                .or_else(|| word.strip_prefix("GLIBC_"))
        })
        .filter_map(|version| {
            let version = version.trim_end_matches(')');
            let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max();
    // librdkafka (the Kafka export) is linked in; the libraries it links are the system's.
    let kafka = "libssl3, libcurl4, zlib1g";
    match newest {
        Some((major, minor)) => format!("libc6 (>= {major}.{minor}), libgcc-s1, {kafka}"),
        None => format!("libc6, libgcc-s1, {kafka}"),
    }
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn set_dir_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            set_dir_modes(&path)?;
        }
    }
    Ok(())
}
