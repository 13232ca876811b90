//! Files of a generation on disk: checksums, atomic replacement and
//! fsync, so that a generation is complete before it can go live.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// sha256 of every file in `dir` (hidden lock files excepted), by name.
pub(super) fn checksums(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().is_file() {
            out.insert(name, crate::hash::sha256_file(&e.path())?);
        }
    }
    Ok(out)
}

/// Checks each file of `files` (name → sha256) in `dir`: a missing or
/// altered one is a damaged index, named.
pub(super) fn verify_files(dir: &Path, files: &BTreeMap<String, String>) -> Result<()> {
    for (name, want) in files {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(Error::CorruptIndex {
                path: p,
                reason: "missing".into(),
            });
        }
        if crate::hash::sha256_file(&p)? != *want {
            return Err(Error::CorruptIndex {
                path: p,
                reason: "its checksum does not match the manifest".into(),
            });
        }
    }
    Ok(())
}

/// Writes `path` by writing a sibling and renaming it over, fsynced.
pub(super) fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

pub(super) fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path).and_then(|f| f.sync_all()).at(&path)?;
        }
    }
    sync_dir(dir)
}
