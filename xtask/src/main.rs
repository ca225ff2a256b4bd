//! `cargo xtask`: set the machine up, build the eBPF object, run netwatch, run every test,
//! run the benchmarks. Each command installs what it needs and is missing, so that a fresh
//! machine needs nothing but this repository.

use std::{
    env,
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Parser, Subcommand};

/// Pinned because newer releases need a newer LLVM or rustc than these machines have.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const APT_PACKAGES_FOR_LINKER: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];
/// Tools the tests and the benchmarks call, with the Debian package of each.
const TEST_TOOLS: &[(&str, &str)] = &[
    // Network namespaces and veth pairs.
    ("ip", "iproute2"),
    // Running netwatch without privileges; a bpffs for pinning.
    ("setpriv", "util-linux"),
    ("mount", "mount"),
    // The metrics endpoint against the real tools (tests/tests/prometheus.rs).
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    // The systemd unit (tests/tests/packaging.rs).
    ("systemd-analyze", "systemd"),
    // Certificates for the HTTPS SIEM of the webhook tests.
    ("openssl", "openssl"),
    // Capturing the same stream as netwatch in the capture benchmark.
    ("tcpdump", "tcpdump"),
    // A real terminal for `netwatch top` (tests/tests/top.rs).
    ("tmux", "tmux"),
];
const NIGHTLY: &str = "nightly";

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: nightly rust-src, LLVM 22 dev packages, bpf-linker.
    Setup,
    /// Build the XDP programs (release, bpfel-unknown-none).
    BuildEbpf,
    /// Lint the XDP programs with clippy (`-D warnings`), for the BPF target they are built for
    /// (the workspace's own clippy run cannot reach them).
    ClippyEbpf,
    /// Build everything and run `netwatch ARGS` (needs root), e.g.
    /// `cargo xtask run -- monitor --iface eth0`.
    Run {
        /// Arguments for netwatch.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run every test: unit tests and the privileged integration tests.
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run the benchmarks (needs root) and write BENCHMARKS.md.
    Bench,
}

fn main() -> Result<()> {
    let Cli { command } = Cli::parse();
    let root = workspace_root()?;
    match command {
        Task::Setup => setup(),
        Task::BuildEbpf => {
            setup()?;
            build_ebpf(&root)
        }
        Task::ClippyEbpf => {
            setup()?;
            ebpf_cargo(&root, "clippy", &["--", "-D", "warnings"])
        }
        Task::Run { args } => {
            setup()?;
            cargo(&root, &["build", "--release", "--package", "netwatch"])?;
            let bin = root.join("target/release/netwatch");
            let err = Command::new(&bin).args(args).exec();
            Err(err).with_context(|| format!("cannot run {}", bin.display()))
        }
        Task::Test { args } => {
            setup()?;
            test(&root, &args)
        }
        Task::Bench => {
            setup()?;
            bench(&root)
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = env::var("CARGO_MANIFEST_DIR").context("run through `cargo xtask`")?;
    Path::new(&manifest)
        .parent()
        .map(Path::to_owned)
        .context("xtask has no parent directory")
}

fn say(what: &str) {
    eprintln!("xtask: {what}");
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    run(
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(args),
    )
}

fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Idempotent: checks each piece and installs only what is missing.
fn setup() -> Result<()> {
    let toolchains = output_of("rustup", &["toolchain", "list"]).unwrap_or_default();
    if !toolchains.lines().any(|line| line.starts_with(NIGHTLY)) {
        say("installing the nightly toolchain (the eBPF build needs -Z build-std)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    let components = output_of(
        "rustup",
        &["component", "list", "--installed", "--toolchain", NIGHTLY],
    )
    .unwrap_or_default();
    for component in ["rust-src", "clippy"] {
        if !components.lines().any(|line| line.starts_with(component)) {
            say(&format!("adding {component} to the nightly toolchain"));
            run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                NIGHTLY,
            ]))?;
        }
    }

    let mut apt = Vec::new();
    let linker_ok = output_of("bpf-linker", &["--version"])
        .is_some_and(|version| version.contains(BPF_LINKER_VERSION));
    if !linker_ok {
        apt.extend(
            APT_PACKAGES_FOR_LINKER
                .iter()
                .filter(|package| !dpkg_installed(package))
                .copied(),
        );
    }
    for (tool, package) in TEST_TOOLS {
        if output_of("which", &[tool]).is_none() && !apt.contains(package) {
            apt.push(package);
        }
    }
    if !apt.is_empty() {
        apt_install(&apt)?;
    }
    if !linker_ok {
        say(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
        ));
        run(Command::new("cargo").env("LLVM_PREFIX", LLVM_PREFIX).args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ]))?;
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    output_of("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|status| status.contains("install ok installed"))
}

fn apt_install(packages: &[&str]) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages {}: run `sudo apt-get install -y {}` or run xtask as root",
            packages.join(" "),
            packages.join(" ")
        );
    }
    say(&format!("apt-get install {}", packages.join(" ")));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(packages))
}

/// `cargo +nightly SUBCOMMAND` on the eBPF crate's binaries for the BPF target, then `extra`.
fn ebpf_cargo(root: &Path, subcommand: &str, extra: &[&str]) -> Result<()> {
    run(Command::new("cargo")
        .current_dir(root.join("netwatch-ebpf"))
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args([
            &format!("+{NIGHTLY}"),
            subcommand,
            "--package",
            "netwatch-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .args(extra))
}

fn build_ebpf(root: &Path) -> Result<()> {
    ebpf_cargo(root, "build", &[])?;
    let dir = root.join("target/bpfel-unknown-none/release");
    say(&format!(
        "eBPF objects: {} and {}",
        dir.join("netwatch-xdp").display(),
        dir.join("noop-xdp").display()
    ));
    Ok(())
}

fn test(root: &Path, extra: &[OsString]) -> Result<()> {
    cargo(root, &["build", "--package", "netwatch"])?;
    let bin = root.join("target/debug/netwatch");
    run(
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .env("NETWATCH_BIN", &bin)
            .args(["test", "--workspace", "--exclude", "netwatch-ebpf"])
            .args(extra),
    )
}

fn bench(root: &Path) -> Result<()> {
    cargo(
        root,
        &[
            "build",
            "--release",
            "--package",
            "netwatch-bench",
            "--package",
            "netwatch",
        ],
    )?;
    run(Command::new(root.join("target/release/netwatch-bench"))
        .current_dir(root)
        .arg("--write")
        .arg(root.join("BENCHMARKS.md")))
}
