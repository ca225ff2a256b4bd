//! Context for addresses at 3 a.m.: the autonomous system and the country of every address an
//! alert names (its subject, contributors, victims), from MaxMind-format databases (GeoLite2,
//! DB-IP lite and IPinfo lite publish `.mmdb` files), memory-mapped and opened again when a
//! file is replaced. Looked up per alert, never per packet. With no database configured
//! nothing changes.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use maxminddb::{Mmap, Reader, geoip2};

use crate::detect::alert::{Alert, AsShare, Place, Places, Subject};

/// `[enrich]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// An ASN database (GeoLite2-ASN layout: `autonomous_system_number`,
    /// `autonomous_system_organization`).
    pub asn_db: Option<PathBuf>,
    /// A country database (GeoLite2-Country layout: `country.iso_code`).
    pub country_db: Option<PathBuf>,
}

/// One database, and when its file was last seen changed.
struct Database {
    path: PathBuf,
    reader: Option<Reader<Mmap>>,
    modified: Option<SystemTime>,
}

impl Database {
    fn open(path: &Path) -> Self {
        let mut database = Self {
            path: path.to_owned(),
            reader: None,
            modified: None,
        };
        database.reload();
        database
    }

    /// Opens the file again if it changed (or was never opened).
    fn reload(&mut self) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|meta| meta.modified())
            .ok();
        if self.reader.is_some() && modified == self.modified {
            return;
        }
        self.modified = modified;
        match Reader::open_mmap(&self.path) {
            Ok(reader) => {
                log::info!(
                    "enrich: {} ({}, built {})",
                    self.path.display(),
                    reader.metadata.database_type,
                    reader.metadata.build_epoch
                );
                self.reader = Some(reader);
            }
            Err(err) => {
                if self.reader.is_none() {
                    log::warn!("enrich: cannot open {}: {err}", self.path.display());
                } else {
                    log::warn!(
                        "enrich: cannot open {} again: {err}; the one open stays",
                        self.path.display()
                    );
                }
            }
        }
    }
}

/// Looks addresses up in the databases configured.
pub struct Enricher {
    asn: Option<Database>,
    country: Option<Database>,
    checked: Instant,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher").finish_non_exhaustive()
    }
}

impl Enricher {
    /// The databases of `config`; `None` when it names none.
    pub fn open(config: &EnrichConfig) -> Option<Self> {
        if config.asn_db.is_none() && config.country_db.is_none() {
            return None;
        }
        Some(Self {
            asn: config.asn_db.as_deref().map(Database::open),
            country: config.country_db.as_deref().map(Database::open),
            checked: Instant::now(),
        })
    }

    /// What the databases say of `addr`; `None` when they say nothing.
    pub fn place(&self, addr: IpAddr) -> Option<Place> {
        let mut place = Place::default();
        if let Some(reader) = self.asn.as_ref().and_then(|db| db.reader.as_ref())
            && let Ok(Some(asn)) = reader.lookup::<geoip2::Asn>(addr)
        {
            place.asn = asn.autonomous_system_number;
            place.as_org = asn.autonomous_system_organization.map(str::to_owned);
        }
        if let Some(reader) = self.country.as_ref().and_then(|db| db.reader.as_ref())
            && let Ok(Some(country)) = reader.lookup::<geoip2::Country>(addr)
        {
            place.country = country
                .country
                .or(country.registered_country)
                .and_then(|country| country.iso_code)
                .map(str::to_owned);
        }
        (place != Place::default()).then_some(place)
    }

    /// What the databases say of each of `addresses` (those they know).
    pub fn places(&mut self, addresses: impl IntoIterator<Item = IpAddr>) -> Places {
        self.follow();
        addresses
            .into_iter()
            .filter_map(|addr| Some((addr, self.place(addr)?)))
            .collect()
    }

    /// Opens a database replaced on disk again (looked at once a second at most).
    fn follow(&mut self) {
        if self.checked.elapsed().as_secs() >= 1 {
            self.checked = Instant::now();
            for database in [&mut self.asn, &mut self.country].into_iter().flatten() {
                database.reload();
            }
        }
    }

    /// Puts the context of every address `alert` names into it, and its contributors'
    /// shares by AS. A database replaced on disk is opened again first (looked at once a
    /// second at most).
    pub fn annotate(&mut self, alert: &mut Alert) {
        self.follow();
        let mut addresses = Vec::new();
        let mut push = |subject: &Subject| match subject {
            Subject::Source(addr) | Subject::Destination(addr) => addresses.push(*addr),
            Subject::Prefix(net) | Subject::DestinationPrefix(net) => addresses.push(net.addr()),
            Subject::Global => {}
        };
        push(&alert.subject);
        for contributor in &alert.contributors {
            push(&contributor.subject);
        }
        // The traffic without a slot: its source prefixes (their first address) and its
        // destinations.
        if let Some(slotless) = &alert.slotless {
            addresses.extend(slotless.prefixes_top.iter().map(|share| share.what.addr));
            addresses.extend(slotless.targets.iter().map(|share| share.what.addr));
        }
        let mut context = BTreeMap::new();
        for addr in addresses
            .into_iter()
            .chain(alert.victims.iter().map(|victim| victim.addr))
        {
            if let Some(place) = self.place(addr) {
                context.insert(addr, place);
            }
        }
        // The contributors' packets by AS, largest first.
        let mut by_as: BTreeMap<u32, (Option<String>, f64)> = BTreeMap::new();
        for contributor in &alert.contributors {
            let addr = match contributor.subject {
                Subject::Source(addr) => addr,
                Subject::Prefix(net) => net.addr(),
                _ => continue,
            };
            if let Some(Place {
                asn: Some(asn),
                as_org,
                ..
            }) = context.get(&addr)
            {
                let entry = by_as.entry(*asn).or_insert((as_org.clone(), 0.0));
                entry.1 += contributor.share;
            }
        }
        let mut shares: Vec<AsShare> = by_as
            .into_iter()
            .map(|(asn, (as_org, share))| AsShare { asn, as_org, share })
            .collect();
        shares.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.asn.cmp(&b.asn)));
        alert.context = context;
        alert.by_as = shares;
    }
}
