//! `kill -9` in the middle of `kbqa index` leaves the previous index live.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::util::{repo, Scratch};

#[test]
fn killed_build_leaves_the_previous_index_servable() {
    let s = Scratch::with_shipped_index();
    let small = repo().join("corpus");
    let before = s.current();
    let answer = s
        .kbqa(&small, &["search", "EFLOPS", "--json"])
        .success()
        .json();

    let big = s.path("big");
    kbqa::synth::write_corpus(&big, 4 << 20, 4, 7).unwrap();
    let mut child = s
        .command(&big)
        .arg("index")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the BM25 index is being written, then kill -9.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let writing = line.starts_with("kbqa: bm25 ");
        seen.push(line);
        if writing {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with("kbqa: bm25 ")),
        "{seen:?}"
    );
    let tmp_dirs = || {
        std::fs::read_dir(s.index_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .count()
    };
    assert_eq!(tmp_dirs(), 1, "the build is under way in a temp dir");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(
        s.current(),
        before,
        "CURRENT still names the previous generation"
    );
    let after = s
        .kbqa(&small, &["--no-auto-index", "search", "EFLOPS", "--json"])
        .success()
        .json();
    assert_eq!(after, answer, "the previous index answers as before");

    // The next build (of any corpus) clears the leftovers.
    s.write("tiny/a.md", "# A\n\nEFLOPS 是每秒百亿亿次浮点运算。\n");
    s.kbqa(&s.path("tiny"), &["index"]).success();
    assert_eq!(tmp_dirs(), 0);
}
