//! The shipped knowledge base: the article as cleaned Markdown and the glossary.

use kbqa::chunk::{chunk_corpus, ChunkConfig, ChunkKind};
use kbqa::corpus::Corpus;

use crate::util::repo;

#[test]
fn shipped_corpus_is_clean_and_structured() {
    let corpus = Corpus::load(&repo().join("corpus"), false).unwrap();
    let sources: Vec<&str> = corpus.documents.iter().map(|d| d.source.as_str()).collect();
    assert_eq!(
        sources,
        ["article.md"],
        "README.md is kept out by .kbqaignore"
    );
    let article = &corpus.documents[0].text;
    for removed in [
        "在这里插入图片描述",
        "点赞和收藏",
        "扫描二v码",
        "前往获取",
        "Bootstrap",
    ] {
        assert!(
            !article.contains(removed),
            "{removed} should have been removed"
        );
    }
    for heading in [
        "## 一、通过了解chatGPT来理解什么是大模型",
        "## 二、如果把模型训练过程看做炼丹",
        "## 三、大模型对未来生活和就业的影响,工具or失控?",
        "## 四、大模型产业会走向何方",
        "## 大模型&AI产品经理如何学习",
    ] {
        assert!(article.contains(heading), "missing {heading}");
    }
}

#[test]
fn glossary_is_bilingual_and_points_at_real_sections() {
    let corpus = Corpus::load(&repo().join("corpus"), false).unwrap();
    let article = &corpus.documents[0].text;
    let entries = &corpus.glossaries[0].entries;
    assert!(entries.len() >= 60, "{} entries", entries.len());
    for e in entries {
        assert!(
            e.zh.chars().any(kbqa::text::is_cjk),
            "{}: zh definition is not Chinese",
            e.term
        );
        assert!(
            !e.en.chars().any(kbqa::text::is_cjk)
                || e.en.is_ascii()
                || e.en.chars().filter(|c| kbqa::text::is_cjk(*c)).count() < 20,
            "{}: en definition is mostly Chinese",
            e.term
        );
        for h in &e.article {
            assert!(
                article.contains(h.as_str()),
                "{}: no section {h:?} in the article",
                e.term
            );
        }
    }
    for must in [
        "RLHF",
        "SFT",
        "EFLOPS",
        "AGI",
        "数据并行",
        "Transformer",
        "昇腾910B",
    ] {
        assert!(
            entries.iter().any(|e| e.term == must),
            "glossary lacks {must}"
        );
    }
}

#[test]
fn every_glossary_entry_is_one_chunk_and_ids_are_unique() {
    let corpus = Corpus::load(&repo().join("corpus"), false).unwrap();
    let chunks = chunk_corpus(&corpus, &ChunkConfig::default());
    let glossary = chunks
        .iter()
        .filter(|c| c.kind == ChunkKind::Glossary)
        .count();
    assert_eq!(glossary, corpus.glossaries[0].entries.len());
    let ids: std::collections::HashSet<_> = chunks.iter().map(|c| &c.id).collect();
    assert_eq!(ids.len(), chunks.len());
    let sections: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
    assert!(sections.contains(&"一、通过了解chatGPT来理解什么是大模型"));
    assert!(sections.contains(&"大模型&AI产品经理如何学习 > 1.学习路线图"));
    assert!(
        chunks.iter().any(|c| c.text.contains("312TFLOPS")),
        "numbers stay whole"
    );
}
