//! Helpers: a scratch folder per test and a runner for the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where `corpus/` and `tests/eval/` live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder with its own index dir; removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn index_dir(&self) -> PathBuf {
        self.path("indexes")
    }

    /// Writes a file (creating folders).
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `kbqa --corpus <corpus> --index-dir <scratch>/indexes ARGS`, run in the scratch dir.
    pub fn kbqa(&self, corpus: &Path, args: &[&str]) -> Run {
        let mut cmd = self.command(corpus);
        cmd.args(args);
        Run::from(cmd.output().expect("run kbqa"))
    }

    /// The command, with the confidence threshold pinned at 0: tests of
    /// retrieval, grounding and the front ends assert what the checks do,
    /// whatever the calibrated confidence makes of a given answer; the
    /// confidence tests set their own threshold (a later `--flag` or
    /// `.env` wins).
    pub fn command(&self, corpus: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kbqa"));
        cmd.current_dir(self.dir.path())
            .arg("--corpus")
            .arg(corpus)
            .arg("--index-dir")
            .arg(self.index_dir())
            .env_remove("KBQA_LOG")
            .env_remove("KBQA_TOKENIZER")
            .env_remove("KBQA_INDEX_BACKEND")
            .env_remove("KBQA_DATABASE_URL")
            .env_remove("KBQA_DATABASE_LEXICAL")
            .env("KBQA_CONFIDENCE_THRESHOLD", "0");
        cmd
    }

    /// A scratch dir whose index is a copy of the shipped corpus's index
    /// (built once per test binary: embedding the corpus takes a while).
    pub fn with_shipped_index() -> Scratch {
        let s = Scratch::new();
        copy_dir(shipped_index(), &s.index_dir());
        s
    }

    /// The generation `CURRENT` names.
    pub fn current(&self) -> String {
        std::fs::read_to_string(self.index_dir().join("CURRENT")).unwrap_or_default()
    }
}

/// A finished run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn success(self) -> Run {
        assert!(
            self.ok,
            "kbqa failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failure(self) -> Run {
        assert!(
            !self.ok,
            "kbqa should have failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// kbqa's home for model files: `KBQA_HOME`, else the default cache.
pub fn model_home() -> PathBuf {
    std::env::var_os("KBQA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| kbqa::Config::default().home)
}

/// The default embedder, fetched on first use and loaded once per test binary.
pub fn e5() -> &'static kbqa::models::e5::E5 {
    static MODEL: std::sync::OnceLock<kbqa::models::e5::E5> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        kbqa::models::init_threads(0);
        let path = kbqa::models::fetch::ensure(
            &kbqa::models::fetch::E5_SMALL_Q4,
            &model_home(),
            "python3",
            &mut |_| {},
        )
        .expect("fetch e5-small-q4");
        kbqa::models::e5::E5::load(&path).expect("load e5")
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// An index of the shipped corpus with the default settings, built once.
pub fn shipped_index() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = Command::new(env!("CARGO_BIN_EXE_kbqa"))
            .args(["--corpus"])
            .arg(repo().join("corpus"))
            .arg("--index-dir")
            .arg(dir.path())
            .arg("index")
            .env_remove("KBQA_TOKENIZER")
            .env_remove("KBQA_INDEX_BACKEND")
            .env_remove("KBQA_DATABASE_URL")
            .env_remove("KBQA_DATABASE_LEXICAL")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        dir
    })
    .path()
}

/// Three documents of a few passages each, in `s/kb` (the re-indexing
/// and shared-index tests change and search them).
pub fn write_corpus(s: &Scratch) {
    s.write(
        "kb/alpha.md",
        "# Alpha\n\n## Training\n\n大模型的训练分为预训练和微调两个阶段。预训练在海量文本上进行，让模型学会语言的规律。\n\n\
         ## Data\n\nThe pretraining data is a large corpus of web pages, books and code. Quality filtering removes duplicates.\n",
    );
    s.write(
        "kb/beta.md",
        "# Beta\n\n## Hardware\n\n训练需要大量GPU。OLDMARK旧的说法是一块显卡就够了。\n\n\
         ## Clusters\n\nLarge clusters connect thousands of accelerators with fast networks.\n",
    );
    s.write(
        "kb/gamma.md",
        "# Gamma\n\n## Inference\n\nQUOKKAWORD inference serves the trained model to users. Latency matters more than throughput for chat.\n",
    );
}
