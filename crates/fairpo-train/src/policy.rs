//! The trainable policy: the ViT tail and the per-label heads on top of it.

use burn::prelude::*;
use fairpo_heads::Heads;
use fairpo_vit::ViTTail;

/// The trainable part of a run: the last `k` encoder layers (+ final LayerNorm, + the
/// embeddings when everything trains) and the per-label heads.
#[derive(Module, Debug)]
pub struct Policy<B: Backend> {
    /// Trainable top of the backbone.
    pub tail: ViTTail<B>,
    /// Per-label MLP heads.
    pub heads: Heads<B>,
}

impl<B: Backend> Policy<B> {
    /// Logits from the frozen trunk's output.
    ///
    /// # Shapes
    /// - hidden: `[B, N+1, D]` (or `[B, N, C·p·p]` patches when every layer trains)
    /// - output: logits `[B, T]`
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        self.heads.forward(self.tail.forward(hidden))
    }
}
