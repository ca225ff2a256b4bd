//! What `netwatch known` and `netwatch history` share: opening the store named by `--db` or
//! the configuration, and their errors.

use std::{io, path::Path};

use crate::{
    config::{Config, ConfigError},
    store::{Store, StoreError},
};

/// Why a store command failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreCommandError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the answer.
    #[error("cannot write: {0}")]
    Write(#[from] io::Error),
}

/// The store at `db`, else at the configuration's `store.path`.
pub fn open_store(config: Option<&Path>, db: Option<&Path>) -> Result<Store, StoreCommandError> {
    open_store_and_captures(config, db).map(|(store, _)| store)
}

/// The store as [`open_store`] opens it, and the daemon's captures' folder (`capture.dir`,
/// else `captures/` beside the store).
pub fn open_store_and_captures(
    config: Option<&Path>,
    db: Option<&Path>,
) -> Result<(Store, std::path::PathBuf), StoreCommandError> {
    let config = Config::load_or_default(config)?;
    let db = db.unwrap_or(&config.store.path);
    let captures = config.capture.dir_beside(db);
    Ok((Store::open(db)?, captures))
}
