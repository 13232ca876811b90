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

    pub fn command(&self, corpus: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kbqa"));
        cmd.current_dir(self.dir.path())
            .arg("--corpus")
            .arg(corpus)
            .arg("--index-dir")
            .arg(self.index_dir())
            .env_remove("KBQA_LOG")
            .env_remove("KBQA_TOKENIZER");
        cmd
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
