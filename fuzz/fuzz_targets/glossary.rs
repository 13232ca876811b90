//! The glossary parser on arbitrary text: it accepts or refuses with a
//! message, never panics; accepted entries render and chunk.
#![no_main]

use kbqa::corpus::glossary::Glossary;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Glossary::parse("glossary.toml", text, String::new()) {
        Ok(g) => {
            for e in &g.entries {
                assert!(!e.render().is_empty());
            }
            let _ = kbqa::chunk::chunk_glossary(&g);
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
