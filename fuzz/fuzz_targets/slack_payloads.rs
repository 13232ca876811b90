//! Slack request decoding on arbitrary bytes: event envelopes, slash
//! command forms, signature headers. No panic; what decodes is taken
//! through the same checks the handlers do.
#![no_main]

use axum::http::HeaderMap;
use kbqa::server::service::decode;
use kbqa::server::slack::message::{question_in, split_text, strip_mentions, Command, Envelope};
use kbqa::server::slack::verify::verify;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Envelope::EventCallback { event, .. }) = decode::<Envelope>(data) {
        let _ = question_in(&event, Some("UBOT"));
    }
    let _ = serde_urlencoded::from_bytes::<Command>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strip_mentions(text);
        let pieces = split_text(text, 50);
        assert!(pieces.iter().all(|p| p.chars().count() <= 50));
        let mut headers = HeaderMap::new();
        if let (Some((ts, sig)), true) = (text.split_once('\n'), text.len() < 200) {
            if let (Ok(t), Ok(s)) = (ts.parse(), sig.parse()) {
                headers.insert("x-slack-request-timestamp", t);
                headers.insert("x-slack-signature", s);
            }
        }
        let _ = verify("secret", &headers, data, 1_800_000_000);
    }
});
