#!/usr/bin/env python3
"""PyTorch eager counterpart of crates/fairpo-vit/examples/bench_vit.rs.

ViT-B/16 (random weights, real shapes) from transformers:
- forward: eval mode, no_grad, batch 8 and 32 -> images/s
- the same forward and train step under torch.autocast(bfloat16) ("*_bf16")
- train step (the paper's setting): frozen trunk (embeddings + layers 0..10, no_grad),
  trainable last layer + final LayerNorm + 80 per-label MLP heads (768-256-64-16-4-1),
  BCE loss, backward, AdamW step -> images/s

Prints one JSON object per measurement on stdout: {"name": ..., "batch": ..., "img_per_s": ...}.
Usage: python3 bench/vit.py [--threads 2] [--iters 2] [--device cpu|cuda] [--batches 8,32]
"""

import argparse
import json
import time

import torch
from transformers import ViTConfig, ViTModel


class Heads(torch.nn.Module):
    """80 independent MLPs evaluated together (stacked weights, batched matmul)."""

    def __init__(self, num_labels=80, dims=(768, 256, 64, 16, 4, 1)):
        super().__init__()
        self.ws = torch.nn.ParameterList()
        self.bs = torch.nn.ParameterList()
        for i, o in zip(dims[:-1], dims[1:]):
            self.ws.append(torch.nn.Parameter(torch.randn(num_labels, i, o) * (1.0 / i) ** 0.5))
            self.bs.append(torch.nn.Parameter(torch.zeros(num_labels, 1, o)))

    def forward(self, z):  # z [B, D] -> logits [B, T]
        x = z.unsqueeze(0).expand(self.ws[0].shape[0], -1, -1)  # [T, B, D]
        for k, (w, b) in enumerate(zip(self.ws, self.bs)):
            x = torch.baddbmm(b, x, w)
            if k < len(self.ws) - 1:
                x = torch.relu(x)
        return x.squeeze(-1).transpose(0, 1)


def first(out):
    return out[0] if isinstance(out, tuple) else out


def timed(fn, iters, sync):
    fn()  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    model = ViTModel(ViTConfig(), add_pooling_layer=False).to(dev, dtype).eval()
    for b in [int(x) for x in args.batches.split(",")]:
        x = torch.randn(b, 3, 224, 224, device=dev, dtype=dtype)

        def fwd():
            with torch.no_grad():
                model(pixel_values=x).last_hidden_state[:, 0]

        s = timed(fwd, args.iters, sync)
        print(json.dumps({"name": "forward", "batch": b, "img_per_s": b / s}), flush=True)

        def fwd_bf16():
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
                model(pixel_values=x).last_hidden_state[:, 0]

        s = timed(fwd_bf16, args.iters, sync)
        print(json.dumps({"name": "forward_bf16", "batch": b, "img_per_s": b / s}), flush=True)

    # Train step: trunk frozen, last layer + final LN + heads trainable.
    # transformers 5 keeps the layers in `model.layers`; 4.x in `model.encoder.layer`.
    layers = model.layers if hasattr(model, "layers") else model.encoder.layer
    last, ln = layers[-1], model.layernorm
    heads = Heads().to(dev, dtype)
    params = list(last.parameters()) + list(ln.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    last.train()
    for b in [int(x) for x in args.batches.split(",")]:
        x = torch.randn(b, 3, 224, 224, device=dev, dtype=dtype)
        y = (torch.rand(b, 80, device=dev) < 0.1).to(dtype)

        def step():
            with torch.no_grad():
                h = model.embeddings(x)
                for layer in layers[:-1]:
                    h = first(layer(h))
            h = first(last(h))
            z = ln(h)[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(heads(z), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        s = timed(step, args.iters, sync)
        print(json.dumps({"name": "train_step", "batch": b, "img_per_s": b / s}), flush=True)

        def step_bf16():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                step()

        s = timed(step_bf16, args.iters, sync)
        print(json.dumps({"name": "train_step_bf16", "batch": b, "img_per_s": b / s}), flush=True)


if __name__ == "__main__":
    main()
