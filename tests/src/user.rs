//! Running things as people do: an unprivileged user made for one test (removed with its
//! sudoers rule), and a checkout of this repository that such a user owns, with a Rust
//! toolchain to run `cargo xtask` in it.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::Command,
};

use crate::{ScratchDir, netns::Netns, process::succeed, unique_name};

/// `setpriv`'s arguments that make the rest of its command line nobody (65534), with no
/// groups and no capabilities to inherit.
pub const AS_NOBODY: [&str; 4] = [
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
];

/// A system user made for one test (no home, no login shell), removed on drop with its sudoers
/// rule if it has one, after whatever it still runs is killed.
pub struct TestUser {
    /// Its login name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its own group's id.
    pub gid: u32,
    sudoers: PathBuf,
}

impl TestUser {
    /// Adds the user, with a group of its own.
    pub fn create() -> Self {
        let name = unique_name("nwx");
        succeed(
            Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--user-group",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name),
        );
        // Removed on drop from here on, whatever fails next.
        let mut user = Self {
            sudoers: PathBuf::from("/etc/sudoers.d").join(&name),
            name,
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> u32 {
            let output = succeed(Command::new("id").args([flag, &user.name]));
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|err| panic!("id {flag} {}: {err}", user.name))
        };
        let (uid, gid) = (id("-u"), id("-g"));
        (user.uid, user.gid) = (uid, gid);
        user
    }

    /// Lets the user run `commands` as root without a password: a sudoers command list, such
    /// as `/path/netwatch` or `/path/netwatch, SETENV: /path/deps/*`. The rule is checked by
    /// `visudo` under a name sudo skips (it has a dot), and only then put in place.
    pub fn allow(&self, commands: &str) {
        let draft = self.sudoers.with_extension("draft");
        let fail = |what: &str, err: std::io::Error| -> ! {
            let _ = fs::remove_file(&draft);
            panic!("{what} {}: {err}", draft.display())
        };
        fs::write(
            &draft,
            format!("{} ALL=(root) NOPASSWD: {commands}\n", self.name),
        )
        .unwrap_or_else(|err| fail("writing", err));
        fs::set_permissions(&draft, fs::Permissions::from_mode(0o440))
            .unwrap_or_else(|err| fail("setting the mode of", err));
        let checked = Command::new("visudo")
            .args(["-c", "-q", "-f"])
            .arg(&draft)
            .output()
            .unwrap_or_else(|err| fail("visudo on", err));
        if !checked.status.success() {
            let _ = fs::remove_file(&draft);
            panic!(
                "visudo refuses the rule {commands:?}: {}",
                String::from_utf8_lossy(&checked.stderr)
            );
        }
        fs::rename(&draft, &self.sudoers).unwrap_or_else(|err| fail("renaming", err));
    }

    /// Takes the user's sudo rule away.
    pub fn disallow(&self) {
        let _ = fs::remove_file(&self.sudoers);
    }

    /// `setpriv`'s arguments that make the rest of its command line this user: its uid and
    /// group, no supplementary groups, no capabilities.
    pub fn setpriv_args(&self) -> [String; 4] {
        [
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            String::from("--clear-groups"),
            String::from("--inh-caps=-all"),
        ]
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        self.disallow();
        if self.uid != 0 {
            // A build a failed test left running would keep userdel from removing the user.
            let _ = Command::new("pkill")
                .args(["-KILL", "-U", &self.uid.to_string()])
                .status();
        }
        match Command::new("userdel").arg(&self.name).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "userdel {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) => eprintln!("userdel {}: {err}", self.name),
        }
    }
}

/// This repository's files (those git tracks or would), copied into a folder the user owns, and a home of theirs
/// with a Rust toolchain: the tests' own rustup toolchains and cargo's proxies (bpf-linker
/// among them), bind-mounted read-only in a mount namespace of the command's own, because
/// root's home is closed to other users; and a copy of cargo's download cache, so that the
/// user's cargo works offline and unpacks the crates itself, as after a `cargo fetch`.
pub struct UserCheckout {
    /// The folder of the checkout and the home, removed on drop.
    _dir: ScratchDir,
    /// The checkout: the workspace's root.
    pub src: PathBuf,
    home: PathBuf,
    rustup_home: PathBuf,
    cargo_bin: PathBuf,
    setpriv: [String; 4],
    user: String,
}

impl UserCheckout {
    pub fn new(user: &TestUser) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = ScratchDir::new("nwxsrc");
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|err| panic!("{err}"));
        let src = dir.join("src");
        // What git tracks or would (a new file not yet added), as it is in the working tree.
        let listed = succeed(Command::new("git").arg("-C").arg(&root).args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]));
        for name in listed.stdout.split(|&byte| byte == 0) {
            let name = String::from_utf8_lossy(name);
            let from = root.join(name.as_ref());
            // A file deleted in the working tree but still in the index is not copied.
            if name.is_empty() || !from.is_file() {
                continue;
            }
            let to = src.join(name.as_ref());
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).unwrap_or_else(|err| panic!("{err}"));
            }
            fs::copy(&from, &to).unwrap_or_else(|err| panic!("{}: {err}", from.display()));
        }

        let home = dir.join("home");
        let cargo_home =
            env::var_os("CARGO_HOME").map_or_else(|| home_of_tests().join(".cargo"), PathBuf::from);
        let rustup_home = env::var_os("RUSTUP_HOME")
            .map_or_else(|| home_of_tests().join(".rustup"), PathBuf::from);
        let cargo_bin = cargo_home.join("bin");
        assert!(
            cargo_bin.join("cargo").is_file() && rustup_home.join("toolchains").is_dir(),
            "no rustup toolchain at {} with proxies in {}",
            rustup_home.display(),
            cargo_bin.display()
        );
        for mount_point in [".cargo/bin", ".rustup"] {
            fs::create_dir_all(home.join(mount_point)).unwrap_or_else(|err| panic!("{err}"));
        }
        let registry = home.join(".cargo/registry");
        fs::create_dir_all(&registry).unwrap_or_else(|err| panic!("{err}"));
        succeed(
            Command::new("cp")
                .arg("-r")
                .arg(cargo_home.join("registry/index"))
                .arg(cargo_home.join("registry/cache"))
                .arg(&registry),
        );
        succeed(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", user.uid, user.gid))
                .arg(&src)
                .arg(&home),
        );
        Self {
            _dir: dir,
            src,
            home,
            rustup_home,
            cargo_bin,
            setpriv: user.setpriv_args(),
            user: user.name.clone(),
        }
    }

    /// `cargo` as the user in the checkout, in `netns` if given, with an environment of the
    /// user's own (HOME, USER, PATH, the toolchain, CI=true so that no privileged test skips);
    /// the caller adds cargo's arguments.
    pub fn cargo(&self, netns: Option<&Netns>) -> Command {
        const SCRIPT: &str = r#"set -e
mount --bind -o ro "$1" "$2"
mount --bind -o ro "$3" "$4"
cd "$5"
shift 5
exec "$@""#;
        let mut command = match netns {
            Some(netns) => netns.command("unshare"),
            None => Command::new("unshare"),
        };
        let home = &self.home;
        let mut path = OsString::from(home.join(".cargo/bin"));
        path.push(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                SCRIPT,
                "sh",
            ])
            .arg(&self.rustup_home)
            .arg(home.join(".rustup"))
            .arg(&self.cargo_bin)
            .arg(home.join(".cargo/bin"))
            .arg(&self.src)
            .arg("setpriv")
            .args(&self.setpriv)
            .args(["env", "-i"])
            .arg(assign("HOME", home))
            .arg(assign("USER", &self.user))
            .arg(assign("LOGNAME", &self.user))
            .arg(assign("PATH", path))
            .arg(assign("RUSTUP_HOME", home.join(".rustup")))
            .arg(assign("CARGO_HOME", home.join(".cargo")))
            .args(["CARGO_NET_OFFLINE=true", "CI=true", "cargo"]);
        command
    }
}

impl Drop for UserCheckout {
    fn drop(&mut self) {
        // What a failed test may have left running from the checkout: the user's build, or
        // the netwatch that sudo runs as root (its path names the checkout).
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(&self.src)
            .status();
    }
}

/// `NAME=value`, for `env`.
fn assign(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut pair = OsString::from(name);
    pair.push("=");
    pair.push(value);
    pair
}

/// The home of the user running the tests, where rustup keeps its toolchains by default.
fn home_of_tests() -> PathBuf {
    env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}
