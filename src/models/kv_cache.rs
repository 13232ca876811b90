//! The key/value cache of [`super::decoder::Model`]: per layer, the keys and
//! values of every position seen so far, preallocated as
//! `[kv_head][position][dim]` and written in place, so each query head of a
//! group reads its key/value head directly (no `cat`, no copy per step).
//!
//! A cache can be cut back to a shared prefix, snapshotted without its empty
//! tail, serialised for the on-disk prefix cache, and restored into a
//! larger one: a fixed prompt prefix is computed once.

/// Keys and values of the positions seen so far, per layer.
#[derive(Clone)]
pub struct KvCache {
    capacity: usize,
    len: usize,
    head_dim: usize,
    /// Per layer, `[kv_head][position][head_dim]`.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    /// An empty cache of `layers` layers for up to `capacity` positions
    /// (memory is committed only as positions are written).
    pub(super) fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> KvCache {
        let n = kv_heads * capacity * head_dim;
        KvCache {
            capacity,
            len: 0,
            head_dim,
            k: (0..layers).map(|_| vec![0f32; n]).collect(),
            v: (0..layers).map(|_| vec![0f32; n]).collect(),
        }
    }

    /// Writes the keys and values of new tokens (`[token][kv_head][dim]`,
    /// as the projections produce them) into `layer` at positions
    /// `p0..`, regrouped per head so attention reads each head's positions
    /// contiguously. The length grows only in [`KvCache::advance`], once
    /// every layer holds the new positions.
    pub(super) fn store(&mut self, layer: usize, p0: usize, kv_heads: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let kv = kv_heads * hd;
        let t = k.len() / kv;
        for i in 0..t {
            for g in 0..kv_heads {
                let at = (g * self.capacity + p0 + i) * hd;
                self.k[layer][at..at + hd].copy_from_slice(&k[i * kv + g * hd..][..hd]);
                self.v[layer][at..at + hd].copy_from_slice(&v[i * kv + g * hd..][..hd]);
            }
        }
    }

    /// The keys and values of `layer`, `[kv_head][position][dim]` over the
    /// whole capacity (positions past the length are stale or zero).
    pub(super) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.k[layer], &self.v[layer])
    }

    /// Counts `t` more positions as filled, after every layer stored them.
    pub(super) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions from `len` on (keeps a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// A copy of the filled positions only (capacity = length): what a
    /// prefix cache keeps, without the empty tail.
    pub fn snapshot(&self) -> KvCache {
        let n = self.len * self.head_dim;
        let per_head = self.capacity * self.head_dim;
        let compact = |layers: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
            layers
                .iter()
                .map(|l| {
                    l.chunks_exact(per_head)
                        .flat_map(|h| &h[..n])
                        .copied()
                        .collect()
                })
                .collect()
        };
        KvCache {
            capacity: self.len,
            len: self.len,
            head_dim: self.head_dim,
            k: compact(&self.k),
            v: compact(&self.v),
        }
    }

    /// Serialises a snapshot (capacity = length) for the on-disk prefix cache.
    pub fn to_bytes(&self) -> Vec<u8> {
        assert_eq!(self.capacity, self.len, "serialise a snapshot");
        let mut out = Vec::new();
        out.extend_from_slice(KV_MAGIC);
        for n in [self.k.len(), self.len, self.head_dim] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for layer in self.k.iter().chain(&self.v) {
            out.extend_from_slice(&(layer.len() as u64).to_le_bytes());
            for v in layer {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Reads [`KvCache::to_bytes`] output; `None` if it is not one (a
    /// damaged cache file is recomputed, never trusted).
    pub fn from_bytes(bytes: &[u8]) -> Option<KvCache> {
        let rest = bytes.strip_prefix(KV_MAGIC.as_slice())?;
        let mut words = rest
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()) as usize);
        let (layers, len, head_dim) = (words.next()?, words.next()?, words.next()?);
        let mut at: usize = 24;
        let mut read_layer = || -> Option<Vec<f32>> {
            let n = u64::from_le_bytes(rest.get(at..at.checked_add(8)?)?.try_into().ok()?) as usize;
            let end = n.checked_mul(4)?.checked_add(at + 8)?;
            let body = rest.get(at + 8..end)?;
            at = end;
            Some(
                body.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        };
        let mut k = Vec::with_capacity(layers.min(1024));
        let mut v = Vec::with_capacity(layers.min(1024));
        for _ in 0..layers {
            k.push(read_layer()?);
        }
        for _ in 0..layers {
            v.push(read_layer()?);
        }
        if at != rest.len()
            || head_dim == 0
            || k.iter()
                .chain(&v)
                .any(|l| l.len() % (len * head_dim).max(1) != 0)
        {
            return None;
        }
        Some(KvCache {
            capacity: len,
            len,
            head_dim,
            k,
            v,
        })
    }

    /// Whether this cache has `layers` layers of `kv_heads` heads of width
    /// `head_dim` (what [`KvCache::fits`] checks against a model's shape;
    /// a cache read from disk may come from another model).
    pub(super) fn has_shape(&self, layers: usize, kv_heads: usize, head_dim: usize) -> bool {
        self.k.len() == layers
            && self.head_dim == head_dim
            && self
                .k
                .iter()
                .chain(&self.v)
                .all(|l| l.len() == kv_heads * self.capacity * head_dim)
    }

    /// Makes this cache hold exactly the positions of `other` (same model;
    /// `other` may have a different capacity, e.g. a [`KvCache::snapshot`]).
    pub fn copy_prefix_from(&mut self, other: &KvCache) {
        let n = other.len;
        if n == 0 {
            self.len = 0;
            return;
        }
        assert!(n <= self.capacity && self.head_dim == other.head_dim);
        let hd = self.head_dim;
        let (dst_head, src_head) = (self.capacity * hd, other.capacity * hd);
        for (dst, src) in self
            .k
            .iter_mut()
            .zip(&other.k)
            .chain(self.v.iter_mut().zip(&other.v))
        {
            for (d, s) in dst
                .chunks_exact_mut(dst_head)
                .zip(src.chunks_exact(src_head))
            {
                d[..n * hd].copy_from_slice(&s[..n * hd]);
            }
        }
        self.len = n;
    }
}

const KV_MAGIC: &[u8; 8] = b"KBQAKV01";

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(len: usize) -> KvCache {
        let (layers, heads, hd, cap) = (2, 2, 4, 8);
        let fill = |seed: f32| -> Vec<Vec<f32>> {
            (0..layers)
                .map(|l| {
                    (0..heads * cap * hd)
                        .map(|i| seed + (l * 1000 + i) as f32)
                        .collect()
                })
                .collect()
        };
        KvCache {
            capacity: cap,
            len,
            head_dim: hd,
            k: fill(0.5),
            v: fill(-0.25),
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_restores_the_prefix() {
        let full = cache(3);
        let snap = full.snapshot();
        let back = KvCache::from_bytes(&snap.to_bytes()).unwrap();
        assert_eq!((back.len, back.capacity), (3, 3));
        let mut fresh = cache(0);
        fresh
            .k
            .iter_mut()
            .chain(fresh.v.iter_mut())
            .for_each(|l| l.fill(9.0));
        fresh.copy_prefix_from(&back);
        assert_eq!(fresh.len, 3);
        for (a, b) in fresh.k.iter().zip(&full.k) {
            for (ha, hb) in a.chunks_exact(8 * 4).zip(b.chunks_exact(8 * 4)) {
                assert_eq!(&ha[..3 * 4], &hb[..3 * 4]);
            }
        }
    }

    #[test]
    fn damaged_cache_files_are_rejected() {
        let bytes = cache(3).snapshot().to_bytes();
        assert!(KvCache::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        assert!(KvCache::from_bytes(b"KBQAKV01").is_none());
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(KvCache::from_bytes(&wrong).is_none());
        let mut huge = bytes;
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(KvCache::from_bytes(&huge).is_none());
    }
}
