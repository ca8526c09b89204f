#!/usr/bin/env python3
"""PyTorch side of `cargo xtask parity`: the demo's BCE-SFT learning curve from a shared start.

`init`: builds the demo's tiny ViT (transformers `ViTModel`: hidden 64, 4 layers, 4 heads,
MLP 128, patch 4, 32 px, LayerNorm eps 1e-12, exact GELU) and the paper's per-label heads
(D -> 256 -> 64 -> 16 -> 4 -> 1, nn.Linear's default init) from a seed, and saves them where
fairpo reads them: `<out>/init/` (a Hugging Face folder) and `<out>/init_heads.safetensors`
(`heads.{k}.weight` [T, out, in], `heads.{k}.bias` [T, out]).

`train`: trains that start with BCE on every training image of the demo set (the COCO
layout's train2014; fairpo is run with `select_on = "test"`, so it trains on all of them too),
AdamW (lr 1e-3, weight decay 0.01, eps 1e-8), `clip_grad_norm_(1.0)`, batch 32, a fresh
shuffle per epoch; after each epoch it evaluates test (val2014) mAP overall and per group,
with the privileged labels read from fairpo's `partition.json`, AP as scikit-learn's
`average_precision_score` over labels that have a positive. Images are read with Pillow and
normalised as fairpo's defaults: x / 255, then (x - 0.5) / 0.5 (the images are already 32 px).

Prints one JSON line per epoch: {"epoch", "train_loss", "map_all", "map_p", "map_np", "seconds"}.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import average_precision_score
from transformers import ViTConfig, ViTModel

HIDDEN = [256, 64, 16, 4]


class Heads(torch.nn.Module):
    """T independent MLPs, weights stacked [T, out, in]."""

    def __init__(self, t, d, gen):
        super().__init__()
        sizes = [d, *HIDDEN, 1]
        self.w = torch.nn.ParameterList()
        self.b = torch.nn.ParameterList()
        for i, o in zip(sizes[:-1], sizes[1:]):
            bound = i ** -0.5
            self.w.append(torch.nn.Parameter((torch.rand(t, o, i, generator=gen) * 2 - 1) * bound))
            self.b.append(torch.nn.Parameter((torch.rand(t, o, generator=gen) * 2 - 1) * bound))

    def forward(self, z):
        h = z.unsqueeze(0).expand(len(self.w[0]), -1, -1)
        for k, (w, b) in enumerate(zip(self.w, self.b)):
            h = torch.einsum("tbi,toi->tbo", h, w) + b.unsqueeze(1)
            if k < len(self.w) - 1:
                h = F.relu(h)
        return h.squeeze(2).T

    def tensors(self):
        out = {}
        for k, (w, b) in enumerate(zip(self.w, self.b)):
            out[f"heads.{k}.weight"] = w.detach().clone().contiguous()
            out[f"heads.{k}.bias"] = b.detach().clone().contiguous()
        return out

    def load(self, path):
        d = safetensors.torch.load_file(path)
        for k, (w, b) in enumerate(zip(self.w, self.b)):
            w.data.copy_(d[f"heads.{k}.weight"])
            b.data.copy_(d[f"heads.{k}.bias"])


def load_split(root, split):
    meta = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    cats = sorted(c["id"] for c in meta["categories"])
    col = {c: i for i, c in enumerate(cats)}
    names = {c["id"]: c["name"] for c in meta["categories"]}
    images = sorted(meta["images"], key=lambda im: im["file_name"])
    row = {im["id"]: i for i, im in enumerate(images)}
    y = np.zeros((len(images), len(cats)), np.float32)
    for a in meta["annotations"]:
        y[row[a["image_id"]], col[a["category_id"]]] = 1.0
    x = np.stack([np.asarray(Image.open(root / split / im["file_name"]).convert("RGB"), np.float32)
                  for im in images])
    x = ((x / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), [names[c] for c in cats]


def mean_ap(y, s, cols):
    aps = [average_precision_score(y[:, t], s[:, t]) for t in cols if y[:, t].sum() > 0]
    return float(np.mean(aps)) if aps else float("nan")


def init(args):
    torch.manual_seed(args.seed)
    cfg = ViTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                    image_size=32, patch_size=4, num_channels=3, layer_norm_eps=1e-12,
                    hidden_act="gelu", qkv_bias=True, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    vit = ViTModel(cfg, add_pooling_layer=False)
    out = Path(args.out)
    vit.save_pretrained(out / "init", safe_serialization=True)
    _, _, names = load_split(Path(args.data), "val2014")
    heads = Heads(len(names), 64, torch.Generator().manual_seed(args.seed + 1))
    safetensors.torch.save_file(heads.tensors(), out / "init_heads.safetensors")


def train(args):
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    root, out = Path(args.data), Path(args.out)
    xtr, ytr, names = load_split(root, "train2014")
    xte, yte, _ = load_split(root, "val2014")
    part = json.loads(Path(args.partition).read_text())
    if part["labels"] != names:
        raise SystemExit(f"label order differs from fairpo's partition.json: {names} vs {part['labels']}")
    priv = set(part["privileged"])
    groups = dict(all=range(len(names)), p=sorted(priv), np=[t for t in range(len(names)) if t not in priv])
    vit = ViTModel.from_pretrained(out / "init", add_pooling_layer=False).train()
    heads = Heads(len(names), 64, torch.Generator())
    heads.load(out / "init_heads.safetensors")
    params = list(vit.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, eps=1e-8)
    n, b = len(xtr), 32
    orders = json.loads(Path(args.orders).read_text()) if args.orders else None
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        perm = torch.tensor(orders[epoch]) if orders else torch.randperm(n)
        total, steps = 0.0, 0
        for i in range(0, n, b):
            idx = perm[i:i + b]
            s = heads(vit(pixel_values=xtr[idx]).last_hidden_state[:, 0])
            loss = F.binary_cross_entropy_with_logits(s, ytr[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            total += loss.item()
            steps += 1
        with torch.no_grad():
            vit.eval()
            scores = torch.cat([torch.sigmoid(heads(vit(pixel_values=xte[i:i + 256]).last_hidden_state[:, 0]))
                                for i in range(0, len(xte), 256)]).numpy()
            vit.train()
        y = yte.numpy()
        line = dict(epoch=epoch + 1, train_loss=total / steps, seconds=time.perf_counter() - t0,
                    **{f"map_{g}": mean_ap(y, scores, cols) for g, cols in groups.items()})
        print(json.dumps(line), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["init", "train"])
    ap.add_argument("--data", default="data/demo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--partition")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--orders", help="JSON list of per-epoch image orders (default: torch.randperm)")
    args = ap.parse_args()
    init(args) if args.mode == "init" else train(args)


if __name__ == "__main__":
    main()
