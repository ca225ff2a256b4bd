//! Files and folders that hold what netwatch saw (user names, URLs, DNS names): created for
//! their owner alone, whatever the umask.
//!
//! A file netwatch creates is 0600 and a folder 0700, set explicitly after creation (the
//! umask only ever narrows a mode given at creation; a umask of 0 would leave 0644 files
//! otherwise, and a strict one would leave 0400). A file or folder that exists is left as it
//! is (the admin chose its mode), with one warning when others may read it.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

/// Mode of the files netwatch creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the folders netwatch creates.
pub const DIR_MODE: u32 = 0o700;

/// Opens `path` for writing (appending or truncating), creating it 0600 (and its missing
/// folders 0700) if it is missing.
pub fn open(path: &Path, append: bool) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        create_dir_all(dir)?;
    }
    let existed = path.exists();
    let mut options = OpenOptions::new();
    options.write(true).create(true).mode(FILE_MODE);
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    let file = options.open(path)?;
    if existed {
        warn_if_readable_by_others(path, &file.metadata()?);
    } else {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Creates `path` 0600 and empty if it is missing (for a file another library opens, such as
/// SQLite's, whose journal files then take the same mode); warns about an existing one that
/// others may read.
pub fn prepare(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => file.set_permissions(fs::Permissions::from_mode(FILE_MODE)),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            warn_if_readable_by_others(path, &fs::metadata(path)?);
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Creates `dir` and its missing parents 0700; leaves existing ones alone.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(err) => Err(err),
    }
}

fn warn_if_readable_by_others(path: &Path, metadata: &fs::Metadata) {
    let mode = metadata.permissions().mode();
    if metadata.is_file() && mode & 0o004 != 0 {
        log::warn!(
            "warning: {} is readable by every user (mode {:04o}); it holds what netwatch saw (user names, URLs, DNS names): `chmod 600` it",
            path.display(),
            mode & 0o7777
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Under this process's umask; tests/tests/hostile.rs runs netwatch under umasks 000 and
    /// 277 (a unit test may not change the umask of a process whose other tests create
    /// files at the same time).
    #[test]
    fn created_files_and_folders_are_private() {
        let root = std::env::temp_dir().join(format!("netwatch-private-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let dir = root.join("a/b");
        create_dir_all(&dir).unwrap();
        open(&dir.join("alerts.jsonl"), true).unwrap();
        open(&dir.join("out.jsonl"), false).unwrap();
        prepare(&dir.join("store.db")).unwrap();
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        for file in ["alerts.jsonl", "out.jsonl", "store.db"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn an_existing_file_keeps_its_mode() {
        let path = std::env::temp_dir().join(format!("netwatch-existing-{}", std::process::id()));
        fs::write(&path, b"kept\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        open(&path, true).unwrap();
        prepare(&path).unwrap();
        assert_eq!(mode(&path), 0o644);
        assert_eq!(
            fs::read(&path).unwrap(),
            b"kept\n",
            "appending keeps what was there"
        );
        let _ = fs::remove_file(&path);
    }
}
