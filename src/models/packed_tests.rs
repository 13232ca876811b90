//! Tests of [`super`] (the packed matrices and their kernels), in their own
//! file to keep `packed.rs` short: the kernels against the scalar
//! reference, the format conversions against the GGML block layouts.

use super::*;

fn lcg(seed: u32) -> impl FnMut() -> u32 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
        s >> 8
    }
}

fn q5_blocks(rows: usize, cols: usize) -> Vec<u8> {
    let mut next = lcg(3);
    let mut out = Vec::new();
    for _ in 0..rows * cols / QK {
        let d = f16::from_f32(0.001 + (next() % 100) as f32 / 5000.0);
        out.extend_from_slice(&d.to_le_bytes());
        for _ in 0..20 {
            out.push(next() as u8);
        }
    }
    out
}

fn q5_value(b: &[u8], j: usize) -> f32 {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let nib = if j < 16 {
        b[6 + j] & 15
    } else {
        b[6 + j - 16] >> 4
    };
    let u = i32::from(nib) | (((qh >> j) & 1) as i32) << 4;
    d * (u - 16) as f32
}

#[test]
fn q5_0_rows_are_exact() {
    let (rows, cols) = (3, 128);
    let bytes = q5_blocks(rows, cols);
    let m = PackedMatrix::from_q5_0(rows, cols, &bytes).unwrap();
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        m.row(r, &mut row);
        for (c, v) in row.iter().enumerate() {
            let b = &bytes[(r * cols + c) / QK * 22..][..22];
            assert_eq!(*v, q5_value(b, c % QK), "({r}, {c})");
        }
    }
}

fn check_matmul(m: &PackedMatrix, tokens: usize) {
    let cols = m.cols();
    let mut next = lcg(9);
    let x: Vec<f32> = (0..tokens * cols)
        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let a = Activations::quantise(&x, cols);
    let mut fast = vec![0f32; tokens * m.rows()];
    m.matmul(&a, &mut fast);
    let mut row = vec![0f32; cols];
    for t in 0..tokens {
        for r in 0..m.rows() {
            let exact = m.dot_scalar(&a, t, r);
            let got = fast[t * m.rows() + r];
            assert!(
                (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                "t{t} r{r}: {got} vs {exact}"
            );
            // And the quantised product is close to the f32 one.
            m.row(r, &mut row);
            let f: f32 = row.iter().zip(&x[t * cols..]).map(|(w, x)| w * x).sum();
            let scale: f32 = row.iter().map(|w| w.abs()).sum::<f32>() / 100.0 + 1e-3;
            assert!((got - f).abs() <= scale, "t{t} r{r}: {got} vs f32 {f}");
        }
    }
}

#[test]
fn kernels_match_the_reference_for_both_layouts_and_all_token_counts() {
    let (rows, cols) = (37, 192);
    let five = PackedMatrix::from_q5_0(rows, cols, &q5_blocks(rows, cols)).unwrap();
    let mut next = lcg(5);
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let eight = PackedMatrix::from_f32(rows, cols, &values).unwrap();
    for tokens in [1, 2, 3, 4, 5, 7, 8, 9, 33, 70] {
        check_matmul(&five, tokens);
        check_matmul(&eight, tokens);
    }
}

#[test]
fn a_token_in_a_batch_gets_exactly_its_own_product() {
    // Batched decode must not change what a sequence decodes: each
    // token's row of a k-token product equals its product alone, bit for bit.
    let (rows, cols) = (37, 192);
    let m = PackedMatrix::from_q5_0(rows, cols, &q5_blocks(rows, cols)).unwrap();
    const FEW: usize = 8; // the most rows of a batched decode step
    let mut next = lcg(21);
    let x: Vec<f32> = (0..FEW * cols)
        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    for k in 1..=FEW {
        let mut batch = vec![0f32; k * rows];
        m.matmul(&Activations::quantise(&x[..k * cols], cols), &mut batch);
        for t in 0..k {
            let mut alone = vec![0f32; rows];
            m.matmul(
                &Activations::quantise(&x[t * cols..][..cols], cols),
                &mut alone,
            );
            assert_eq!(&batch[t * rows..][..rows], &alone[..], "k={k} t={t}");
        }
    }
}

#[test]
fn q8_0_and_q4_0_convert_exactly() {
    let (rows, cols) = (2, 64);
    let mut next = lcg(11);
    let mut q8 = Vec::new();
    let mut q4 = Vec::new();
    for _ in 0..rows * cols / QK {
        q8.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        q4.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
        for _ in 0..32 {
            q8.push(next() as u8);
        }
        for _ in 0..16 {
            q4.push(next() as u8);
        }
    }
    let m8 = PackedMatrix::from_q8_0(rows, cols, &q8).unwrap();
    let m4 = PackedMatrix::from_q4_0(rows, cols, &q4).unwrap();
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        m8.row(r, &mut row);
        for (c, v) in row.iter().enumerate() {
            let b = &q8[(r * cols + c) / QK * 34..][..34];
            assert_eq!(*v, 0.5 * f32::from(b[2 + c % QK] as i8));
        }
        m4.row(r, &mut row);
        for (c, v) in row.iter().enumerate() {
            let b = &q4[(r * cols + c) / QK * 18..][..18];
            let j = c % QK;
            let nib = if j < 16 {
                b[2 + j] & 15
            } else {
                b[2 + j - 16] >> 4
            };
            assert_eq!(*v, 0.25 * (f32::from(nib) - 8.0));
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    assert!(PackedMatrix::from_q8_0(2, 48, &[0; 2 * 34 * 3 / 2]).is_err());
    assert!(PackedMatrix::from_q8_0(2, 64, &[0; 10]).is_err());
    assert!(PackedMatrix::from_f32(1, 64, &[0.0; 63]).is_err());
}
