//! The HTTP request decoders on arbitrary bytes: every input is either
//! decoded or rejected with a 400, never a panic; what decodes is then
//! taken through the same validation a handler does.
#![no_main]

use kbqa::server::api::{AskRequest, SearchRequest};
use kbqa::server::service::decode;
use kbqa::server::openai::{question_of, ChatRequest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode::<AskRequest>(data) {
        let q = kbqa::chat::standalone_question(&r.history, &r.question);
        let _ = kbqa::answer::Question::parse(&q, r.k.unwrap_or(5));
    }
    if let Ok(r) = decode::<SearchRequest>(data) {
        let _ = kbqa::retrieve::Query::parse(&r.query, r.k.unwrap_or(5));
    }
    if let Ok(r) = decode::<ChatRequest>(data) {
        if let Ok(q) = question_of(&r.messages) {
            let _ = kbqa::answer::Question::parse(&q, 5);
        }
    }
    if let Err(e) = decode::<AskRequest>(data) {
        assert_eq!(e.status().as_u16(), 400);
    }
});
