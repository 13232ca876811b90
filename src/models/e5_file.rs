//! The E5S1 container of [`super::e5`]'s model file: a little-endian
//! cursor, the tensor table (name, dtype, element count, byte range) and
//! typed access to its tensors, each checked against the size it must have
//! so a truncated or foreign file is an error, never a panic. What the
//! tensors mean (the network) stays in `e5.rs`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::q4::Q4Linear;

/// Weights per Q4_0 block.
pub(super) const QK: usize = 32;
/// Bytes per Q4_0 block (f16 scale, 16 bytes of nibbles).
pub(super) const BLOCK_BYTES: usize = 18;

/// A little-endian reader over the file.
pub(super) struct Cursor<'a> {
    /// The whole input.
    pub(super) bytes: &'a [u8],
    /// Where the next read starts.
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    pub(super) fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn i32(&mut self) -> std::result::Result<i32, String> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn f32(&mut self) -> std::result::Result<f32, String> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn usize(&mut self) -> std::result::Result<usize, String> {
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| format!("negative size {v}"))
    }
}

/// One tensor of the table.
pub(super) struct TensorEntry<'a> {
    /// 0: f32, 1: Q4_0.
    pub(super) dtype: u8,
    elements: usize,
    /// Its bytes, inside the file.
    pub(super) data: &'a [u8],
}

/// Dequantises Q4_0 blocks (f16 scale, 16 bytes: low nibble = weight j,
/// high nibble = weight j+16; value = (q - 8) * scale) into `out`.
pub(super) fn dequantize_q4_0(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        for j in 0..16 {
            let q = b[2 + j];
            o[j] = ((q & 0x0F) as f32 - 8.0) * d;
            o[j + 16] = ((q >> 4) as f32 - 8.0) * d;
        }
    }
}

/// The tensor table, and typed access to its entries.
pub(super) struct Tensors<'a> {
    entries: HashMap<String, TensorEntry<'a>>,
    device: Device,
}

impl<'a> Tensors<'a> {
    /// Reads the table at the cursor; every tensor's byte range must lie
    /// inside `bytes` (the whole file, which offsets are relative to).
    pub(super) fn read(
        c: &mut Cursor<'a>,
        bytes: &'a [u8],
        device: Device,
    ) -> std::result::Result<Tensors<'a>, String> {
        let count = c.usize()?;
        let mut tensors = HashMap::new();
        for _ in 0..count {
            let name_len = c.u16()? as usize;
            let name = String::from_utf8_lossy(c.take(name_len)?).into_owned();
            let dtype = c.u8()?;
            let elements = c.u32()? as usize;
            let offset = usize::try_from(c.u64()?).map_err(|_| "offset too large")?;
            let nbytes = usize::try_from(c.u64()?).map_err(|_| "size too large")?;
            let data = offset
                .checked_add(nbytes)
                .and_then(|end| bytes.get(offset..end))
                .ok_or_else(|| format!("tensor {name} lies outside the file (truncated?)"))?;
            tensors.insert(
                name,
                TensorEntry {
                    dtype,
                    elements,
                    data,
                },
            );
        }
        Ok(Tensors {
            entries: tensors,
            device,
        })
    }

    /// Tensor `name`, which must have `elements` elements and a known
    /// dtype whose size matches its bytes.
    pub(super) fn get(
        &self,
        name: &str,
        elements: usize,
    ) -> std::result::Result<&TensorEntry<'a>, String> {
        let t = self
            .entries
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        if t.elements != elements {
            return Err(format!(
                "tensor {name} has {} elements, expected {elements}",
                t.elements
            ));
        }
        let want = match t.dtype {
            0 => elements * 4,
            1 => elements / QK * BLOCK_BYTES,
            d => return Err(format!("tensor {name} has unknown dtype {d}")),
        };
        if t.data.len() != want {
            return Err(format!(
                "tensor {name} has {} bytes, expected {want}",
                t.data.len()
            ));
        }
        Ok(t)
    }

    /// Tensor `name` as f32 values (dequantised if it is Q4_0).
    pub(super) fn f32s(
        &self,
        name: &str,
        elements: usize,
    ) -> std::result::Result<Vec<f32>, String> {
        let t = self.get(name, elements)?;
        match t.dtype {
            0 => Ok(t
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
                .collect()),
            _ => {
                let mut out = vec![0f32; elements];
                dequantize_q4_0(t.data, &mut out);
                Ok(out)
            }
        }
    }

    /// Tensor `name` as a candle vector of `len` values.
    pub(super) fn vector(&self, name: &str, len: usize) -> std::result::Result<Tensor, String> {
        Tensor::from_vec(self.f32s(name, len)?, len, &self.device).map_err(|e| e.to_string())
    }

    /// The Q4_0 blocks of weight tensor `name` (`elements` weights), in
    /// place in the file.
    pub(super) fn q4_blocks(
        &self,
        name: &str,
        elements: usize,
    ) -> std::result::Result<&'a [u8], String> {
        let t = self.get(name, elements)?;
        if t.dtype != 1 {
            return Err(format!("tensor {name} must be Q4_0"));
        }
        Ok(t.data)
    }

    /// A linear layer from Q4_0 weight `w` and f32 bias `b`. PyTorch
    /// Linear weights are [out, in], Q4_0 along `in`.
    pub(super) fn linear(
        &self,
        w: &str,
        b: &str,
        out: usize,
        inp: usize,
    ) -> std::result::Result<Q4Linear, String> {
        let data = self.q4_blocks(w, out * inp)?;
        Q4Linear::new(out, inp, data, self.f32s(b, out)?)
    }
}
