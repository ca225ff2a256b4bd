//! Builds the XDP programs (crate `netwatch-ebpf`) with the nightly toolchain and bpf-linker,
//! and leaves the objects in OUT_DIR, where this crate embeds them. The build id of the
//! monitor's object goes, through the `links` key, to the build scripts of the crates above
//! (`DEP_NETWATCH_EBPF_BUILD_ID`).
//!
//! Quiet unless it fails: cargo replays a build script's `cargo:warning` lines on every build,
//! even when nothing was rebuilt, so the eBPF build's own output is kept and shown only when
//! that build fails.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

/// The binaries of `netwatch-ebpf` that this crate embeds.
const OBJECTS: [&str; 2] = ["netwatch-xdp", "noop-xdp"];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("netwatch-datapath crate has no parent directory"))?;
    let ebpf = root.join("netwatch-ebpf");
    // netwatch-ebpf is a build dependency, so a change to its library (or netwatch-common)
    // reruns this script; the binaries are its src/bin and src/main.rs, watched here.
    println!("cargo::rerun-if-changed={}", ebpf.display());
    println!(
        "cargo::rerun-if-changed={}",
        root.join("netwatch-common").display()
    );
    let out_dir = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR")?);
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endianness {other}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64"
    } else {
        &arch
    };
    let target_dir = out_dir.join("ebpf-target");
    let mut cargo = nightly_cargo();
    cargo
        .args(["build", "--package", "netwatch-ebpf", "--bins", "--release"])
        .args(["--target", target, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{arch}\""),
                String::from("-Cdebuginfo=2"),
                String::from("-Clink-arg=--btf"),
            ]
            .join("\x1f"),
        )
        // The host toolchain's compiler and wrappers would build with stable.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    let output = cargo
        .output()
        .with_context(|| format!("cannot run {cargo:?}"))?;
    if !output.status.success() {
        // Shown by cargo, in full, because the script fails.
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        bail!(
            "building the eBPF programs failed ({}): {cargo:?}",
            output.status
        );
    }
    for object in OBJECTS {
        let built = target_dir.join(target).join("release").join(object);
        copy(&built, &out_dir.join(object))?;
    }
    // What `netwatch --version` names beside its commit: the object it loads.
    let object = std::fs::read(out_dir.join(OBJECTS[0])).context("reading the XDP object")?;
    let build_id = format!("{:016x}", fnv1a(&object));
    println!("cargo::metadata=BUILD_ID={build_id}");
    Ok(())
}

/// 64-bit FNV-1a: a build id, not a defence against anyone.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `cargo` of the nightly toolchain: through rustup when there is one.
fn nightly_cargo() -> Command {
    let rustup = env::var_os("PATH").and_then(|path| {
        env::split_paths(&path)
            .map(|dir| dir.join("rustup"))
            .find(|candidate| candidate.is_file())
    });
    match rustup {
        Some(rustup) => {
            let mut command = Command::new(rustup);
            command.args(["run", "nightly", "cargo"]);
            command
        }
        None => Command::new("cargo"),
    }
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}
