//! `export parquet`: one row per example with its knowledge and vectors, read back by `ingest`.

use crate::model_cli::{ingest_split, setup, Setup};
use crate::util::{s, TestEnv};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

fn read(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1, "the test corpus fits one batch");
    batches[0].clone()
}

/// (id, text, labels) of every row, as plain values.
fn rows(b: &RecordBatch) -> Vec<(u64, String, Vec<String>)> {
    let id = b["id"].as_primitive::<UInt64Type>();
    let text = b["text"].as_string::<i32>();
    let labels = b["labels"].as_list::<i32>();
    (0..b.num_rows())
        .map(|i| {
            let l = labels.value(i);
            let l = l.as_string::<i32>();
            (
                id.value(i),
                text.value(i).to_string(),
                (0..l.len()).map(|j| l.value(j).to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn export_parquet_carries_knowledge_and_vectors_and_ingest_reads_it_back() {
    let Setup { env, encoder } = setup();
    env.run(&["embed", "--encoder", s(&encoder), "--name", "tiny"])
        .ok();
    env.run(&["knowledge", "retrieve", "-k", "3", "--source", "nb"])
        .ok();
    let answers = env.write(
        "answers.jsonl",
        "{\"label\": \"这段评论包含以下分类:\\nAnxiety\\n\\n理由:\\n担心 <b>考试</b>。\"}\n\
         {\"label\": \"这段评论包含以下分类:\\nJoy, Love\\n\\n理由:\\n孩子 笑 了。\"}\n",
    );
    env.import(&answers, "llm", "label", 1).ok();
    let n = env.stats()["examples"].as_u64().unwrap() as usize;

    let out = env.path("export");
    let summary = env
        .run(&["--json", "export", "parquet", "--out", s(&out)])
        .ok()
        .json();
    assert_eq!(summary["rows"], n);
    assert_eq!(summary["rationale_sources"], serde_json::json!(["llm"]));
    assert_eq!(summary["neighbour_sources"], serde_json::json!(["nb"]));
    let dim = summary["encoders"][0][1].as_u64().unwrap() as usize;
    assert_eq!(summary["encoders"][0][0], "tiny");

    let file = out.join("examples.parquet");
    let b = read(&file);
    assert_eq!(b.num_rows(), n);
    // Knowledge: the rationale of ids 1 and 2 only, as stored (raw keeps the markup).
    let sanitized = b["llm.sanitized"].as_string::<i32>();
    let raw = b["llm.raw"].as_string::<i32>();
    let asserted = b["llm.asserted"].as_list::<i32>();
    assert_eq!(sanitized.len() - sanitized.null_count(), 2);
    assert!(raw.value(0).contains("<b>考试</b>"), "{}", raw.value(0));
    assert_eq!(asserted.value(1).as_string::<i32>().value(0), "Love");
    // Neighbours: three per example, best first, never itself.
    let ids = b["id"].as_primitive::<UInt64Type>();
    let nb = b["nb.neighbour_ids"].as_list::<i32>();
    let scores = b["nb.neighbour_scores"].as_list::<i32>();
    for i in 0..n {
        let v = nb.value(i);
        let v = v.as_primitive::<UInt64Type>();
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|x| x != Some(ids.value(i))));
        let sc = scores.value(i);
        let sc = sc.as_primitive::<Float32Type>();
        assert!(sc.value(0) >= sc.value(2));
    }
    // Vectors: every example's, of the encoder's dimension, as `similar` scores them.
    let vec = b["vector.tiny"].as_fixed_size_list();
    assert_eq!(vec.value_length() as usize, dim);
    assert_eq!(vec.null_count(), 0);
    assert!(vec
        .value(0)
        .as_primitive::<Float32Type>()
        .values()
        .iter()
        .any(|x| *x != 0.0));

    // An earlier export is not overwritten unless asked.
    env.run(&["export", "parquet", "--out", s(&out)])
        .code(2)
        .stderr_has("exists")
        .stderr_has("--replace");
    env.run(&["export", "parquet", "--out", s(&out), "--replace"])
        .ok();

    // Round trip: another store ingests the file; its export says the same ids, texts, labels.
    let other = TestEnv::new();
    ingest_split(&other, &file, 1);
    let out2 = other.path("export");
    other.run(&["export", "parquet", "--out", s(&out2)]).ok();
    let b2 = read(&out2.join("examples.parquet"));
    assert_eq!(rows(&b), rows(&b2));
    assert_eq!(
        b["split"].as_string::<i32>(),
        b2["split"].as_string::<i32>()
    );
}

#[test]
fn a_parquet_file_with_a_bad_label_is_refused_whole_naming_the_row() {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use std::sync::Arc;
    let env = TestEnv::new();
    let mut text = StringBuilder::new();
    let mut labels = ListBuilder::new(StringBuilder::new());
    for (t, l) in [
        ("好 开心", "Joy"),
        ("很 高兴", "Happy"),
        ("担心", "Anxiety"),
    ] {
        text.append_value(t);
        labels.values().append_value(l);
        labels.append(true);
    }
    let batch = RecordBatch::try_from_iter([
        ("text", Arc::new(text.finish()) as Arc<dyn Array>),
        ("labels", Arc::new(labels.finish()) as Arc<dyn Array>),
    ])
    .unwrap();
    let path = env.path("bad.parquet");
    let f = std::fs::File::create(&path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    env.run(&["ingest", s(&path)])
        .code(2)
        .stderr_has("line 2")
        .stderr_has("Happy")
        .stderr_has("nothing was written");
    let st = env.run(&["--json", "stats"]);
    if st.code == 0 {
        assert_eq!(st.json()["examples"], 0, "nothing was written");
    }
}

#[test]
fn documents_and_positions_survive_the_parquet_round_trip() {
    let env = TestEnv::new();
    let rows = [
        (1, "b", 2, "后来 我们 和好 了"),
        (2, "a", 1, "早上 很 开心"),
        (3, "b", 1, "昨天 吵架 了"),
        (4, "a", 2, "晚上 也 开心"),
    ];
    let jsonl: String = rows
        .iter()
        .map(|(id, doc, pos, text)| {
            serde_json::json!({"id": id, "doc": doc, "position": pos, "text": text, "labels": ["Joy"]})
                .to_string()
                + "\n"
        })
        .collect();
    let f = env.write("docs.jsonl", jsonl);
    env.run(&["ingest", s(&f)]).ok();
    let out = env.path("export");
    env.run(&["export", "parquet", "--out", s(&out)]).ok();
    let b = read(&out.join("examples.parquet"));
    let doc = b["doc"].as_string::<i32>();
    let pos = b["position"].as_primitive::<arrow_array::types::UInt32Type>();
    let got: Vec<(String, u32)> = (0..b.num_rows())
        .map(|i| (doc.value(i).to_string(), pos.value(i)))
        .collect();
    let want: Vec<(String, u32)> = rows.iter().map(|r| (r.1.to_string(), r.2)).collect();
    assert_eq!(got, want);

    let other = TestEnv::new();
    other
        .run(&["ingest", s(&out.join("examples.parquet"))])
        .ok();
    let shown = |e: &TestEnv| e.run(&["--json", "show", "1"]).ok().json()["context"].clone();
    assert_eq!(shown(&env), shown(&other));
    assert_eq!(shown(&other)["before"][0]["id"], 3, "{}", shown(&other));
}
