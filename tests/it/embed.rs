//! The candle E5 embedder against the reference C engine of the package the
//! model comes from (fixture made by `tests/fixtures/e5/generate.sh`).

use kbqa::models::e5::{cosine, Kind, E5};
use serde::Deserialize;

use crate::util::{e5, repo};

#[derive(Deserialize)]
struct Fixture {
    model_sha256: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    vector: Vec<f32>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/e5/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn token_ids_and_vectors_match_the_reference_engine() {
    let f = fixture();
    assert_eq!(f.model_sha256, kbqa::models::fetch::E5_SMALL_Q4.sha256);
    assert!(f.cases.len() >= 30);
    let model: &E5 = e5();
    let (bos, eos) = model.specials();
    let mut worst = (1.0f32, String::new());
    for case in &f.cases {
        let content = model.encode(&case.text).unwrap();
        let mut ids = vec![bos];
        ids.extend(&content);
        ids.push(eos);
        assert_eq!(ids, case.ids, "token ids differ for {:?}", case.text);
        let v = model.embed_ids(&content).unwrap();
        let c = cosine(&v, &case.vector);
        if c < worst.0 {
            worst = (c, case.text.chars().take(40).collect());
        }
        assert!(c >= 0.99, "cosine {c} for {:?}", case.text);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    eprintln!("worst cosine {:.5} for {:?}", worst.0, worst.1);
}

#[test]
fn prefixes_are_the_e5_ones() {
    let model = e5();
    assert_eq!(
        model.token_ids("什么是RLHF？", Kind::Query).unwrap(),
        model.encode("query: 什么是RLHF？").unwrap()
    );
    assert_eq!(
        model.token_ids("x", Kind::Passage).unwrap(),
        model.encode("passage: x").unwrap()
    );
}

#[test]
fn related_texts_are_closer_than_unrelated_ones() {
    let model = e5();
    let q = model.embed("为什么要用GPU训练大模型", Kind::Query).unwrap();
    let near = model
        .embed(
            "GPU相较CPU显著的特点就是,计算单元多、逻辑简单",
            Kind::Passage,
        )
        .unwrap();
    let far = model
        .embed("澳大利亚的首都是堪培拉。", Kind::Passage)
        .unwrap();
    assert!(cosine(&q, &near) > cosine(&q, &far) + 0.02);
}

#[test]
fn a_batch_gives_the_same_vectors_as_one_at_a_time() {
    let model = e5();
    let long = "大模型训练需要大量的GPU。".repeat(120); // > 510 tokens: two windows
    let texts = [
        "什么是RLHF？",
        "",
        long.as_str(),
        "EFLOPS means 10^18 FLOPS.",
    ];
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| model.token_ids(t, Kind::Passage).unwrap())
        .collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = model.embed_ids_batch(&refs).unwrap();
    for (one, many) in refs.iter().zip(&batch) {
        let single = model.embed_ids(one).unwrap();
        assert!(cosine(&single, many) > 0.99999, "{}", cosine(&single, many));
    }
}

#[test]
fn a_malformed_model_file_is_an_error_not_a_panic() {
    e5();
    let path = kbqa::models::fetch::models_dir(&crate::util::model_home())
        .join(kbqa::models::fetch::E5_SMALL_Q4.file_name);
    let good = std::fs::read(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 3].to_vec()),
        ("hidden size 0", {
            let mut b = good.clone();
            b[8..12].copy_from_slice(&0i32.to_le_bytes());
            b
        }),
        ("huge layer count", {
            let mut b = good.clone();
            b[12..16].copy_from_slice(&i32::MAX.to_le_bytes());
            b
        }),
        ("not a model", b"GGUF and then nothing".to_vec()),
    ];
    for (what, bytes) in cases {
        let p = dir.path().join("model.bin");
        std::fs::write(&p, bytes).unwrap();
        let err = E5::load(&p)
            .err()
            .unwrap_or_else(|| panic!("{what}: loaded"));
        assert!(
            err.to_string().contains("is not a usable E5S1"),
            "{what}: {err}"
        );
    }
}
