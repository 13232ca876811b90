//! Chat-platform adapters. Each one translates a platform's payloads into
//! [`crate::answer::ask`] calls (through the server's admission, like any
//! other answer) and answers into the platform's message format; retrieval
//! and generation know nothing of them. Another platform is another module
//! beside [`slack`].

pub mod redis;
pub mod slack;
