//! Tiny random BERT checkpoints for tests: a Hugging Face-style directory (config.json, weights,
//! vocab.txt) small enough to build in a temp dir in milliseconds.
//!
//! The weights are drawn from a seeded generator, so the same spec and seed give the same bytes.
//! The vocab holds BERT's special tokens, ASCII, common Chinese characters and every character
//! of [`TinyBertSpec::texts`], so Chinese test sentences tokenize to real ids. This module owns
//! only writing such directories; reading them is [`crate::encoder::embed`]'s job.

use crate::encoder::bert::{BertModel, Config};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// BERT's special tokens, first in every generated vocab (ids 0..5).
pub use crate::encoder::embed::SPECIAL_TOKENS;

/// Common characters of the seed corpus and the eight emotion names, always in the vocab.
const COMMON_CHARS: &str = "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意动方期它头经长儿回位分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感见明问力理尔点文几定本公特做外孩相西果走将月十实向声车全信重三机工物气每并别真打太新比才便夫再书部水像眼等体却加电主界门利海受听表德少克代员许先口由死安写性马光白或住难望教命花结乐色更拉东神记处让母父应直字场平报友关放至张认接告入笑内英军候民岁往何度山觉路带万男边风解叫任金快原吃妈变通师立象数四失满战远格士音轻目条呢病始达深完今提求清王化空业思切怎非找片罗钱紧吗语元喜曾离飞科言干流欢约各即指合反题必该论交终林请医晚制球决传画保读运及则房早院量苦火布品近坐产答星精视五连司巴奇管类未朋且婚台夜青北队久乎越观落尽形影红爸百令周吧识步希亚术留市半热送兴造谈容极随演收首根讲整式取照办强石古华拿计您装似足双妻尼转诉米称丽客南领节衣站黑刻统断福城故历惊脸选包紧争另建维绝树系伤示愿持千史谁准联妇纪基买志静阿诗独复痛消社算义竟确酒需单治卡幸兰念举仅钟怕共毛句息功官待究跟穿室易游程号居考突皮哪费倒价图具刚脑永歌响商礼细专黄块脚味灵改据般破引食仍存众注笔甚某沉血备习校默务土微娘须试怀料调广苏显赛查密议底列富梦错座参八除跑亮假印设线温虽掉京初养香停际致阳纸李纳验助激够严证帝饭忘趣支春集丈木研班普导顿睡展跳获艺六波察群皇段急庭创区奥器谢弟店否害草排背止组州朝封睛板角况曲馆育忙质河续哥呼若推境遇雨标姐充围案伦护冷警贝著雪索剧啊船险烟依斗值帮汉慢佛肯闻唱沙局伯族低玩资屋击速顾泪洲团圣旁堂兵七露园牛哭旅街劳型烈姑陈莫鱼异抱宝权鲁简态级票怪寻杀律胜份汽右洋范床舞秘午登楼贵吸责例追较职属渐左录丝牙党继托赶章智冲叶胡吉卖坚喝肉遗救修松临藏担戏善卫药悲敢靠伊村戴词森耳差短祖云规窗散迷油旧适乡架恩投弹铁博雷府压超负勒杂醒洗采毫嘴毕九冰既状乱景席珍童顶派素脱农疑练野按犯拍征坏骨余承置彩灯巨琴免环姆暗换技翻束增忍餐洛塞缺忆判欧层付阵玛批岛项狗休懂武革良恶恋委拥娜妙探呀营退摇弄桌熟诺宣银势奖宫忽套康供优课鸟喊降夏困刘罪亡鞋健模败伴守挥鲜财孤枪禁恐伙杰迹妹遍盖副坦牌江顺秋萨菜划授归浪听凡预奶雄升编典袋莱含盛济蒙棋端腿招释介烧误乾坤焦虑期待厌恶惊讶愤怒喜悦伤心开怨恨担忧害羞哀愁盼舍";

/// Format of the generated weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// `model.safetensors`.
    #[default]
    Safetensors,
    /// `pytorch_model.bin`: a zip of a pickle and raw tensor storages, as `torch.save` writes.
    PytorchBin,
}

/// Shape and contents of a tiny random checkpoint.
#[derive(Debug, Clone)]
pub struct TinyBertSpec {
    /// Hidden width (divisible by `num_attention_heads`).
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Longest input in tokens.
    pub max_position_embeddings: usize,
    /// Texts whose characters are added to the vocab.
    pub texts: Vec<String>,
    /// Weight file format.
    pub format: WeightFormat,
    /// Prefix every tensor name with `bert.` (as `BertForSequenceClassification` checkpoints do).
    pub bert_prefix: bool,
}

impl Default for TinyBertSpec {
    /// 2 layers, hidden 32, 4 heads, intermediate 64, 128 positions, safetensors, no prefix.
    fn default() -> Self {
        TinyBertSpec {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 128,
            texts: Vec::new(),
            format: WeightFormat::Safetensors,
            bert_prefix: false,
        }
    }
}

/// The vocab a spec produces: specials, ASCII, common Chinese characters, then the characters
/// of `texts`, each once, in that order.
pub fn tiny_vocab(texts: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut vocab: Vec<String> = Vec::new();
    let mut push = |s: String, vocab: &mut Vec<String>| {
        if seen.insert(s.clone()) {
            vocab.push(s);
        }
    };
    for s in SPECIAL_TOKENS {
        push(s.to_string(), &mut vocab);
    }
    for c in (b'!'..=b'~').map(char::from) {
        push(c.to_string(), &mut vocab);
    }
    for c in "，。！？、：；“”‘’（）《》…—"
        .chars()
        .chain(COMMON_CHARS.chars())
    {
        push(c.to_string(), &mut vocab);
    }
    for t in texts {
        for c in t.chars().filter(|c| !c.is_whitespace()) {
            push(c.to_string(), &mut vocab);
        }
    }
    vocab
}

/// Writes `config.json`, the weights (`model.safetensors` or `pytorch_model.bin`) and
/// `vocab.txt` of a random BERT into `dir` (created if missing).
///
/// The same spec and seed write the same files. Errors: [`crate::Error::Io`] on write failure,
/// [`crate::Error::Model`] for an impossible spec (heads not dividing the hidden size).
pub fn write_random_checkpoint(dir: &Path, spec: &TinyBertSpec, seed: u64) -> crate::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let vocab = tiny_vocab(&spec.texts);
    let cfg = Config {
        vocab_size: vocab.len(),
        hidden_size: spec.hidden_size,
        num_hidden_layers: spec.num_hidden_layers,
        num_attention_heads: spec.num_attention_heads,
        intermediate_size: spec.intermediate_size,
        max_position_embeddings: spec.max_position_embeddings,
        initializer_range: 0.02,
        ..Config::default()
    };
    cfg.check().map_err(crate::Error::Model)?;

    // Let the model itself list its tensors (names and shapes), then fill them.
    let dev = Device::Cpu;
    let vm = VarMap::new();
    BertModel::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg)?;
    let mut shapes = crate::encoder::bert::var_shapes(&vm);
    let h = spec.hidden_size;
    shapes.push(("pooler.dense.weight".into(), vec![h, h]));
    shapes.push(("pooler.dense.bias".into(), vec![h]));
    shapes.sort();

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let (mean, std) = if name.contains("LayerNorm.weight") {
            (1.0, 0.1)
        } else if name.contains("LayerNorm.bias") || name.ends_with(".bias") {
            (0.0, 0.1)
        } else if name.contains("embeddings") {
            (0.0, 0.5)
        } else {
            (0.0, 0.2)
        };
        let values: Vec<f32> = (0..n)
            .map(|_| (mean + std * normal(&mut rng)) as f32)
            .collect();
        let t = Tensor::from_vec(values, shape, &dev)?;
        let name = if spec.bert_prefix {
            format!("bert.{name}")
        } else {
            name
        };
        tensors.push((name, t));
    }

    match spec.format {
        WeightFormat::Safetensors => {
            let path = dir.join("model.safetensors");
            let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
            candle_core::safetensors::save(&map, &path)
                .map_err(|e| crate::Error::Model(format!("{}: {e}", path.display())))?;
        }
        WeightFormat::PytorchBin => write_pytorch_bin(&dir.join("pytorch_model.bin"), &tensors)?,
    }
    let config_path = dir.join("config.json");
    let bad = |e: serde_json::Error| crate::Error::Model(format!("{}: {e}", config_path.display()));
    let mut json = serde_json::to_value(&cfg).map_err(bad)?;
    json["architectures"] = serde_json::json!(["BertModel"]);
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(&json).map_err(bad)?,
    )
    .map_err(|e| crate::Error::io(&config_path, e))?;
    let vocab_path = dir.join("vocab.txt");
    std::fs::write(&vocab_path, vocab.join("\n") + "\n")
        .map_err(|e| crate::Error::io(&vocab_path, e))?;
    Ok(())
}

/// A standard normal draw (Box-Muller), so only `rand` is needed.
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Writes f32 tensors as `torch.save(state_dict)` does (zip format, pickle protocol 2):
/// `archive/data.pkl` holds an OrderedDict of `torch._utils._rebuild_tensor_v2` calls whose
/// storages are the persistent ids `('storage', torch.FloatStorage, '<i>', 'cpu', numel)`, and
/// `archive/data/<i>` holds each storage's little-endian bytes.
pub fn write_pytorch_bin(path: &Path, tensors: &[(String, Tensor)]) -> crate::Result<()> {
    fn unicode(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn global(p: &mut Vec<u8>, module: &str, name: &str) {
        p.push(b'c');
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn tuple(p: &mut Vec<u8>, items: &[usize]) {
        p.push(b'(');
        for &i in items {
            int(p, i);
        }
        p.push(b't');
    }

    let mut pkl = vec![0x80, 2];
    global(&mut pkl, "collections", "OrderedDict");
    pkl.extend_from_slice(b")R(");
    let mut storages: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    for (i, (name, t)) in tensors.iter().enumerate() {
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        let dims = t.dims().to_vec();
        let strides = t.stride().to_vec();
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        unicode(&mut pkl, name);
        global(&mut pkl, "torch._utils", "_rebuild_tensor_v2");
        pkl.push(b'(');
        // Persistent id of the storage.
        pkl.push(b'(');
        unicode(&mut pkl, "storage");
        global(&mut pkl, "torch", "FloatStorage");
        unicode(&mut pkl, &i.to_string());
        unicode(&mut pkl, "cpu");
        int(&mut pkl, values.len());
        pkl.extend_from_slice(b"tQ");
        int(&mut pkl, 0); // storage offset
        tuple(&mut pkl, &dims);
        tuple(&mut pkl, &strides);
        pkl.push(0x89); // requires_grad = False
        global(&mut pkl, "collections", "OrderedDict");
        pkl.extend_from_slice(b")R"); // backward hooks
        pkl.extend_from_slice(b"tR");
        storages.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    pkl.extend_from_slice(b"u.");

    let file = std::fs::File::create(path).map_err(|e| crate::Error::io(path, e))?;
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let zerr = |e: zip::result::ZipError| crate::Error::Model(format!("{}: {e}", path.display()));
    let ioerr = |e: std::io::Error| crate::Error::io(path, e);
    zip.start_file("archive/data.pkl", opts).map_err(zerr)?;
    zip.write_all(&pkl).map_err(ioerr)?;
    zip.start_file("archive/byteorder", opts).map_err(zerr)?;
    zip.write_all(b"little").map_err(ioerr)?;
    for (i, bytes) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), opts)
            .map_err(zerr)?;
        zip.write_all(bytes).map_err(ioerr)?;
    }
    zip.start_file("archive/version", opts).map_err(zerr)?;
    zip.write_all(b"3\n").map_err(ioerr)?;
    zip.finish().map_err(zerr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_has_specials_first_and_text_chars() {
        let v = tiny_vocab(&["焦虑 的 夜 龘".to_string()]);
        assert_eq!(&v[..5], &SPECIAL_TOKENS);
        assert!(v.contains(&"龘".to_string()));
        assert!(v.contains(&"焦".to_string()));
        let unique: HashSet<_> = v.iter().collect();
        assert_eq!(unique.len(), v.len());
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        let spec = TinyBertSpec::default();
        write_random_checkpoint(a.path(), &spec, 1).unwrap();
        write_random_checkpoint(b.path(), &spec, 1).unwrap();
        write_random_checkpoint(c.path(), &spec, 2).unwrap();
        let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert_eq!(read(a.path()), read(b.path()));
        assert_ne!(read(a.path()), read(c.path()));
        let cfg = Config::from_file(&a.path().join("config.json")).unwrap();
        assert_eq!(cfg.hidden_size, 32);
        assert_eq!(cfg.vocab_size, tiny_vocab(&[]).len());
    }

    #[test]
    fn pytorch_bin_reads_back_through_candle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pytorch_model.bin");
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).unwrap();
        let b = Tensor::new(&[0.5f32, -0.5], &dev).unwrap();
        write_pytorch_bin(&path, &[("l.weight".into(), w), ("l.bias".into(), b)]).unwrap();
        let vb = VarBuilder::from_pth(&path, DType::F32, &dev).unwrap();
        let w2 = vb.get((2, 3), "l.weight").unwrap();
        assert_eq!(
            w2.to_vec2::<f32>().unwrap(),
            vec![vec![1., 2., 3.], vec![4., 5., 6.]]
        );
        assert_eq!(
            vb.get(2, "l.bias").unwrap().to_vec1::<f32>().unwrap(),
            [0.5, -0.5]
        );
    }
}
