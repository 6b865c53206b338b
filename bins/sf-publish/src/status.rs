//! `sf-publish status MATRIX`: which cells of a job matrix are already published and current, so
//! `sf-matrix --skip-published` can leave them out.
//!
//! A tarball (or image) cell is published when its tarball and its signature are at their keys. A
//! version cell is published when its version mirror's index lists, in the build cache, a `slurm`
//! spec of the cell's exact Spack version for the cell's OS and target; a deps cell when its deps
//! mirror's index lists any spec in the build cache for that OS and target (the deps mirror holds
//! only Slurm's dependencies). Output:
//! `{"schema_version":1,"published":[{"id","reason"}],"pending":[{"id","reason"}]}`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use sf_aws::AwsSettings;
use sf_core::exit::bad_input;
use sf_core::layout::{spack, Cell, Destination};
use sf_spack::index::Index;
use sf_store::Store;

use crate::merge::read_document;
use crate::publish::Publisher;

/// The package whose spec marks a version mirror as built.
pub const SLURM_PACKAGE: &str = "slurm";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellStatus {
    pub id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub schema_version: u32,
    pub published: Vec<CellStatus>,
    pub pending: Vec<CellStatus>,
}

#[derive(Deserialize)]
struct MatrixDoc {
    include: Vec<Cell>,
}

/// Parse `sf-matrix` output.
pub fn parse_matrix(text: &str) -> Result<Vec<Cell>> {
    let doc: MatrixDoc = serde_json::from_str(text).map_err(|e| {
        bad_input(format!(
            "not a job matrix from sf-matrix ({e}); expected {{\"include\":[cell, ...]}}"
        ))
    })?;
    Ok(doc.include)
}

/// Opened stores and read indexes, shared by cells of one destination.
struct Cache<'a> {
    aws: &'a AwsSettings,
    stores: HashMap<String, Option<Store>>,
    indexes: HashMap<String, Option<Index>>,
}

impl Cache<'_> {
    /// A store, or `None` for a directory that does not exist (nothing is published there).
    async fn store(&mut self, url: &str) -> Result<Option<Store>> {
        if let Some(s) = self.stores.get(url) {
            return Ok(s.clone());
        }
        let dest = Destination::parse(url)?;
        let s = match &dest {
            Destination::Dir { path } if !Path::new(path).is_dir() => None,
            _ => Some(Store::open(&dest, self.aws).await?),
        };
        self.stores.insert(url.to_string(), s.clone());
        Ok(s)
    }

    async fn index(&mut self, mirror_url: &str) -> Result<Option<Index>> {
        if let Some(i) = self.indexes.get(mirror_url) {
            return Ok(i.clone());
        }
        let i = match self.store(mirror_url).await? {
            None => None,
            Some(store) => {
                let p = Publisher::new(store, 1);
                if p.store.head(spack::INDEX_MANIFEST).await?.is_none() {
                    None
                } else {
                    Some(read_document::<Index>(&p, spack::INDEX_MANIFEST).await?.0)
                }
            }
        };
        self.indexes.insert(mirror_url.to_string(), i.clone());
        Ok(i)
    }
}

async fn cell_status(cache: &mut Cache<'_>, cell: &Cell) -> Result<(bool, String)> {
    // Version cells name their tarball too, but their product is the version mirror.
    let tarball = matches!(cell.pipeline.as_str(), "tarball" | "image");
    if let Some(t) = cell.tarball.as_ref().filter(|_| tarball) {
        // The cell names its destination root; older matrices only carry full URLs.
        let from_url = t.url.strip_suffix(&format!("/{}", t.key)).unwrap_or(&t.url);
        let root = if cell.destination.is_empty() {
            from_url
        } else {
            cell.destination.as_str()
        };
        let Some(store) = cache.store(root).await? else {
            return Ok((false, format!("{root} does not exist")));
        };
        for key in [&t.key, &t.signature_key] {
            if store.head(key).await?.is_none() {
                return Ok((false, format!("{} is missing", store.url_of(key))));
            }
        }
        return Ok((
            true,
            format!("{} and its signature are published", store.url_of(&t.key)),
        ));
    }
    let (mirror, want_slurm) = match (&cell.version_mirror, &cell.slurm_spack_version) {
        (Some(m), Some(v)) => (m, Some(v.as_str())),
        _ => (&cell.deps_mirror, None),
    };
    let Some(index) = cache.index(&mirror.url).await? else {
        return Ok((false, format!("{} has no index", mirror.url)));
    };
    let found = index.records().find(|(_, r)| {
        let node = sf_spack::spec::SpecNode {
            json: r.spec.clone(),
        };
        r.in_buildcache
            && cell
                .spack_os
                .as_deref()
                .is_none_or(|os| node.platform_os() == Some(os))
            && node.target() == Some(cell.spack_target.as_str())
            && want_slurm.is_none_or(|v| node.name() == SLURM_PACKAGE && node.version() == v)
    });
    Ok(match (found, want_slurm) {
        (Some((h, _)), Some(v)) => (
            true,
            format!("{} lists {SLURM_PACKAGE}@{v}/{h}", mirror.url),
        ),
        (Some(_), None) => (
            true,
            format!(
                "{} lists dependencies for {}",
                mirror.url, cell.spack_target
            ),
        ),
        (None, Some(v)) => (
            false,
            format!(
                "{} does not list {SLURM_PACKAGE}@{v} for {}",
                mirror.url, cell.spack_target
            ),
        ),
        (None, None) => (
            false,
            format!("{} lists nothing for {}", mirror.url, cell.spack_target),
        ),
    })
}

/// The status of every cell.
pub async fn status(cells: &[Cell], aws: &AwsSettings) -> Result<StatusReport> {
    let mut cache = Cache {
        aws,
        stores: HashMap::new(),
        indexes: HashMap::new(),
    };
    let mut report = StatusReport {
        schema_version: 1,
        ..Default::default()
    };
    for cell in cells {
        let (done, reason) = cell_status(&mut cache, cell)
            .await
            .with_context(|| format!("cell {}", cell.id))?;
        let s = CellStatus {
            id: cell.id.clone(),
            reason,
        };
        if done {
            report.published.push(s);
        } else {
            report.pending.push(s);
        }
    }
    Ok(report)
}
