//! Where a packed matrix's bytes live: in memory the process owns (packed
//! from a GGUF at load), or in a mapping of the packed copy on disk
//! ([`super::packed_file`]), which a fresh process can start from without
//! copying 430 MB and which processes of one machine share in the page
//! cache.

use std::ops::{Deref, Range};
use std::sync::Arc;

use memmap2::Mmap;

/// Read-only bytes: owned, or a range of a shared file mapping.
pub enum WeightBytes {
    /// Packed in this process.
    Owned(Vec<u8>),
    /// A slice of a mapped file (the mapping lives as long as any slice).
    Mapped(Arc<Mmap>, Range<usize>),
}

impl Deref for WeightBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            WeightBytes::Owned(v) => v,
            WeightBytes::Mapped(map, range) => &map[range.clone()],
        }
    }
}

impl From<Vec<u8>> for WeightBytes {
    fn from(v: Vec<u8>) -> WeightBytes {
        WeightBytes::Owned(v)
    }
}
