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

mod package;

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
    // File capabilities instead of root (tests/tests/packaging.rs).
    ("setcap", "libcap2-bin"),
    // `cargo xtask run` and `test` as a user, binaries through sudo (tests/tests/as_a_user.rs).
    ("sudo", "sudo"),
    // The Debian package (`cargo xtask package`).
    ("dpkg-deb", "dpkg"),
    ("strip", "binutils"),
    ("mount", "mount"),
    // The metrics endpoint against the real tools (tests/tests/prometheus.rs).
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    // The systemd unit (tests/tests/packaging.rs).
    ("systemd-analyze", "systemd"),
    // Signature rules announced upstream: BGP Flowspec and RTBH (tests/tests/bgp.rs).
    ("exabgp", "exabgp"),
    ("bird", "bird2"),
    ("birdc", "bird2"),
    // Certificates for the HTTPS SIEM of the webhook tests.
    ("openssl", "openssl"),
    // Capturing the same stream as netwatch in the capture benchmark.
    ("tcpdump", "tcpdump"),
    // A real terminal for `netwatch top` (tests/tests/top.rs).
    ("tmux", "tmux"),
    // The events' pcapng captures read back by Wireshark's reader (tests/tests/evidence.rs).
    ("tshark", "tshark"),
    ("capinfos", "wireshark-common"),
    // librdkafka, built from source for netwatch's Kafka export: cmake, and the headers of
    // the OpenSSL and libcurl it links (no command of their own: the package tells).
    ("cmake", "cmake"),
    ("libssl-dev", "libssl-dev"),
    ("libcurl4-openssl-dev", "libcurl4-openssl-dev"),
    ("zlib1g-dev", "zlib1g-dev"),
    // The fleet tests: a real Kafka consumer, and relays into the broker's namespace
    // (tests/tests/fleet.rs).
    ("kcat", "kcat"),
    ("socat", "socat"),
];
/// Python packages of the tests, from PyPI: ClickHouse's engine in process, which runs the
/// schema of packaging/clickhouse/ (tests/tests/fleet.rs); a writer of MaxMind-format
/// databases (tests/tests/enrich.rs).
const PIP_PACKAGES: &[(&str, &str)] = &[
    ("chdb", "chdb==4.4.0"),
    ("mmdb_writer", "mmdb-writer==0.2.7"),
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
    /// Build netwatch as the calling user and run `netwatch ARGS`, e.g.
    /// `cargo xtask run -- monitor --iface eth0`: as root directly, otherwise the binary
    /// alone through sudo.
    Run {
        /// Run the debug build instead of the release build.
        #[arg(long)]
        debug: bool,
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
    /// cargo's runner for `cargo xtask test` as a user: a binary of the privileged
    /// integration tests (a file of TESTS_DIR) through `sudo -E`, any other as it is.
    #[command(hide = true)]
    TestRunner {
        /// The folder of the privileged tests' sources (`tests/tests`).
        tests_dir: PathBuf,
        /// The test binary and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Build the Debian package: the binary, the example configuration as a conffile, the
    /// systemd unit, the man pages and shell completions (dpkg-deb).
    Package {
        /// Package the debug build instead of the release build (for tests).
        #[arg(long)]
        debug: bool,
        /// Package what is built already, without building.
        #[arg(long)]
        no_build: bool,
        /// Where the .deb goes (default: target/debian).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    match main_result() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, the causes after colons; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_result() -> Result<()> {
    let Cli { command } = Cli::parse();
    if let Task::TestRunner { tests_dir, args } = &command {
        // Run by cargo for each test binary: no workspace to look for.
        return test_runner(tests_dir, args);
    }
    let root = workspace_root()?;
    match command {
        Task::Setup => setup().and_then(|()| setup_python()),
        Task::BuildEbpf => {
            setup()?;
            build_ebpf(&root)
        }
        Task::ClippyEbpf => {
            setup()?;
            ebpf_cargo(&root, "clippy", &["--", "-D", "warnings"])
        }
        Task::Run { debug, args } => {
            setup()?;
            let bin = root
                .join("target")
                .join(build_netwatch(&root, debug)?)
                .join("netwatch");
            if is_root() {
                let err = Command::new(&bin).args(args).exec();
                return Err(err).with_context(|| format!("cannot run {}", bin.display()));
            }
            run_with_sudo(&bin, &args)
        }
        Task::Test { args } => {
            setup()?;
            setup_python()?;
            test(&root, &args)
        }
        Task::Bench => {
            setup()?;
            bench(&root)
        }
        Task::TestRunner { .. } => unreachable!("run above"),
        Task::Package {
            debug,
            no_build,
            out,
        } => {
            let profile = if no_build {
                profile_of(debug)
            } else {
                setup()?;
                build_netwatch(&root, debug)?
            };
            let out = out.unwrap_or_else(|| root.join("target/debian"));
            let deb = package::build(&root, profile, &out)?;
            say(&format!("package: {}", deb.display()));
            Ok(())
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

/// cargo (the one running xtask, if any) in the workspace's root.
fn cargo_command(root: &Path) -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    run(cargo_command(root).args(args))
}

/// The target folder's profile of a build: `debug` or `release`.
fn profile_of(debug: bool) -> &'static str {
    if debug { "debug" } else { "release" }
}

/// Builds netwatch (and its XDP object) as the calling user; returns the profile's folder.
fn build_netwatch(root: &Path, debug: bool) -> Result<&'static str> {
    let mut build = vec!["build", "--package", "netwatch"];
    if !debug {
        build.push("--release");
    }
    cargo(root, &build)?;
    Ok(profile_of(debug))
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
        // A user's PATH may lack /usr/sbin (setcap): the package tells.
        let present = output_of("which", &[tool]).is_some() || dpkg_installed(package);
        if !present && !apt.contains(package) {
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

/// The tests' Python packages (`setup` and `test` only: `run` needs none).
fn setup_python() -> Result<()> {
    for (module, requirement) in PIP_PACKAGES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|output| output.status.success());
        if !present {
            if is_root() {
                say(&format!("pip install {requirement}"));
                run(Command::new("python3").args(["-m", "pip", "install", "-q", requirement]))?;
            } else {
                // A user's python is not root's, and the tests that need it run as root: the
                // package goes where root's python finds it, which only root can do (CI is
                // root). The test that needs it says so if it is missing.
                say(&format!(
                    "python3 has no {module}: `pip install {requirement}` as root for tests/tests/fleet.rs"
                ));
            }
        }
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    output_of("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|status| status.contains("install ok installed"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `command` as root: itself when xtask is root, otherwise through sudo (the caller says so first).
fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg("--").arg(program);
        command
    }
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        if output_of("which", &["sudo"]).is_none() {
            bail!(
                "missing Debian packages {}, and no sudo to install them: run `apt-get install -y {}` as root",
                packages.join(" "),
                packages.join(" ")
            );
        }
        say(&format!(
            "installing the Debian packages {} with sudo (everything else is built and installed as you)",
            packages.join(" ")
        ));
    }
    say(&format!("apt-get install {}", packages.join(" ")));
    run(as_root("apt-get").args(["update", "-qq"]))?;
    // Through env: sudo would drop the variable.
    run(as_root("env")
        .args([
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-qq",
        ])
        .args(packages))
}

/// Runs `bin ARGS` as root through sudo, keeping the terminal and the log settings; only the
/// binary is privileged, never the build. A user sudo refuses gets one line, not sudo's.
fn run_with_sudo(bin: &Path, args: &[OsString]) -> Result<()> {
    if output_of("which", &["sudo"]).is_none() {
        bail!(
            "netwatch needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, and there is no sudo: run xtask as root, or give the binary the capabilities (README, Run without root)"
        );
    }
    // Whether sudo runs it without asking. If not, sudo asks for a password on a terminal
    // (and says in one line if it refuses after all); without a terminal nobody can answer.
    let allowed = Command::new("sudo")
        .args(["-n", "-l", "--"])
        .arg(bin)
        .output()
        .context("cannot run sudo")?
        .status
        .success();
    // SAFETY: isatty only looks at the descriptor.
    let terminal = unsafe { libc::isatty(0) } == 1;
    if !allowed && !terminal {
        bail!(
            "netwatch needs root, and sudo does not let {} run {} without a password, with no terminal to type one (add a NOPASSWD sudoers rule, run as root, or use setcap: README, Run without root)",
            env::var("USER").unwrap_or_else(|_| String::from("this user")),
            bin.display()
        );
    }
    say(&format!(
        "running {} as root through sudo (it needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; the build stayed yours)",
        bin.display()
    ));
    let mut sudo = Command::new("sudo");
    // Only what is set: keeping a variable needs SETENV in the sudoers rule, a plain
    // NOPASSWD rule for the binary is enough otherwise.
    let keep: Vec<&str> = ["RUST_LOG", "NETWATCH_WEBHOOK_TOKEN"]
        .into_iter()
        .filter(|name| env::var_os(name).is_some())
        .collect();
    if !keep.is_empty() {
        sudo.arg(format!("--preserve-env={}", keep.join(",")));
    }
    let err = sudo.arg("--").arg(bin).args(args).exec();
    Err(err).context("cannot run sudo")
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
    let mut command = cargo_command(root);
    command
        .env("NETWATCH_BIN", &bin)
        .args(["test", "--workspace", "--exclude", "netwatch-ebpf"])
        .args(extra);
    if !is_root() {
        // cargo builds as the user, and its runner (this xtask) runs the privileged tests'
        // binaries through sudo, as aya's template does: those tests need root, the build and
        // the unit tests do not.
        let host = output_of("rustc", &["-vV"])
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("host: "))
                    .map(str::to_owned)
            })
            .context("rustc -vV names no host")?;
        let variable = format!(
            "CARGO_TARGET_{}_RUNNER",
            host.to_uppercase().replace(['-', '.'], "_")
        );
        let runner = format!(
            "{} test-runner {}",
            env::current_exe()?.display(),
            root.join("tests/tests").display()
        );
        if runner.split_whitespace().count() != 3 {
            bail!(
                "the checkout's path has white space, which cargo's runner cannot take: {runner}"
            );
        }
        say(&format!(
            "running the privileged tests' binaries through sudo -E ({variable}=\"{runner}\")"
        ));
        command.env(variable, runner);
    }
    run(&mut command)
}

/// Runs a test binary for cargo: through `sudo -E` when it is one of the privileged
/// integration tests (its name, less cargo's `-HASH`, is a file of `tests_dir`), directly
/// otherwise.
fn test_runner(tests_dir: &Path, args: &[OsString]) -> Result<()> {
    let (binary, rest) = args.split_first().context("no test binary to run")?;
    let binary = PathBuf::from(binary);
    let err = if privileged_test(tests_dir, &binary) {
        Command::new("sudo")
            .arg("-E")
            .arg("--")
            .arg(&binary)
            .args(rest)
            .exec()
    } else {
        Command::new(&binary).args(rest).exec()
    };
    Err(err).with_context(|| format!("cannot run {}", binary.display()))
}

/// Whether `binary` is one of the privileged integration tests: its name, less cargo's
/// `-HASH`, names a file of `tests_dir`.
fn privileged_test(tests_dir: &Path, binary: &Path) -> bool {
    let Some(name) = binary.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let stem = name.rsplit_once('-').map_or(name, |(stem, _)| stem);
    tests_dir.join(format!("{stem}.rs")).is_file()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The integration tests of `tests/tests` go through sudo; the crates' unit tests (and
    /// a name that only starts like a test's) do not.
    #[test]
    fn only_the_privileged_tests_binaries_take_sudo() {
        let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tests");
        let deps = Path::new("/x/target/debug/deps");
        for (binary, through_sudo) in [
            ("datapath-0f1e2d3c4b5a6978", true),
            ("bans-0011223344556677", true),
            ("netwatch-0f1e2d3c4b5a6978", false),
            ("netwatch_common-0f1e2d3c4b5a6978", false),
            ("xtask-0f1e2d3c4b5a6978", false),
            ("datapathx-0f1e2d3c4b5a6978", false),
        ] {
            assert_eq!(
                privileged_test(&tests_dir, &deps.join(binary)),
                through_sudo,
                "{binary}"
            );
        }
    }
}
