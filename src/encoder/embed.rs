//! Sentence embeddings for the store: load any Hugging Face BERT-family directory, turn texts
//! into L2-normalized vectors, fast on CPU.
//!
//! Speed comes from length-sorted batching (little padding; the corpus averages 28 characters,
//! max 162), buffers reused across batches, the fused inference ops of
//! [`crate::encoder::bert::BertModel`] and, when the CPU has AVX-512, gemm's `x86-v4` kernels.
//! This module owns loading, tokenizing, batching and the embedding benchmark; where vectors are
//! stored is the store's business.

use crate::encoder::bert::{pool, BertModel, Config, Pooling};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

/// How an [`Encoder`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EncoderOptions {
    /// How token states become one vector (m3e uses mean).
    pub pooling: Pooling,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included; longer texts are truncated.
    /// Capped at the model's `max_position_embeddings`.
    pub max_len: usize,
    /// Sentences per forward pass.
    pub batch_size: usize,
    /// Worker threads for the matrix products; 0 = candle's default (one per core, or
    /// `RAYON_NUM_THREADS`).
    pub threads: usize,
}

impl Default for EncoderOptions {
    /// Mean pooling, 128 tokens, batches of 64, default threads.
    fn default() -> Self {
        EncoderOptions {
            pooling: Pooling::Mean,
            max_len: 128,
            batch_size: 64,
            threads: 0,
        }
    }
}

/// Which implementation runs the network at inference. Both give the same numbers (tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// [`crate::encoder::bert::BertModel`] with `train = false`.
    #[default]
    Ours,
    /// `candle_transformers::models::bert::BertModel`.
    CandleTransformers,
}

#[allow(clippy::large_enum_variant)] // one per loaded encoder
enum Net {
    Ours(BertModel),
    Candle(candle_transformers::models::bert::BertModel),
}

/// A loaded sentence encoder. `Sync`: share it across threads by reference.
pub struct Encoder {
    net: Net,
    tokenizer: Tokenizer,
    cfg: Config,
    opts: EncoderOptions,
    id: String,
    dir: PathBuf,
    pool: Option<rayon::ThreadPool>,
    pad_id: u32,
}

/// The files of a model directory.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors` or `pytorch_model.bin`.
    pub weights: PathBuf,
    /// `tokenizer.json`, else `vocab.txt`.
    pub tokenizer: PathBuf,
}

impl ModelFiles {
    /// Finds the files in `dir`. Errors: [`crate::Error::Input`] naming what is missing.
    pub fn find(dir: &Path) -> crate::Result<ModelFiles> {
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(crate::Error::input(
                dir,
                0,
                "no config.json: expected a Hugging Face BERT model directory",
            ));
        }
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                crate::Error::input(dir, 0, "no model.safetensors or pytorch_model.bin")
            })?;
        let tokenizer = ["tokenizer.json", "vocab.txt"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| crate::Error::input(dir, 0, "no tokenizer.json or vocab.txt"))?;
        Ok(ModelFiles {
            config,
            weights,
            tokenizer,
        })
    }
}

/// Loads the weights of `files` into a `VarBuilder` (mmap for safetensors).
pub(crate) fn weights_builder(
    files: &ModelFiles,
    dev: &Device,
) -> crate::Result<VarBuilder<'static>> {
    let w = &files.weights;
    let r = if w.extension().is_some_and(|e| e == "safetensors") {
        // SAFETY: the file is mapped read-only; like every mmap user we assume nobody truncates
        // it while we run.
        unsafe { VarBuilder::from_mmaped_safetensors(&[w], DType::F32, dev) }
    } else {
        VarBuilder::from_pth(w, DType::F32, dev)
    };
    r.map_err(|e| crate::Error::model_file(w, e))
}

/// BERT's special tokens; a `vocab.txt` tokenizer reads them as themselves where a text
/// contains them.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Loads `tokenizer.json`, or builds BERT's WordPiece tokenizer from `vocab.txt`
/// (lower-casing as `tokenizer_config.json`'s `do_lower_case` says, default true), truncating
/// at `max_len` tokens and never padding (batches pad themselves).
pub fn load_tokenizer(path: &Path, max_len: usize) -> crate::Result<Tokenizer> {
    let terr = |e: tokenizers::Error| crate::Error::input(path, 0, e.to_string());
    let mut tok = if path.file_name().is_some_and(|f| f == "vocab.txt") {
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::bert::BertProcessing;
        let lowercase = path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
            .unwrap_or(true);
        let wp = WordPiece::from_file(&path.to_string_lossy())
            .unk_token("[UNK]".into())
            .build()
            .map_err(terr)?;
        let mut tok = Tokenizer::new(wp);
        let id = |t: &str| {
            tok.token_to_id(t)
                .ok_or_else(|| crate::Error::input(path, 0, format!("vocab has no {t}")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .map_err(terr)?;
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        tok.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        // As in a tokenizer.json: the special tokens written in a text are those tokens (a
        // knowledge or context separator is one [SEP], not "[", "sep", "]").
        let specials: Vec<_> = SPECIAL_TOKENS
            .into_iter()
            .filter(|t| tok.token_to_id(t).is_some())
            .map(|t| tokenizers::AddedToken::from(t, true))
            .collect();
        tok.add_special_tokens(specials).map_err(terr)?;
        tok
    } else {
        Tokenizer::from_file(path).map_err(terr)?
    };
    tok.with_padding(None);
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(terr)?;
    Ok(tok)
}

impl Encoder {
    /// Loads a BERT-family model directory: `config.json`, `model.safetensors` or
    /// `pytorch_model.bin`, `tokenizer.json` or `vocab.txt`. Runs on the CPU.
    ///
    /// Cost: maps the weights and hashes every file once for [`Encoder::encoder_id`]
    /// (~0.3 s for a 100 MB model). Errors: [`crate::Error::Input`] for a missing or bad file,
    /// [`crate::Error::ModelFile`] or [`crate::Error::Candle`] for weights that do not fit the
    /// config.
    pub fn load(dir: &Path, opts: EncoderOptions) -> crate::Result<Encoder> {
        Encoder::load_with_engine(dir, opts, Engine::default())
    }

    /// [`Encoder::load`] with a chosen inference implementation.
    pub fn load_with_engine(
        dir: &Path,
        mut opts: EncoderOptions,
        engine: Engine,
    ) -> crate::Result<Encoder> {
        let files = ModelFiles::find(dir)?;
        let cfg = Config::from_file(&files.config)?;
        if opts.batch_size == 0 {
            return Err(crate::Error::Invalid("batch size must be positive".into()));
        }
        opts.max_len = opts.max_len.clamp(2, cfg.max_position_embeddings);
        let dev = Device::Cpu;
        let vb = weights_builder(&files, &dev)?;
        let net = match engine {
            Engine::Ours => Net::Ours(BertModel::load(vb, &cfg)?),
            Engine::CandleTransformers => Net::Candle(
                candle_transformers::models::bert::BertModel::load(vb, &cfg.to_candle())
                    .map_err(|e| crate::Error::model_file(&files.weights, e))?,
            ),
        };
        let tokenizer = load_tokenizer(&files.tokenizer, opts.max_len)?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(cfg.pad_token_id as u32);
        let id = model_id(&files, &opts)?;
        let pool = if opts.threads > 0 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(opts.threads)
                    .build()
                    .map_err(|e| crate::Error::Model(format!("thread pool: {e}")))?,
            )
        } else {
            None
        };
        Ok(Encoder {
            net,
            tokenizer,
            cfg,
            opts,
            id,
            dir: dir.to_path_buf(),
            pool,
            pad_id,
        })
    }

    /// A stable id of what produces the vectors: the first 16 hex digits of SHA-256 over
    /// config.json, the weight file, the tokenizer file, the pooling and `max_len`. Vectors
    /// with different ids must not be mixed.
    pub fn encoder_id(&self) -> &str {
        &self.id
    }

    /// Vector length (the model's hidden size).
    pub fn dim(&self) -> usize {
        self.cfg.hidden_size
    }

    /// The options in force (`max_len` after capping).
    pub fn options(&self) -> &EncoderOptions {
        &self.opts
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Token ids of each text (`[CLS] … [SEP]`, truncated at `max_len`), in input order.
    pub fn tokenize(&self, texts: &[&str]) -> crate::Result<Vec<Vec<u32>>> {
        token_ids(&self.tokenizer, texts)
    }

    /// Embeds `texts`; returns one L2-normalized vector of [`Encoder::dim`] floats per text, in
    /// input order (so cosine similarity is a dot product).
    ///
    /// Texts are sorted by token length and run in batches of `batch_size`, each padded only to
    /// its longest member. `progress` is called after every batch with the number of texts done
    /// so far. Cost: one encoder forward pass per batch; docs/benchmarks.md gives the measured
    /// sentences/s of m3e-small, next to PyTorch's on the same sentences.
    pub fn encode(
        &self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> crate::Result<Vec<Vec<f32>>> {
        self.encode_batched(texts, self.opts.batch_size, true, progress)
    }

    /// [`Encoder::encode`] with an explicit batch size and ordering: `sorted = false` keeps
    /// input order inside batches (what a naive loop does; for benchmarks).
    pub fn encode_batched(
        &self,
        texts: &[&str],
        batch_size: usize,
        sorted: bool,
        progress: &mut dyn FnMut(usize),
    ) -> crate::Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts)?;
        self.encode_ids(&ids, batch_size, sorted, progress)
    }

    /// Embeds already tokenized texts (see [`Encoder::tokenize`]).
    pub fn encode_ids(
        &self,
        ids: &[Vec<u32>],
        batch_size: usize,
        sorted: bool,
        progress: &mut dyn FnMut(usize),
    ) -> crate::Result<Vec<Vec<f32>>> {
        let batch_size = batch_size.max(1);
        let mut order: Vec<usize> = (0..ids.len()).collect();
        if sorted {
            order.sort_by_key(|&i| ids[i].len());
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        let mut id_buf: Vec<u32> = Vec::new();
        let mut mask_buf: Vec<u32> = Vec::new();
        let mut done = 0;
        for chunk in order.chunks(batch_size) {
            let width = pad_batch(ids, chunk, self.pad_id, &mut id_buf, &mut mask_buf);
            let rows = match &self.pool {
                Some(p) => p.install(|| self.forward_batch(&id_buf, &mask_buf, chunk.len(), width)),
                None => self.forward_batch(&id_buf, &mask_buf, chunk.len(), width),
            }?;
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
            done += chunk.len();
            progress(done);
        }
        Ok(out)
    }

    fn forward_batch(
        &self,
        ids: &[u32],
        mask: &[u32],
        batch: usize,
        width: usize,
    ) -> crate::Result<Vec<Vec<f32>>> {
        let dev = Device::Cpu;
        let ids = Tensor::from_slice(ids, (batch, width), &dev)?;
        let mask = Tensor::from_slice(mask, (batch, width), &dev)?;
        let types = ids.zeros_like()?;
        let hidden = match &self.net {
            Net::Ours(m) => m.forward_t(&ids, &types, &mask, false)?,
            Net::Candle(m) => m.forward(&ids, &types, Some(&mask))?,
        };
        let v = pool(&hidden, &mask, self.opts.pooling)?;
        let norm = v.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(v.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// Token ids of each text as `tok` encodes it (special tokens added), in input order.
pub(crate) fn token_ids(tok: &Tokenizer, texts: &[&str]) -> crate::Result<Vec<Vec<u32>>> {
    let enc = tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| crate::Error::Model(format!("tokenizer: {e}")))?;
    Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
}

/// Writes the rows `chunk` of `ids` into `id_buf`/`mask_buf` (cleared first) as a row-major
/// `chunk.len() × width` batch, padded with `pad` to its longest row (at least 1); the mask is
/// 1 on real tokens and 0 on padding. Returns `width`.
pub(crate) fn pad_batch(
    ids: &[Vec<u32>],
    chunk: &[usize],
    pad: u32,
    id_buf: &mut Vec<u32>,
    mask_buf: &mut Vec<u32>,
) -> usize {
    let width = chunk
        .iter()
        .map(|&i| ids[i].len())
        .max()
        .unwrap_or(0)
        .max(1);
    id_buf.clear();
    mask_buf.clear();
    for &i in chunk {
        let row = &ids[i];
        id_buf.extend_from_slice(row);
        id_buf.resize(id_buf.len() + width - row.len(), pad);
        mask_buf.resize(mask_buf.len() + row.len(), 1);
        mask_buf.resize(mask_buf.len() + width - row.len(), 0);
    }
    width
}

fn model_id(files: &ModelFiles, opts: &EncoderOptions) -> crate::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in [&files.config, &files.weights, &files.tokenizer] {
        let mut f = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
        // Length-prefix each part so that moving bytes between files changes the id.
        let len = f.metadata().map_err(|e| crate::Error::io(path, e))?.len();
        h.update(len.to_le_bytes());
        loop {
            let n = f.read(&mut buf).map_err(|e| crate::Error::io(path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    h.update(opts.pooling.name().as_bytes());
    h.update((opts.max_len as u64).to_le_bytes());
    let digest = h.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// One timed pass of [`bench_embed`].
#[derive(Debug, Clone, Serialize)]
pub struct EmbedRun {
    /// Sentences per forward pass.
    pub batch_size: usize,
    /// Whether batches were length-sorted.
    pub sorted: bool,
    /// Sentences embedded.
    pub sentences: usize,
    /// Wall time, seconds, tokenization included.
    pub secs: f64,
    /// `sentences / secs`.
    pub sentences_per_sec: f64,
    /// Token slots computed (padding included).
    pub padded_tokens: usize,
    /// Real tokens (padding excluded).
    pub real_tokens: usize,
}

/// Result of [`bench_embed`].
#[derive(Debug, Clone, Serialize)]
pub struct EmbedBench {
    /// [`Encoder::encoder_id`].
    pub encoder_id: String,
    /// Vector length.
    pub dim: usize,
    /// Token cap in force.
    pub max_len: usize,
    /// Worker threads (0 = default).
    pub threads: usize,
    /// rayon threads actually available.
    pub effective_threads: usize,
    /// Whether the CPU has AVX-512F (gemm uses it only when built with the `x86-v4` feature).
    pub avx512: bool,
    /// Seconds to load the model (hashing included).
    pub load_secs: f64,
    /// (a) corpus order, batches of 32.
    pub corpus_order: EmbedRun,
    /// (b) length-sorted, batches of 64.
    pub length_sorted: EmbedRun,
    /// `length_sorted.sentences_per_sec / corpus_order.sentences_per_sec`.
    pub speedup: f64,
    /// Largest difference between the two runs' vectors (should be ~1e-6: same model).
    pub max_abs_diff: f32,
}

/// Which pass [`bench_embed`] is in, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPhase {
    /// Corpus order, batches of 32.
    CorpusOrder,
    /// Length-sorted, batches of 64.
    LengthSorted,
}

/// Measures embedding throughput of the model in `encoder_dir` on `texts`, in one run:
/// (a) corpus order in batches of 32, then (b) length-sorted batches of 64 (PyTorch's two
/// reference setups, see scripts/bench_embed_torch.py). `opts` gives pooling, `max_len` and
/// threads; its batch size is ignored. A warm-up batch runs first and is not timed.
/// `progress(phase, done)` follows each batch. Errors as [`Encoder::load`] and
/// [`Encoder::encode`].
pub fn bench_embed(
    encoder_dir: &Path,
    texts: &[&str],
    opts: &EncoderOptions,
    progress: &mut dyn FnMut(BenchPhase, usize),
) -> crate::Result<EmbedBench> {
    let t = Instant::now();
    let enc = Encoder::load(encoder_dir, opts.clone())?;
    let load_secs = t.elapsed().as_secs_f64();
    let warm: Vec<&str> = texts.iter().take(8).copied().collect();
    enc.encode_batched(&warm, 8, false, &mut |_| {})?;

    let mut run = |batch_size: usize, sorted: bool, phase: BenchPhase| {
        let t = Instant::now();
        let ids = enc.tokenize(texts)?;
        let vecs = enc.encode_ids(&ids, batch_size, sorted, &mut |n| progress(phase, n))?;
        let secs = t.elapsed().as_secs_f64();
        let (padded_tokens, real_tokens) = token_counts(&ids, batch_size, sorted);
        Ok::<_, crate::Error>((
            EmbedRun {
                batch_size,
                sorted,
                sentences: texts.len(),
                secs,
                sentences_per_sec: texts.len() as f64 / secs.max(1e-9),
                padded_tokens,
                real_tokens,
            },
            vecs,
        ))
    };
    let (a, va) = run(32, false, BenchPhase::CorpusOrder)?;
    let (b, vb) = run(64, true, BenchPhase::LengthSorted)?;
    let max_abs_diff = va
        .iter()
        .zip(&vb)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max);
    Ok(EmbedBench {
        encoder_id: enc.encoder_id().to_string(),
        dim: enc.dim(),
        max_len: enc.options().max_len,
        threads: opts.threads,
        effective_threads: if opts.threads > 0 {
            opts.threads
        } else {
            rayon::current_num_threads()
        },
        avx512: cpu_has_avx512(),
        load_secs,
        speedup: b.sentences_per_sec / a.sentences_per_sec.max(1e-9),
        corpus_order: a,
        length_sorted: b,
        max_abs_diff,
    })
}

fn token_counts(ids: &[Vec<u32>], batch_size: usize, sorted: bool) -> (usize, usize) {
    let mut lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    if sorted {
        lens.sort_unstable();
    }
    let padded = lens
        .chunks(batch_size.max(1))
        .map(|c| c.len() * c.iter().max().copied().unwrap_or(0))
        .sum();
    (padded, lens.iter().sum())
}

/// Whether the CPU supports AVX-512F.
pub fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::bert::tests::max_abs_diff;
    use crate::testkit::tiny::{write_random_checkpoint, TinyBertSpec, WeightFormat};

    const SENTENCES: [&str; 5] = [
        "现在 好 终于 如愿以偿",
        "我 很 焦虑 担心 明天 的 考试",
        "他 愤怒 地 拍 着 桌子",
        "",
        "望 一眼 背 身 而 卧 妻 如果 她 知道 我的 想法 一定 又 会 那 句 切 又 自作 多 情",
    ];

    fn spec() -> TinyBertSpec {
        TinyBertSpec {
            texts: SENTENCES.iter().map(|s| s.to_string()).collect(),
            ..TinyBertSpec::default()
        }
    }

    /// Vectors equal to 4 places (see `bert::tests::max_abs_diff`).
    fn close(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| max_abs_diff(x, y) < 1e-4)
    }

    fn tiny_dir(spec: &TinyBertSpec, seed: u64) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        write_random_checkpoint(d.path(), spec, seed).unwrap();
        d
    }

    #[test]
    fn vectors_are_unit_length_in_input_order_whatever_the_batching() {
        let d = tiny_dir(&spec(), 3);
        let enc = Encoder::load(d.path(), EncoderOptions::default()).unwrap();
        assert_eq!(enc.dim(), 32);
        let mut calls = vec![];
        let sorted = enc.encode(&SENTENCES, &mut |n| calls.push(n)).unwrap();
        assert_eq!(calls.last(), Some(&SENTENCES.len()));
        for v in &sorted {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert_eq!((n * 1e4).round() / 1e4, 1.0);
        }
        // One text at a time, in order, must give the same vectors.
        let single: Vec<Vec<f32>> = SENTENCES
            .iter()
            .map(|s| enc.encode(&[s], &mut |_| {}).unwrap().remove(0))
            .collect();
        assert!(close(&sorted, &single));
        let unsorted = enc
            .encode_batched(&SENTENCES, 2, false, &mut |_| {})
            .unwrap();
        assert!(close(&sorted, &unsorted));
        // Different sentences give different vectors.
        assert!(!close(&sorted[0..1], &sorted[1..2]));
    }

    #[test]
    fn chinese_text_tokenizes_to_known_ids() {
        let d = tiny_dir(&spec(), 3);
        let enc = Encoder::load(d.path(), EncoderOptions::default()).unwrap();
        let ids = enc.tokenize(&["我 很 焦虑"]).unwrap().remove(0);
        assert_eq!(ids.len(), 6); // [CLS] 我 很 焦 虑 [SEP]
        assert_eq!(ids[0], 2);
        assert_eq!(ids[5], 3);
        assert!(ids.iter().all(|&i| i != 1), "no [UNK] expected: {ids:?}");
        // A separator written in the text is the [SEP] token (ids 2 and 3 are [CLS] and
        // [SEP] in the tiny vocabulary), as in a tokenizer.json.
        let ids = enc.tokenize(&["我 [SEP] 很"]).unwrap().remove(0);
        assert_eq!(ids.len(), 5, "{ids:?}");
        assert_eq!((ids[0], ids[2], ids[4]), (2, 3, 3));
    }

    #[test]
    fn truncates_at_max_len() {
        let d = tiny_dir(&spec(), 3);
        let opts = EncoderOptions {
            max_len: 8,
            ..EncoderOptions::default()
        };
        let enc = Encoder::load(d.path(), opts).unwrap();
        let ids = enc.tokenize(&[SENTENCES[4]]).unwrap().remove(0);
        assert_eq!(ids.len(), 8);
        assert_eq!(ids[7], 3, "[SEP] kept at the end");
        assert_eq!(
            enc.encode(&[SENTENCES[4]], &mut |_| {}).unwrap()[0].len(),
            32
        );
    }

    #[test]
    fn our_bert_and_candle_transformers_agree() {
        let d = tiny_dir(&spec(), 5);
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let opts = EncoderOptions {
                pooling,
                ..EncoderOptions::default()
            };
            let a = Encoder::load_with_engine(d.path(), opts.clone(), Engine::Ours).unwrap();
            let b = Encoder::load_with_engine(d.path(), opts, Engine::CandleTransformers).unwrap();
            let va = a.encode(&SENTENCES, &mut |_| {}).unwrap();
            let vb = b.encode(&SENTENCES, &mut |_| {}).unwrap();
            assert!(close(&va, &vb));
        }
    }

    #[test]
    fn pytorch_bin_and_bert_prefix_load_to_the_same_vectors() {
        let base = tiny_dir(&spec(), 9);
        let pth = tiny_dir(
            &TinyBertSpec {
                format: WeightFormat::PytorchBin,
                bert_prefix: true,
                ..spec()
            },
            9,
        );
        assert!(pth.path().join("pytorch_model.bin").is_file());
        let a = Encoder::load(base.path(), EncoderOptions::default()).unwrap();
        let b = Encoder::load(pth.path(), EncoderOptions::default()).unwrap();
        let va = a.encode(&SENTENCES, &mut |_| {}).unwrap();
        let vb = b.encode(&SENTENCES, &mut |_| {}).unwrap();
        assert!(close(&va, &vb));
    }

    #[test]
    fn encoder_id_depends_on_weights_pooling_and_max_len() {
        let d1 = tiny_dir(&spec(), 1);
        let d1b = tiny_dir(&spec(), 1);
        let d2 = tiny_dir(&spec(), 2);
        let id = |d: &Path, pooling, max_len| {
            let opts = EncoderOptions {
                pooling,
                max_len,
                ..EncoderOptions::default()
            };
            Encoder::load(d, opts).unwrap().encoder_id().to_string()
        };
        let a = id(d1.path(), Pooling::Mean, 64);
        assert_eq!(a.len(), 16);
        assert_eq!(a, id(d1b.path(), Pooling::Mean, 64), "same files, same id");
        assert_ne!(a, id(d2.path(), Pooling::Mean, 64));
        assert_ne!(a, id(d1.path(), Pooling::Cls, 64));
        assert_ne!(a, id(d1.path(), Pooling::Mean, 32));
    }

    #[test]
    fn encoder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Encoder>();
    }

    #[test]
    fn missing_files_are_input_errors() {
        let d = tempfile::tempdir().unwrap();
        let err = Encoder::load(d.path(), EncoderOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, crate::Error::Input { .. }), "{err}");
        assert!(err.to_string().contains("config.json"));
    }

    #[test]
    fn threads_option_gives_same_vectors() {
        let d = tiny_dir(&spec(), 4);
        let one = EncoderOptions {
            threads: 1,
            ..EncoderOptions::default()
        };
        let a = Encoder::load(d.path(), one).unwrap();
        let b = Encoder::load(d.path(), EncoderOptions::default()).unwrap();
        assert!(close(
            &a.encode(&SENTENCES, &mut |_| {}).unwrap(),
            &b.encode(&SENTENCES, &mut |_| {}).unwrap()
        ));
    }

    #[test]
    fn bench_embed_runs_both_setups() {
        let d = tiny_dir(&spec(), 4);
        let texts: Vec<&str> = SENTENCES.iter().cycle().take(70).copied().collect();
        let mut phases = vec![];
        let r = bench_embed(d.path(), &texts, &EncoderOptions::default(), &mut |p, _| {
            phases.push(p)
        })
        .unwrap();
        assert_eq!(r.corpus_order.sentences, 70);
        assert_eq!(r.corpus_order.batch_size, 32);
        assert_eq!(r.length_sorted.batch_size, 64);
        assert!(r.length_sorted.padded_tokens <= r.corpus_order.padded_tokens);
        assert!(r.max_abs_diff < 1e-4);
        assert!(
            phases.contains(&BenchPhase::CorpusOrder) && phases.contains(&BenchPhase::LengthSorted)
        );
    }

    /// Opt-in: EMOKNOW_TEST_ENCODER=/path/to/m3e-small cargo test --lib encoder -- --ignored
    #[test]
    #[ignore]
    fn real_encoder_puts_anxiety_near_anxiety() {
        let Ok(dir) = std::env::var("EMOKNOW_TEST_ENCODER") else {
            panic!("set EMOKNOW_TEST_ENCODER to a BERT model directory (e.g. m3e-small)");
        };
        // (text, is Anxiety) — short sentences in the corpus's segmented style.
        let labelled = [
            ("我 很 担心 明天 的 考试 会 不 及格", true),
            ("心里 七上八下 的 不 知道 结果 会 怎样", true),
            ("想到 孩子 还 没 回家 我 焦急 万分", true),
            ("一 整夜 都 在 担忧 母亲 的 病情", true),
            ("他 紧张 得 手心 直 冒汗 生怕 出错", true),
            ("今天 阳光 明媚 我们 一起 去 公园 玩", false),
            ("这 家 餐厅 的 菜 真 好吃", false),
            ("他 气得 把 杯子 摔 在 地上", false),
            ("收到 礼物 的 那 一刻 她 笑 了", false),
            ("股市 今天 小幅 上涨 成交量 平稳", false),
            ("奶奶 去世 了 我 哭 了 很 久", false),
            ("我 爱 我的 家人", false),
        ];
        let query = "我 非常 焦虑 不安 害怕 面试 失败";
        let enc = Encoder::load(Path::new(&dir), EncoderOptions::default()).unwrap();
        let texts: Vec<&str> = labelled.iter().map(|(t, _)| *t).collect();
        let vs = enc.encode(&texts, &mut |_| {}).unwrap();
        let q = enc.encode(&[query], &mut |_| {}).unwrap().remove(0);
        let mut sims: Vec<(f32, bool)> = vs
            .iter()
            .zip(&labelled)
            .map(|(v, (_, a))| (v.iter().zip(&q).map(|(x, y)| x * y).sum(), *a))
            .collect();
        sims.sort_by(|a, b| b.0.total_cmp(&a.0));
        let anxious_in_top5 = sims[..5].iter().filter(|(_, a)| *a).count();
        assert!(anxious_in_top5 >= 3, "top-5: {sims:?}");
        assert!(sims[0].1, "nearest neighbour is not Anxiety: {sims:?}");
    }
}
