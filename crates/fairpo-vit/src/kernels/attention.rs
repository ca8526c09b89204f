//! Multi-head attention on the host, one (image, head) task at a time in an `S×S` scratch
//! that stays in cache, forward and backward.

use rayon::prelude::*;

use super::gemm::{gemm_serial, HeadBlock, HeadBlocks, In, Out};
use super::lanes::lane_dot;
use super::softmax::{exp_shifted_row, softmax_row};

/// Where image `image`'s head `head` starts in a `[B·S, width]` buffer.
fn head_start(image: usize, head: usize, seq: usize, width: usize, hd: usize) -> usize {
    image * seq * width + head * hd
}

/// Q, K and V of one (image, head) from `qkv` `[B·S, 3·D]`.
fn qkv_of<'a>(
    qkv: &'a [f32],
    block: &HeadBlock<'_>,
    seq: usize,
    d: usize,
    hd: usize,
) -> [In<'a>; 3] {
    let first = head_start(block.image, block.head, seq, 3 * d, hd);
    [0, d, 2 * d].map(|offset| In::rows(&qkv[first + offset..], 3 * d))
}

/// `context[b·S + i, h·hd + j] = Σ_t softmax_t(q_i · k_t) · v_t[j]` for every image b and
/// head h, where row r of `qkv` is `[q (already scaled by 1/√hd) | k | v]` of token r.
/// With `probs`, the softmax probabilities of task (b, h) are kept in
/// `probs[(b·H + h)·S·S ..]` (for the backward pass).
///
/// # Shapes
/// - qkv: `[B·S, 3·D]`
/// - context: `[B·S, D]`
/// - probs: `[B·H, S, S]`
pub(crate) fn attention(
    qkv: &[f32],
    context: &mut [f32],
    seq: usize,
    heads: usize,
    hd: usize,
    probs: Option<&mut [f32]>,
) {
    let d = heads * hd;
    let images = context.len() / (seq * d);
    assert!(qkv.len() == 3 * context.len() && images * seq * d == context.len());
    let blocks = HeadBlocks::new(context, seq, heads, hd, 1).into_par_iter();
    let one = |mut block: HeadBlock<'_>, scores: &mut [f32], inv_sums: Option<&mut [f32]>| {
        let [q, k, v] = qkv_of(qkv, &block, seq, d, hd);
        // scores = Q · Kᵀ
        gemm_serial(seq, seq, hd, Out::new(scores, seq), q, k.t());
        match inv_sums {
            // Kept for backward: the normalised probabilities.
            None => {
                scores.chunks_mut(seq).for_each(softmax_row);
                block.gemm(0, seq, In::rows(scores, seq), v);
            }
            // softmax's 1/Σ on the hd outputs of each row instead of its seq inputs.
            Some(inv) => {
                for (row, inv) in scores.chunks_mut(seq).zip(inv.iter_mut()) {
                    *inv = exp_shifted_row(row).recip();
                }
                block.gemm(0, seq, In::rows(scores, seq), v);
                block.scale_rows(0, inv);
            }
        }
    };
    match probs {
        Some(p) => {
            assert_eq!(p.len(), images * heads * seq * seq);
            blocks
                .zip(p.par_chunks_mut(seq * seq))
                .for_each(|(block, scores)| one(block, scores, None));
        }
        None => blocks.for_each_init(
            || (vec![0.0f32; seq * seq], vec![0.0f32; seq]),
            |(scores, inv_sums), block| one(block, scores, Some(inv_sums)),
        ),
    }
}

/// `∂L/∂[q/√hd | k | v]` `[B·S, 3D]` from `∂L/∂context` `[B·S, D]`, per (image, head):
/// with P = softmax(S), S = Q·Kᵀ, C = P·V:
/// dV = Pᵀ·dC, dP = dC·Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = dS·K, dK = dSᵀ·Q.
///
/// # Shapes
/// - qkv: `[B·S, 3·D]` (as given to [`attention`])
/// - probs: `[B·H, S, S]` (as kept by [`attention`])
/// - dcontext: `[B·S, D]`
pub(crate) fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    dcontext: &[f32],
    seq: usize,
    heads: usize,
    hd: usize,
) -> Vec<f32> {
    let d = heads * hd;
    let mut dqkv = vec![0.0f32; 3 * dcontext.len()];
    HeadBlocks::new(&mut dqkv, seq, heads, hd, 3)
        .into_par_iter()
        .for_each_init(
            || vec![0.0f32; seq * seq],
            |ds, mut block| {
                let task = block.task;
                let probs = &probs[task * seq * seq..(task + 1) * seq * seq];
                let p = In::rows(probs, seq);
                let [q, k, v] = qkv_of(qkv, &block, seq, d, hd);
                let dc = In::rows(
                    &dcontext[head_start(block.image, block.head, seq, d, hd)..],
                    d,
                );
                gemm_serial(seq, seq, hd, Out::new(ds, seq), dc, v.t());
                for (dp, p) in ds.chunks_mut(seq).zip(probs.chunks(seq)) {
                    let dot = lane_dot(dp, p);
                    for (g, &p) in dp.iter_mut().zip(p) {
                        *g = p * (*g - dot);
                    }
                }
                let ds = In::rows(ds, seq);
                block.gemm(2, seq, p.t(), dc);
                block.gemm(0, seq, ds, k);
                block.gemm(1, seq, ds.t(), q);
            },
        );
    dqkv
}
