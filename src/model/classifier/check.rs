//! What a model directory must satisfy to load, loading itself (with bounds on depth, count and
//! sizes, refusing cycles), and the output paths training refuses.

use super::{frozen, Inner, KindMeta, Meta, Model, MODEL_FORMAT, STACK_DIR, VOCABULARY_FILE};
use crate::error::{Error, OutPathReason, Overlap, Result};
use crate::labels::Emotion;
use crate::model::decode::Candidates;
use crate::model::finetune::FinetuneModel;
use crate::model::linear::LinearModel;
use crate::model::mlp::Mlp;
use crate::model::modeldir::{self, FileSum};
use crate::neighbours::packed::{PackedPool, POOL_DIR};
use crate::text::{Normalizer, TextStyle, Vocabulary};
use sha2::{Digest, Sha256};
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Deepest nesting of ensembles a load follows.
const MAX_ENSEMBLE_DEPTH: usize = 8;
/// Most model directories one load reads (an ensemble and all it contains).
const MAX_LOADED_MODELS: usize = 64;
/// Largest `k` (kNN, attached neighbours) a model may ask for.
const MAX_K: usize = 100_000;
/// Largest embedding dimension a frozen or kNN model may name.
const MAX_ENCODER_DIM: usize = 1 << 16;

/// The error for a `meta.json` that is not as emoknow writes it.
fn edited(path: &Path, msg: String) -> Error {
    Error::ModelDamaged {
        dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        msg: format!(
            "{}: {msg}: not as emoknow writes it (edited by hand?); restore it or retrain the model",
            path.display()
        ),
    }
}

/// Parses `meta.json`, naming a kind's missing settings before serde would (its message
/// would not say which kind needs them).
pub(super) fn parse_meta(bytes: &[u8], path: &Path) -> Result<Meta> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::input(path, e.line(), format!("not an emoknow model: {e}")))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let needs: &[&str] = match kind {
        "linear" => &["linear"],
        "frozen" => &["mlp", "encoder"],
        "knn" => &["knn"],
        "finetune" => &["finetune"],
        "ensemble" => &["members"],
        _ => &[],
    };
    if let Some(what) = needs
        .iter()
        .find(|f| value.get(**f).is_none_or(serde_json::Value::is_null))
    {
        return Err(edited(
            path,
            format!("a {kind} model without its \"{what}\" settings"),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::input(path, 0, format!("not an emoknow model: {e}")))
}

/// Checks what serde cannot: labels, thresholds, and bounds on the sizes a load or prediction
/// would allocate. Errors name `path` (the meta.json).
fn check_meta(meta: &Meta, path: &Path) -> Result<()> {
    if meta.format != MODEL_FORMAT {
        return Err(Error::Invalid(format!(
            "{}: model format {}, this emoknow reads {MODEL_FORMAT}",
            path.display(),
            meta.format
        )));
    }
    let names: Vec<&str> = Emotion::ALL.iter().map(|e| e.name()).collect();
    if let Some(l) = meta.labels.iter().find(|l| !names.contains(&l.as_str())) {
        return Err(edited(
            path,
            format!(
                "unknown label {l:?} in \"labels\" (the labels are {})",
                names.join(", ")
            ),
        ));
    }
    if meta.labels != names {
        return Err(edited(
            path,
            format!(
                "\"labels\" is [{}], models output [{}] in that order",
                meta.labels.join(", "),
                names.join(", ")
            ),
        ));
    }
    for (t, name) in meta.thresholds.per_label.iter().zip(&names) {
        if !(t.is_finite() && (0.0..=1.0).contains(t)) {
            return Err(edited(
                path,
                format!("the threshold of {name} is {t}, outside [0, 1]"),
            ));
        }
    }
    if meta.calibration.as_ref().is_some_and(|c| !c.is_valid()) {
        return Err(edited(
            path,
            "\"calibration\" has a slope that is not positive, or a number that is not finite"
                .to_string(),
        ));
    }
    if meta.attach.neighbours_k > MAX_K {
        return Err(edited(
            path,
            format!("neighbours_k {} is above {MAX_K}", meta.attach.neighbours_k),
        ));
    }
    if meta.attach.context > MAX_K {
        return Err(edited(
            path,
            format!("context {} is above {MAX_K}", meta.attach.context),
        ));
    }
    let decay = meta.attach.context_decay;
    if !(decay > 0.0 && decay <= 1.0) {
        return Err(edited(
            path,
            format!("context_decay {decay} is outside (0, 1]"),
        ));
    }
    let encoder = match &meta.kind {
        KindMeta::Frozen { encoder, .. } => Some(encoder),
        KindMeta::Knn { encoder, .. } => encoder.as_ref(),
        _ => None,
    };
    if let Some(e) = encoder {
        if e.dim == 0 || e.dim > MAX_ENCODER_DIM {
            return Err(edited(
                path,
                format!(
                    "encoder {:?} has dimension {}, outside 1..={MAX_ENCODER_DIM}",
                    e.name, e.dim
                ),
            ));
        }
    }
    match &meta.kind {
        KindMeta::Frozen {
            stack_folds,
            linear,
            ..
        } if *stack_folds > 0 && linear.is_none() => Err(edited(
            path,
            "a frozen model without its \"linear\" settings".into(),
        )),
        KindMeta::Knn { knn, encoder, .. } => {
            if knn.k == 0 || knn.k > MAX_K {
                Err(edited(
                    path,
                    format!("kNN k = {}, outside 1..={MAX_K}", knn.k),
                ))
            } else if knn.dense && encoder.is_none() {
                Err(edited(
                    path,
                    "a knn model without its \"encoder\" settings".into(),
                ))
            } else {
                Ok(())
            }
        }
        KindMeta::Ensemble { members, .. } if members.is_empty() => {
            Err(edited(path, "an ensemble with no \"members\"".into()))
        }
        _ => Ok(()),
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// What `make` builds, shared in this process under `key` while anyone holds it: models
/// loading the same part (the members of an ensemble trained on one store: one normalizer,
/// one pool) build it once.
fn shared<T: Any + Send + Sync>(key: String, make: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
    type Cache = HashMap<(TypeId, String), Weak<dyn Any + Send + Sync>>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let mut map = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let k = (TypeId::of::<T>(), key);
    if let Some(live) = map.get(&k).and_then(Weak::upgrade) {
        if let Ok(t) = live.downcast::<T>() {
            return Ok(t);
        }
    }
    map.retain(|_, w| w.strong_count() > 0);
    let t = Arc::new(make()?);
    let any: Arc<dyn Any + Send + Sync> = t.clone();
    map.insert(k, Arc::downgrade(&any));
    Ok(t)
}

/// The checksums `files` records for `names` of a model directory, as one key (the directory
/// itself when they are not recorded).
fn files_key(dir: &Path, files: Option<&BTreeMap<String, FileSum>>, names: &[&str]) -> String {
    match files {
        Some(f) => names
            .iter()
            .map(|n| f.get(*n).map_or("", |s| s.sha256.as_str()))
            .collect::<Vec<_>>()
            .join("/"),
        None => dir.display().to_string(),
    }
}

/// The normalizer of a model recording `style`, with the vocabulary file beside it.
fn load_normalizer(
    dir: &Path,
    style: &TextStyle,
    files: Option<&BTreeMap<String, FileSum>>,
) -> Result<Arc<Normalizer>> {
    let path = dir.join(VOCABULARY_FILE);
    let key = format!(
        "{}\0{}",
        serde_json::to_string(style).unwrap_or_default(),
        files_key(dir, files, &[VOCABULARY_FILE])
    );
    shared(key, || {
        let vocab = if path.exists() {
            Vocabulary::read(&path)?
        } else {
            Vocabulary::default()
        };
        Ok(Normalizer::new(style.clone(), vocab))
    })
}

/// SHA-256 of a `meta.json`, hex.
pub(super) fn meta_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Loads model directories, following ensemble members with a bound on depth and count and
/// refusing cycles.
#[derive(Default)]
pub(super) struct Loader {
    /// Canonical directories of the ensembles being loaded, outermost first.
    chain: Vec<PathBuf>,
    /// Directories read so far.
    loaded: usize,
}

impl Loader {
    pub(super) fn load(&mut self, dir: &Path) -> Result<Model> {
        let path = dir.join("meta.json");
        let bytes = modeldir::read_meta(dir)?;
        let canon = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let meta = parse_meta(&bytes, &path)?;
        check_meta(&meta, &path)?;
        if let Some(files) = &meta.files {
            modeldir::verify(dir, &path, files)?;
        }
        self.loaded += 1;
        if self.loaded > MAX_LOADED_MODELS {
            return Err(Error::input(
                &path,
                0,
                format!("the ensemble reads more than {MAX_LOADED_MODELS} model directories"),
            ));
        }
        let inner = match &meta.kind {
            KindMeta::Linear { .. } => Inner::Linear(LinearModel::load(dir)?),
            KindMeta::Frozen { stack_folds, .. } => {
                let head = Mlp::load(dir, "head")?;
                let want = frozen::in_dim(&meta);
                if head.in_dim() != want {
                    return Err(Error::ModelDamaged {
                        dir: dir.to_path_buf(),
                        msg: format!(
                            "{}: the head reads {} features, but {} (encoder dimension and knowledge) gives {want}: the head does not belong to this meta.json; retrain the model",
                            dir.join("head.safetensors").display(),
                            head.in_dim(),
                            path.display()
                        ),
                    });
                }
                let stack = match stack_folds {
                    0 => None,
                    _ => Some(LinearModel::load(&dir.join(STACK_DIR))?),
                };
                Inner::Frozen(head, stack)
            }
            KindMeta::Knn { .. } => Inner::Knn,
            KindMeta::Finetune { .. } => Inner::Finetune(Box::new(FinetuneModel::load(dir)?)),
            KindMeta::Ensemble {
                members,
                member_meta_sha256,
            } => Inner::Ensemble(self.load_members(
                dir,
                &path,
                &canon,
                members,
                member_meta_sha256,
            )?),
        };
        let text = match &meta.text_style {
            Some(style) => Some(load_normalizer(dir, style, meta.files.as_ref())?),
            None => None,
        };
        let pool = if PackedPool::exists(dir) {
            let names = PackedPool::FILES.map(|f| format!("{POOL_DIR}/{f}"));
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let key = files_key(dir, meta.files.as_ref(), &names);
            Some(shared(key, || PackedPool::read(dir)?.retriever())?)
        } else {
            None
        };
        let sets = match &meta.decode {
            Some(d) => Candidates::new(d).map_err(|e| edited(&path, e.to_string()))?,
            None => Candidates::independent(),
        };
        Ok(Model {
            meta,
            dir: dir.to_path_buf(),
            canon,
            inner,
            meta_sha256: meta_sha256(&bytes),
            text,
            pool,
            sets,
        })
    }

    fn load_members(
        &mut self,
        dir: &Path,
        path: &Path,
        canon: &Path,
        members: &[PathBuf],
        sha: &[String],
    ) -> Result<Vec<Model>> {
        if self.chain.len() >= MAX_ENSEMBLE_DEPTH {
            return Err(Error::input(
                path,
                0,
                format!("ensembles nested more than {MAX_ENSEMBLE_DEPTH} deep"),
            ));
        }
        if !sha.is_empty() && sha.len() != members.len() {
            return Err(edited(
                path,
                format!(
                    "{} member checksums for {} members",
                    sha.len(),
                    members.len()
                ),
            ));
        }
        self.chain.push(canon.to_path_buf());
        let mut out = Vec::with_capacity(members.len());
        let mut seen = HashSet::new();
        for m in members {
            let p = resolve(dir, m);
            let c = std::fs::canonicalize(&p)
                .map_err(|e| Error::input(path, 0, format!("member {}: {e}", p.display())))?;
            if self.chain.contains(&c) {
                let what = if c == canon {
                    "this ensemble itself".to_string()
                } else {
                    format!("the ensemble {} that contains it", c.display())
                };
                return Err(Error::input(
                    path,
                    0,
                    format!(
                        "member {} is {what}: an ensemble cannot contain itself; edit \"members\" or retrain the ensemble",
                        m.display()
                    ),
                ));
            }
            if !seen.insert(c) {
                return Err(Error::input(
                    path,
                    0,
                    format!("member {} is listed twice", m.display()),
                ));
            }
            let member = self.load(&p)?;
            out.push((p, member));
        }
        self.chain.pop();
        // Pinned members: checked once all are loaded (a cycle or a missing member is the
        // clearer error for a hand-edited list).
        for (i, (p, member)) in out.iter().enumerate() {
            if sha.get(i).is_some_and(|want| *want != member.meta_sha256) {
                return Err(Error::input(
                    path,
                    0,
                    format!(
                        "member {} has changed since this ensemble was trained (retrained?): its thresholds were tuned on the old one; train the ensemble again",
                        p.display()
                    ),
                ));
            }
        }
        Ok(out.into_iter().map(|(_, m)| m).collect())
    }
}

/// Refuses paths that training would destroy or that make no model: an `out` that is (or
/// holds, or lies inside) an ensemble member or a model such a member contains, or the
/// encoder directory; duplicate members, fewer than two. Returns the loaded members
/// (canonical directory, model) of an ensemble (none for other kinds).
pub(super) fn check_train_paths(
    encoder_dir: Option<&Path>,
    members: Option<&[PathBuf]>,
    out: &Path,
) -> Result<Vec<(PathBuf, Model)>> {
    if let Some(enc) = encoder_dir {
        if modeldir::absolute(enc)?.starts_with(out) {
            return Err(Error::out_path(
                out,
                OutPathReason::Encoder {
                    encoder: enc.to_path_buf(),
                },
            ));
        }
    }
    let Some(members) = members else {
        return Ok(Vec::new());
    };
    if members.len() < 2 {
        return Err(Error::TooFewMembers {
            given: members.len(),
        });
    }
    let mut loaded: Vec<(PathBuf, Model)> = Vec::with_capacity(members.len());
    for m in members {
        let canon = std::fs::canonicalize(m).map_err(|e| Error::io(m, e))?;
        if loaded.iter().any(|(c, _)| *c == canon) {
            return Err(Error::DuplicateMember { member: m.clone() });
        }
        if modeldir::overlaps(&canon, out) {
            let overlap = if canon == out {
                Overlap::Is
            } else if out.starts_with(&canon) {
                Overlap::IsInside
            } else {
                Overlap::Holds
            };
            return Err(Error::out_path(
                out,
                OutPathReason::Member {
                    member: m.clone(),
                    overlap,
                },
            ));
        }
        let model = Model::load(m)?;
        if let Some(d) = model
            .dirs()
            .into_iter()
            .find(|d| modeldir::overlaps(d, out))
        {
            return Err(Error::out_path(
                out,
                OutPathReason::MemberReads {
                    member: m.clone(),
                    reads: d,
                },
            ));
        }
        loaded.push((canon, model));
    }
    // What loading the new ensemble will refuse, refused before it is trained.
    let depth = 1 + loaded.iter().map(|(_, m)| m.nesting()).max().unwrap_or(0);
    if depth > MAX_ENSEMBLE_DEPTH {
        return Err(Error::Setting {
            name: "members",
            msg: format!(
                "the ensemble would nest {depth} deep, and loading refuses ensembles nested more than {MAX_ENSEMBLE_DEPTH} deep"
            ),
        });
    }
    let dirs = 1 + loaded.iter().map(|(_, m)| m.dirs().len()).sum::<usize>();
    if dirs > MAX_LOADED_MODELS {
        return Err(Error::Setting {
            name: "members",
            msg: format!(
                "the ensemble would read {dirs} model directories, and loading refuses an ensemble that reads more than {MAX_LOADED_MODELS} model directories"
            ),
        });
    }
    Ok(loaded)
}
