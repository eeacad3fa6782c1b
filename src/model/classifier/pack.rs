//! Packing a model trained before pools were packed: its directory rewritten, whole, with the
//! neighbour pool it retrieves from (`emoknow model pack`), and an ensemble re-pinned to its
//! packed members. Predictions do not change: the pool is the one the model read from its
//! store.

use super::check::{meta_sha256, parse_meta};
use super::{KindMeta, Meta, Model};
use crate::error::{Error, Result};
use crate::model::modeldir::{self, Staging};
use crate::neighbours::PackedPool;
use crate::spec::NeighbourSpec;
use std::path::Path;

/// Writes `meta` as `dir`'s `meta.json`, after recording the checksums of every other file.
pub(super) fn write_meta(dir: &Path, meta: &mut Meta) -> Result<()> {
    meta.files = Some(modeldir::checksums(dir)?);
    let path = dir.join("meta.json");
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::model_file(&path, e))?;
    std::fs::write(&path, json).map_err(|e| Error::io(&path, e))
}

/// Copies the files of model directory `from` into `to` (the staging directory), except
/// `meta.json` and what `skip` names (a prefix of the relative path).
fn copy_model(from: &Path, to: &Path, skip: &str) -> Result<()> {
    for rel in modeldir::checksums(from)?.into_keys() {
        if !skip.is_empty() && rel.starts_with(skip) {
            continue;
        }
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
    }
    Ok(())
}

/// The meta of model directory `dir`, its files checked against it (members of an ensemble
/// are not loaded).
fn read_checked(dir: &Path) -> Result<Meta> {
    let path = dir.join("meta.json");
    let meta = parse_meta(&modeldir::read_meta(dir)?, &path)?;
    if let Some(files) = &meta.files {
        modeldir::verify(dir, &path, files)?;
    }
    Ok(meta)
}

/// Rewrites model directory `dir` with its meta changed by `edit` and, when given, `pool`
/// packed into it: a staging copy swapped in whole.
fn rewrite(dir: &Path, pool: Option<&PackedPool>, edit: impl FnOnce(&mut Meta)) -> Result<()> {
    let out = modeldir::absolute(dir)?;
    let mut meta = read_checked(&out)?;
    let staging = Staging::begin(&out)?;
    copy_model(
        &out,
        staging.path(),
        if pool.is_some() { "pool/" } else { "" },
    )?;
    if let Some(p) = pool {
        p.write(staging.path())?;
    }
    edit(&mut meta);
    write_meta(staging.path(), &mut meta)?;
    staging.commit()
}

/// Packs `pool` (the pool `spec` reads) into the single model `model`, recording `spec` as the
/// neighbours' retrieval when the model attaches neighbours and had none recorded.
pub fn pack_pool(model: &Model, spec: &NeighbourSpec, pool: &PackedPool) -> Result<()> {
    if matches!(model.meta.kind, KindMeta::Ensemble { .. }) {
        return Err(Error::Invalid(
            "an ensemble holds no pool: pack its members, then re-pin it".into(),
        ));
    }
    rewrite(model.dir(), Some(pool), |meta| {
        if meta.attach.mode.neighbours() && meta.attach.neighbours.is_none() {
            meta.attach.neighbours = Some(spec.clone());
        }
    })
}

/// Records the checksums of every file of the model directory `dir` (a model written before
/// checksums) in its `meta.json`, rewriting the directory whole. Predictions do not change; an
/// ensemble pinning this model must be re-pinned ([`repin`]).
pub fn record_checksums(dir: &Path) -> Result<()> {
    match read_checked(dir)?.kind {
        // Its pins are rewritten with it (members just given checksums changed).
        KindMeta::Ensemble { .. } => repin(dir),
        _ => rewrite(dir, None, |_| {}),
    }
}

/// Pins the ensemble in `dir` to its members as they are now (after they were packed: a
/// packed member's `meta.json` records its pool, so its checksum changed).
pub fn repin(dir: &Path) -> Result<()> {
    let meta = read_checked(dir)?;
    let KindMeta::Ensemble { members, .. } = &meta.kind else {
        return Err(Error::Invalid(format!(
            "{} is no ensemble: only an ensemble pins members",
            dir.display()
        )));
    };
    let mut pins = Vec::with_capacity(members.len());
    for m in members {
        let p = if m.is_absolute() {
            m.clone()
        } else {
            dir.join(m)
        };
        pins.push(meta_sha256(&modeldir::read_meta(&p)?));
    }
    rewrite(dir, None, |meta| {
        if let KindMeta::Ensemble {
            member_meta_sha256, ..
        } = &mut meta.kind
        {
            *member_meta_sha256 = pins;
        }
    })
}
