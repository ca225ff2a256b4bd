//! MaxMind-format databases written for a test, in the GeoLite2-ASN and GeoLite2-Country
//! layouts, by `enrich/write_mmdb.py` (mmdb-writer, PyPI; `cargo xtask setup` installs it).

use std::{fs, path::Path, process::Command};

use crate::process::succeed;

/// Writes a database of `kind` (`asn`: `NETWORK=ASN:ORG` pairs; `country`: `NETWORK=CC`) at
/// `out`, atomically: a new file renamed over the old, as an update does.
pub fn write_mmdb(kind: &str, out: &Path, pairs: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("enrich/write_mmdb.py");
    let fresh = out.with_extension("new");
    succeed(
        Command::new("python3")
            .arg(script)
            .arg(kind)
            .arg(&fresh)
            .args(pairs),
    );
    fs::rename(&fresh, out).unwrap_or_else(|err| panic!("{err}"));
}
