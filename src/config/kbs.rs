//! Named knowledge bases: several corpora, each with its own index, in
//! one configuration.
//!
//! The top-level `corpus` and `index_dir` are the knowledge base named
//! [`DEFAULT_KB`] (the shipped article and glossary unless configured
//! otherwise). Others are `[kbs.NAME]` tables. Everything that works on
//! one knowledge base (index, search, answer) takes the [`Config`] that
//! [`Config::for_kb`] makes: the shared settings with that knowledge base's
//! folders and overrides in place, so no code below the front ends needs
//! to know that there are several.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::kinds::TokenizerKind;
use crate::error::{Error, Result};

/// The name of the knowledge base the top-level `corpus` and `index_dir`
/// describe.
pub const DEFAULT_KB: &str = "default";

/// One named knowledge base.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KbConfig {
    /// Its folder of documents.
    pub corpus: PathBuf,
    /// Where its index generations live [default: `<index_dir>/kbs/<name>`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_dir: Option<PathBuf>,
    /// How its Chinese text is cut into terms [default: `bm25.tokenizer`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerKind>,
    /// Passages given to the model [default: `answer.k`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// What it holds, in a few words (shown in lists and `/v1/models`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// API keys that may use this knowledge base and no other (unless
    /// another lists them too); keys in `server.api_keys` may use all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
}

/// Keys stay out of logs and error messages.
impl std::fmt::Debug for KbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbConfig")
            .field("corpus", &self.corpus)
            .field("index_dir", &self.index_dir)
            .field("tokenizer", &self.tokenizer)
            .field("k", &self.k)
            .field("description", &self.description)
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

/// Whether `name` can name a knowledge base: it becomes a folder name, a
/// model id (`kbqa:NAME`) and a URL parameter, so it is kept plain.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{name:?} cannot name a knowledge base: use 1-40 lowercase letters, digits, '-' or '_'"
        )))
    }
}

/// What a config file's new text must pass before it replaces the old
/// one: that it loads.
pub type Check<'a> = &'a dyn Fn(&str) -> Result<()>;

/// Adds `[kbs.NAME]` to the config file at `path` (created if missing),
/// keeping everything else in it as written, comments included. The new
/// file must pass `check`; it replaces the old one in one rename.
pub fn add_to_file(path: &Path, name: &str, kb: &KbConfig, check: Check) -> Result<()> {
    check_name(name)?;
    if name == DEFAULT_KB {
        return Err(Error::Config(format!(
            "{DEFAULT_KB:?} is the top-level corpus; give the new knowledge base another name"
        )));
    }
    let mut doc = read_document(path)?;
    let kbs = doc
        .entry("kbs")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| Error::Config(format!("{}: `kbs` is not a table", path.display())))?;
    if kbs.contains_key(name) {
        return Err(Error::Config(format!(
            "{} already has a knowledge base {name:?}; `kbqa kb remove {name}` first",
            path.display()
        )));
    }
    let text = toml::to_string(kb).map_err(|e| Error::Config(e.to_string()))?;
    let table: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::Config(e.to_string()))?;
    kbs.insert(name, toml_edit::Item::Table(table.as_table().clone()));
    write_document(path, &doc, check)
}

/// Removes `[kbs.NAME]` from the config file at `path`, keeping the rest
/// as written; returns what it said.
pub fn remove_from_file(path: &Path, name: &str, check: Check) -> Result<KbConfig> {
    let mut doc = read_document(path)?;
    let removed = doc
        .get_mut("kbs")
        .and_then(toml_edit::Item::as_table_mut)
        .and_then(|kbs| kbs.remove(name))
        .ok_or_else(|| {
            Error::Config(format!("{} has no knowledge base {name:?}", path.display()))
        })?;
    let kb: KbConfig = toml::from_str(&removed.to_string())
        .map_err(|e| Error::Config(format!("{}: kbs.{name}: {e}", path.display())))?;
    write_document(path, &doc, check)?;
    Ok(kb)
}

fn read_document(path: &Path) -> Result<toml_edit::DocumentMut> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.parse()
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Writes `doc` to `path` through a temporary file and a rename, once
/// it passes `check`.
fn write_document(path: &Path, doc: &toml_edit::DocumentMut, check: Check) -> Result<()> {
    let text = doc.to_string();
    check(&text)
        .map_err(|e| Error::Config(format!("{}: the edit would not load: {e}", path.display())))?;
    let name = path
        .file_name()
        .map_or("kbqa.toml".into(), |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn two() -> Config {
        let mut config = Config::default();
        config.kbs.insert(
            "hr".into(),
            KbConfig {
                corpus: "handbook".into(),
                k: Some(3),
                ..KbConfig::default()
            },
        );
        config
    }

    #[test]
    fn a_named_knowledge_base_has_its_own_folders_and_overrides() {
        let config = two();
        let hr = config.for_kb("hr").unwrap();
        assert_eq!(hr.corpus, PathBuf::from("handbook"));
        assert_eq!(hr.index_dir, config.index_dir.join("kbs").join("hr"));
        assert_eq!(hr.answer.k, 3);
        assert_eq!(hr.kb, "hr");
        assert_eq!(config.for_kb(DEFAULT_KB).unwrap().corpus, config.corpus);
        assert_eq!(config.kb_names(), [DEFAULT_KB, "hr"]);
        config.validate().unwrap();
    }

    #[test]
    fn variables_and_flags_win_over_a_knowledge_bases_table_but_not_its_folders() {
        let mut config = two();
        config.given = vec![crate::config::layers::Setting::flag("--k", "answer.k", 8)];
        let hr = config.for_kb("hr").unwrap();
        assert_eq!((hr.answer.k, hr.corpus), (8, PathBuf::from("handbook")));
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = two().for_kb("eng").unwrap_err().to_string();
        assert!(e.contains("eng") && e.contains("default, hr"), "{e}");
        let mut config = two();
        config.kb = "eng".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_config_file_is_edited_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kbqa.toml");
        std::fs::write(&path, "# mine\ncorpus = \"docs\"  # the default one\n").unwrap();
        let kb = KbConfig {
            corpus: "hr-handbook".into(),
            k: Some(4),
            description: "HR".into(),
            ..KbConfig::default()
        };
        Config::add_kb_to_file(&path, "hr", &kb).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# mine\ncorpus = \"docs\"  # the default one\n"),
            "{text}"
        );
        let config: Config = toml::from_str(&text).unwrap();
        assert_eq!(config.kbs["hr"], kb);
        assert!(
            Config::add_kb_to_file(&path, "hr", &kb).is_err(),
            "a second hr"
        );
        assert!(Config::add_kb_to_file(&path, DEFAULT_KB, &kb).is_err());
        assert_eq!(Config::remove_kb_from_file(&path, "hr").unwrap(), kb);
        assert!(Config::remove_kb_from_file(&path, "hr").is_err());
        let config: Config = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(config.kbs.is_empty());
    }

    #[test]
    fn names_are_plain_and_folders_are_not_shared() {
        for bad in ["", "HR", "a b", "../x", "-x", &"x".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("eng-docs_2").unwrap();
        let mut config = two();
        config.kbs.get_mut("hr").unwrap().index_dir = Some(config.index_dir.clone());
        assert!(config.validate().is_err());
    }
}
