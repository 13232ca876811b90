//! The chat model's weights as kbqa runs them, kept on disk: a fresh
//! process otherwise spends ~2 s repacking the GGUF's blocks into
//! [`PackedMatrix`] layout (unpacking 5-bit quants, converting the 6-bit
//! output layer, rearranging rows) before its first token.
//!
//! The file is mapped, not read: a fresh process starts without copying
//! the packed bytes, and processes on one machine share them in the page
//! cache.
//!
//! One file per GGUF, named by the GGUF's identity (canonical path, size,
//! modification time) and [`VERSION`]: an edited, replaced or moved model,
//! or a kbqa that packs differently, never reads another's weights. The file
//! is written whole under a temporary name and renamed, and every matrix's
//! size is checked against the model's shape when it is read; anything
//! unexpected means "no cache" (the GGUF is packed again), never an error.
//!
//! Mapping is sound because the file is never written in place: kbqa only
//! creates it whole under another name and renames it over, so a mapped
//! file's bytes do not change under a running process (a new copy is a new
//! inode). Each matrix's data starts on a cache line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::f16;
use sha2::{Digest, Sha256};

use super::decoder::{Hparams, Layer, Model};
use super::packed::{Bits, PackedMatrix};
use super::weight_bytes::WeightBytes;
use crate::hash::hex;

/// Bumped whenever the packed layout or this file's format changes.
const VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"KBQAPACK";
const END: &[u8; 4] = b"END!";

/// The cache file for the GGUF at `gguf` in `dir`, or `None` if the GGUF's
/// identity cannot be read: `packed-<path>-<version>.bin`, the first part
/// a digest of the GGUF's canonical path, the second of its size,
/// modification time and [`VERSION`].
pub fn path_for(dir: &Path, gguf: &Path) -> Option<PathBuf> {
    let canonical = gguf.canonicalize().ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let version = format!("{}|{}|{VERSION}", meta.len(), modified.as_nanos());
    Some(dir.join(format!(
        "{}{}.bin",
        path_prefix(&canonical),
        &digest(&version)[..12]
    )))
}

fn digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// `packed-<path digest>-`: the name every version of one GGUF's packed
/// copy starts with.
fn path_prefix(canonical: &Path) -> String {
    format!(
        "packed-{}-",
        &digest(&canonical.display().to_string())[..12]
    )
}

/// Deletes the packed copies of earlier versions of the GGUF whose copy
/// `kept` is (430 MB each), and any copy named the first way
/// (`packed-<20 hex>.bin`, format 1, which no kbqa reads any more). A
/// process still mapping one keeps its bytes until it exits: unlinking
/// does not touch a mapping. (Two kbqa builds of different formats sharing
/// one home would delete and rewrite each other's copy: time, not harm.)
fn remove_older(kept: &Path) {
    let (Some(dir), Some(name)) = (kept.parent(), kept.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    // `packed-<12 hex>-`: the part the versions share.
    let Some(prefix) = name.get(..20) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let other = entry.file_name();
        let other = other.to_string_lossy();
        let first_format = other.len() == "packed-.bin".len() + 20
            && other.starts_with("packed-")
            && other.ends_with(".bin")
            && other
                .get(7..27)
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        let older = other.starts_with(prefix) && other.ends_with(".bin") && other != name;
        if older || first_format {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed the outdated packed weights {other}"),
                Err(e) => tracing::warn!("cannot remove the outdated packed weights {other}: {e}"),
            }
        }
    }
}

/// The model packed in `path`, or `None` (missing, another version,
/// truncated, or not the shape its header says).
pub fn read(path: &Path) -> Option<Model> {
    let file = File::open(path).ok()?;
    // Safety: see the module's doc: the file is never modified in place.
    let map = match unsafe { memmap2::Mmap::map(&file) } {
        Ok(map) => Arc::new(map),
        Err(e) => {
            tracing::warn!("cannot map the packed weights in {}: {e}", path.display());
            return None;
        }
    };
    let mut r = Cursor { map, pos: 0 };
    match read_model(&mut r) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("ignoring the packed weights in {}: {e}", path.display());
            None
        }
    }
}

/// Writes `model` to `path` (whole, then renamed into place).
pub fn write(model: &Model, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut w = Counting {
            inner: BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
            pos: 0,
        };
        write_model(&mut w, model)?;
        w.inner.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, path)?;
            remove_older(path);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

type Io<T> = std::io::Result<T>;

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

fn write_model<W: Write>(w: &mut Counting<W>, m: &Model) -> Io<()> {
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    let hp = serde_json::to_vec(&m.hp).expect("hparams serialise");
    put_u64(w, hp.len() as u64)?;
    w.write_all(&hp)?;
    put_matrix(w, &m.embedding)?;
    w.write_all(&[u8::from(m.output.is_some())])?;
    if let Some(o) = &m.output {
        put_matrix(w, o)?;
    }
    for l in &m.layers {
        put_floats(w, &l.attn_norm)?;
        for b in [&l.bias_q, &l.bias_k, &l.bias_v] {
            w.write_all(&[u8::from(b.is_some())])?;
            if let Some(b) = b {
                put_floats(w, b)?;
            }
        }
        put_floats(w, &l.ffn_norm)?;
        for x in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
            put_matrix(w, x)?;
        }
    }
    put_floats(w, &m.out_norm)?;
    put_floats(w, &m.inv_freq)?;
    w.write_all(END)
}

fn read_model(r: &mut Cursor) -> Io<Model> {
    let magic_ok = r.bytes(8)? == MAGIC;
    if !magic_ok || r.bytes(4)? != VERSION.to_le_bytes() {
        return Err(bad("not a packed model of this kbqa version"));
    }
    let hp_len = get_u64(r)? as usize;
    if hp_len > 1 << 20 {
        return Err(bad("a header of implausible size"));
    }
    let hp: Hparams = serde_json::from_slice(r.bytes(hp_len)?).map_err(|e| bad(e.to_string()))?;
    let (d, kv, ff) = (hp.dim, hp.kv_heads * hp.head_dim, hp.ff);
    let embedding = get_matrix(r, hp.vocab, d)?;
    let output = match get_u8(r)? {
        0 => None,
        _ => Some(get_matrix(r, hp.vocab, d)?),
    };
    let mut layers = Vec::with_capacity(hp.layers);
    for _ in 0..hp.layers {
        let attn_norm = get_floats(r, d)?;
        let mut bias = [None, None, None];
        for (b, len) in bias.iter_mut().zip([d, kv, kv]) {
            if get_u8(r)? != 0 {
                *b = Some(get_floats(r, len)?);
            }
        }
        let [bias_q, bias_k, bias_v] = bias;
        layers.push(Layer {
            attn_norm,
            bias_q,
            bias_k,
            bias_v,
            ffn_norm: get_floats(r, d)?,
            q: get_matrix(r, d, d)?,
            k: get_matrix(r, kv, d)?,
            v: get_matrix(r, kv, d)?,
            o: get_matrix(r, d, d)?,
            gate: get_matrix(r, ff, d)?,
            up: get_matrix(r, ff, d)?,
            down: get_matrix(r, d, ff)?,
        });
    }
    let out_norm = get_floats(r, d)?;
    let inv_freq = get_floats(r, hp.head_dim / 2)?;
    if r.bytes(4)? != END {
        return Err(bad("the file does not end where it should"));
    }
    Ok(Model {
        hp,
        embedding,
        layers,
        out_norm,
        output,
        inv_freq,
    })
}

/// The bytes written so far, to align each matrix's data.
struct Counting<W> {
    inner: W,
    pos: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> Io<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n;
        Ok(n)
    }

    fn flush(&mut self) -> Io<()> {
        self.inner.flush()
    }
}

impl<W: Write> Counting<W> {
    /// Zeros up to the next multiple of [`ALIGN`].
    fn align(&mut self) -> Io<()> {
        self.write_all(&[0u8; ALIGN][..pad(self.pos)])
    }
}

/// Where matrix data starts: a cache line.
const ALIGN: usize = 64;

/// Bytes from `pos` to the next multiple of [`ALIGN`].
fn pad(pos: usize) -> usize {
    pos.next_multiple_of(ALIGN) - pos
}

/// A position in the mapped file; every read is bounds-checked, so a
/// truncated file is an error, never a fault.
struct Cursor {
    map: Arc<memmap2::Mmap>,
    pos: usize,
}

impl Cursor {
    fn range(&mut self, n: usize) -> Io<std::ops::Range<usize>> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.map.len())
            .ok_or_else(|| bad("the file ends early"))?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    fn bytes(&mut self, n: usize) -> Io<&[u8]> {
        let range = self.range(n)?;
        Ok(&self.map[range])
    }

    fn align(&mut self) -> Io<()> {
        self.range(pad(self.pos)).map(drop)
    }
}

fn put_u64(w: &mut impl Write, v: u64) -> Io<()> {
    w.write_all(&v.to_le_bytes())
}

fn get_u64(r: &mut Cursor) -> Io<u64> {
    Ok(u64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes")))
}

fn get_u8(r: &mut Cursor) -> Io<u8> {
    Ok(r.bytes(1)?[0])
}

fn put_floats(w: &mut impl Write, v: &[f32]) -> Io<()> {
    put_u64(w, v.len() as u64)?;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.write_all(&bytes)
}

/// `len` floats, or an error if the file holds another count.
fn get_floats(r: &mut Cursor, len: usize) -> Io<Vec<f32>> {
    if get_u64(r)? != len as u64 {
        return Err(bad(format!("a vector is not {len} long")));
    }
    Ok(r.bytes(len * 4)?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn put_matrix<W: Write>(w: &mut Counting<W>, m: &PackedMatrix) -> Io<()> {
    let (rows, cols, bits, data, scales) = m.parts();
    put_u64(w, rows as u64)?;
    put_u64(w, cols as u64)?;
    w.write_all(&[match bits {
        Bits::Five => 5,
        Bits::Eight => 8,
    }])?;
    put_u64(w, data.len() as u64)?;
    w.align()?;
    w.write_all(data)?;
    put_u64(w, scales.len() as u64)?;
    let bytes: Vec<u8> = scales
        .iter()
        .flat_map(|s| s.to_bits().to_le_bytes())
        .collect();
    w.write_all(&bytes)
}

/// A `rows × cols` matrix, or an error if the file holds another shape
/// or sizes that do not fit it. Its data stays in the mapping.
fn get_matrix(r: &mut Cursor, rows: usize, cols: usize) -> Io<PackedMatrix> {
    if (get_u64(r)?, get_u64(r)?) != (rows as u64, cols as u64) {
        return Err(bad(format!("a matrix is not {rows}x{cols}")));
    }
    let bits = match get_u8(r)? {
        5 => Bits::Five,
        8 => Bits::Eight,
        b => return Err(bad(format!("{b} bits per weight"))),
    };
    let data_len = get_u64(r)? as usize;
    if Some(data_len) != PackedMatrix::data_len(rows, cols, bits) {
        return Err(bad("a matrix's data is not its size"));
    }
    r.align()?;
    let data = WeightBytes::Mapped(r.map.clone(), r.range(data_len)?);
    let scales_len = get_u64(r)? as usize;
    if Some(scales_len) != PackedMatrix::scales_len(rows, cols) {
        return Err(bad("a matrix's scales are not its size"));
    }
    let scales = r
        .bytes(scales_len * 2)?
        .chunks_exact(2)
        .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    Ok(PackedMatrix::from_parts(rows, cols, bits, data, scales))
}
