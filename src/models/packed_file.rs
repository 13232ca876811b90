//! The chat model's weights as kbqa runs them, kept on disk: a fresh
//! process otherwise spends ~2 s repacking the GGUF's blocks into
//! [`PackedMatrix`] layout (unpacking 5-bit quants, converting the 6-bit
//! output layer, rearranging rows) before its first token. Reading the
//! packed bytes back is a copy from the page cache.
//!
//! One file per GGUF, named by the GGUF's identity (canonical path, size,
//! modification time) and [`VERSION`]: an edited, replaced or moved model,
//! or a kbqa that packs differently, never reads another's weights. The file
//! is written whole under a temporary name and renamed, and every matrix's
//! size is checked against the model's shape when it is read; anything
//! unexpected means "no cache" (the GGUF is packed again), never an error.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use half::f16;
use sha2::{Digest, Sha256};

use super::decoder::{Hparams, Layer, Model};
use super::packed::{Bits, PackedMatrix};
use crate::hash::hex;

/// Bumped whenever the packed layout or this file's format changes.
const VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"KBQAPACK";
const END: &[u8; 4] = b"END!";

/// The cache file for the GGUF at `gguf` in `dir`, or `None` if the GGUF's
/// identity cannot be read.
pub fn path_for(dir: &Path, gguf: &Path) -> Option<PathBuf> {
    let canonical = gguf.canonicalize().ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let identity = format!(
        "{}|{}|{}|{VERSION}",
        canonical.display(),
        meta.len(),
        modified.as_nanos()
    );
    let digest = hex(&Sha256::digest(identity.as_bytes()));
    Some(dir.join(format!("packed-{}.bin", &digest[..20])))
}

/// The model packed in `path`, or `None` (missing, another version,
/// truncated, or not the shape its header says).
pub fn read(path: &Path) -> Option<Model> {
    let file = File::open(path).ok()?;
    let mut r = BufReader::with_capacity(1 << 20, file);
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
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write_model(&mut w, model)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path),
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

fn write_model(w: &mut impl Write, m: &Model) -> Io<()> {
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

fn read_model(r: &mut impl Read) -> Io<Model> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    let mut version = [0u8; 4];
    r.read_exact(&mut version)?;
    if &magic != MAGIC || u32::from_le_bytes(version) != VERSION {
        return Err(bad("not a packed model of this kbqa version"));
    }
    let hp_len = get_u64(r)? as usize;
    if hp_len > 1 << 20 {
        return Err(bad("a header of implausible size"));
    }
    let mut hp = vec![0u8; hp_len];
    r.read_exact(&mut hp)?;
    let hp: Hparams = serde_json::from_slice(&hp).map_err(|e| bad(e.to_string()))?;
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
    let mut end = [0u8; 4];
    r.read_exact(&mut end)?;
    if &end != END {
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

fn put_u64(w: &mut impl Write, v: u64) -> Io<()> {
    w.write_all(&v.to_le_bytes())
}

fn get_u64(r: &mut impl Read) -> Io<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_u8(r: &mut impl Read) -> Io<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn put_floats(w: &mut impl Write, v: &[f32]) -> Io<()> {
    put_u64(w, v.len() as u64)?;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.write_all(&bytes)
}

/// `len` floats, or an error if the file holds another count.
fn get_floats(r: &mut impl Read, len: usize) -> Io<Vec<f32>> {
    if get_u64(r)? != len as u64 {
        return Err(bad(format!("a vector is not {len} long")));
    }
    let mut bytes = vec![0u8; len * 4];
    r.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn put_matrix(w: &mut impl Write, m: &PackedMatrix) -> Io<()> {
    let (rows, cols, bits, data, scales) = m.parts();
    put_u64(w, rows as u64)?;
    put_u64(w, cols as u64)?;
    w.write_all(&[match bits {
        Bits::Five => 5,
        Bits::Eight => 8,
    }])?;
    put_u64(w, data.len() as u64)?;
    w.write_all(data)?;
    put_u64(w, scales.len() as u64)?;
    let bytes: Vec<u8> = scales
        .iter()
        .flat_map(|s| s.to_bits().to_le_bytes())
        .collect();
    w.write_all(&bytes)
}

/// A `rows × cols` matrix, or an error if the file holds another shape
/// or sizes that do not fit it.
fn get_matrix(r: &mut impl Read, rows: usize, cols: usize) -> Io<PackedMatrix> {
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
    let mut data = vec![0u8; data_len];
    r.read_exact(&mut data)?;
    let scales_len = get_u64(r)? as usize;
    if Some(scales_len) != PackedMatrix::scales_len(rows, cols) {
        return Err(bad("a matrix's scales are not its size"));
    }
    let mut bytes = vec![0u8; scales_len * 2];
    r.read_exact(&mut bytes)?;
    let scales = bytes
        .chunks_exact(2)
        .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    Ok(PackedMatrix::from_parts(rows, cols, bits, data, scales))
}
