//! The small per-token operations of the decoder's forward pass, on plain
//! `f32` slices: dot products, RMSNorm, bias addition.

/// `a · b`.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums so the compiler vectorises it.
    let mut acc = [0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(a, b)| a * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// RMSNorm of each `weight.len()`-wide row of `x` into `out`.
pub(super) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, x), w) in or.iter_mut().zip(xr).zip(weight) {
            *o = x * inv * w;
        }
    }
}

/// Adds `bias` (if any) to each row of `x`.
pub(super) fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
        }
    }
}
