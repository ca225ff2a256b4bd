//! `netwatch-docs DIR`: writes netwatch's man pages (`man1/netwatch.1` and one page per
//! command, `netwatch-monitor.1`, ...) and its shell completions (bash, zsh, fish) under
//! `DIR`, from the same command-line definition the binary parses. The Debian package ships
//! them (`cargo xtask package`).

use std::{
    fs,
    io::{self, Write as _},
    path::Path,
    process::ExitCode,
};

use clap::CommandFactory as _;
use clap_complete::{Shell, generate_to};
use netwatch::cli::Cli;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: netwatch-docs DIR");
        return ExitCode::FAILURE;
    };
    match write_all(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netwatch-docs: {}: {err}", Path::new(&dir).display());
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &Path) -> io::Result<()> {
    let man = dir.join("man1");
    fs::create_dir_all(&man)?;
    let command = Cli::command();
    write_page(&man, &command, "netwatch")?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        // clap names are static; this short-lived program leaks the few it makes.
        let name: &'static str = Box::leak(format!("netwatch-{}", sub.get_name()).into_boxed_str());
        write_page(&man, &sub.clone().name(name), name)?;
    }
    let completions = dir.join("completions");
    fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        generate_to(shell, &mut Cli::command(), "netwatch", &completions)?;
    }
    Ok(())
}

fn write_page(dir: &Path, command: &clap::Command, name: &str) -> io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    let mut file = fs::File::create(dir.join(format!("{name}.1")))?;
    file.write_all(&page)
}
