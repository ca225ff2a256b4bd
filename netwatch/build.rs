//! What `netwatch --version` names: the commit the source is at, and the build id of the XDP
//! object that netwatch-datapath embeds (handed over by its build script, whose `links` key
//! makes it `DEP_NETWATCH_EBPF_BUILD_ID` here).
use std::{env, path::Path, process::Command};

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NETWATCH_EBPF_BUILD_ID");
    let Ok(build_id) = env::var("DEP_NETWATCH_EBPF_BUILD_ID") else {
        panic!("netwatch-datapath's build script gave no DEP_NETWATCH_EBPF_BUILD_ID");
    };
    println!("cargo::rustc-env=NETWATCH_EBPF_BUILD_ID={build_id}");
    let Ok(manifest_dir) = env::var("CARGO_MANIFEST_DIR") else {
        panic!("cargo gave no CARGO_MANIFEST_DIR");
    };
    let Some(root) = Path::new(&manifest_dir).parent() else {
        panic!("the netwatch crate ({manifest_dir}) has no parent directory");
    };
    println!("cargo::rustc-env=NETWATCH_GIT_COMMIT={}", git_commit(root));
    for watched in [".git/HEAD", ".git/refs/heads"] {
        if root.join(watched).exists() {
            println!("cargo::rerun-if-changed={}", root.join(watched).display());
        }
    }
}

/// The commit the source is at (12 hex digits), or `unknown` outside a git checkout (a
/// source tarball).
fn git_commit(root: &Path) -> String {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| String::from("unknown"))
}
