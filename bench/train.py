#!/usr/bin/env python3
"""PyTorch counterpart of `bench_train`'s COCO-shaped FairPO-CPO step.

Same step as the Rust trainer (DESIGN.md "Data flow of one training step"):
ViT-B/16 with random weights at 224 px, batch 32, T = 80 labels, |P| = 16;
frozen trunk (embeddings + layers 0..10) under no_grad, trainable last layer + final
LayerNorm + per-label MLP heads [768, 256, 64, 16, 4, 1] evaluated for all labels at once
(batched matmuls), a frozen reference tail + heads, the CPO privileged loss with confusing
labels drawn uniformly (argmax of uniform noise over the masked candidates), the
non-privileged hinge against the reference, GRPO group weights, backward, gradient
clipping at norm 1 and AdamW (lr 1e-4, weight decay 0.01).

Prints one line `img_per_s=<value>` (mean over the timed steps) for the Rust side to parse.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from transformers import ViTConfig, ViTModel


class Heads(torch.nn.Module):
    """T independent MLPs evaluated together: [B, D] -> [B, T]."""

    def __init__(self, t, d, hidden=(256, 64, 16, 4)):
        super().__init__()
        sizes = [d, *hidden, 1]
        self.t = t
        self.first_w = torch.nn.Parameter(torch.empty(d, t * sizes[1]).uniform_(-d**-0.5, d**-0.5))
        self.first_b = torch.nn.Parameter(torch.zeros(t * sizes[1]))
        self.ws = torch.nn.ParameterList()
        self.bs = torch.nn.ParameterList()
        for i, o in zip(sizes[1:-1], sizes[2:]):
            self.ws.append(torch.nn.Parameter(torch.empty(t, i, o).uniform_(-i**-0.5, i**-0.5)))
            self.bs.append(torch.nn.Parameter(torch.zeros(t, 1, o)))

    def forward(self, z):
        b = z.shape[0]
        h = z @ self.first_w + self.first_b
        h = F.relu(h).reshape(b, self.t, -1).transpose(0, 1)  # [T, B, H1]
        for i, (w, bias) in enumerate(zip(self.ws, self.bs)):
            h = torch.bmm(h, w) + bias
            if i < len(self.ws) - 1:
                h = F.relu(h)
        return h.reshape(self.t, b).T


def tail_forward(vit, layer, hidden):
    x = layer(hidden)
    x = x[0] if isinstance(x, tuple) else x
    return vit.layernorm(x)[:, 0]


def cpo_losses(s, y, s_ref, priv, beta=0.5, lam=0.5, eps=0.01):
    logm, log1m = F.logsigmoid(s), F.logsigmoid(-s)
    bce = -(y * logm + (1 - y) * log1m)
    with torch.no_grad():
        m = torch.sigmoid(s)
        pidx = priv.nonzero().squeeze(1)
        mp = m[:, pidx].unsqueeze(2)  # [B, P, 1]
        yp = y[:, pidx].unsqueeze(2)
        mk, yk = m.unsqueeze(1), y.unsqueeze(1)  # [B, 1, T]
        cand = torch.where(yp > 0.5, (yk < 0.5) & (mk >= mp), (yk > 0.5) & (mk <= mp))
        noise = torch.rand(cand.shape).masked_fill(~cand, -1.0)
        k = noise.argmax(2)
        has = cand.any(2)
    lp = logm[:, pidx]
    lk = torch.gather(logm, 1, k)
    x = torch.where(yp.squeeze(2) > 0.5, lp - lk, lk - lp)
    pref = F.softplus(-beta * x) * has
    l_p = (pref + lam * bce[:, pidx]).mean()
    ref_bce = -(y * F.logsigmoid(s_ref) + (1 - y) * F.logsigmoid(-s_ref))
    np_mask = ~priv
    l_np = F.relu(bce[:, np_mask] - ref_bce[:, np_mask] - eps).mean()
    return l_p, l_np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t, p = 80, 16
    vit = ViTModel(ViTConfig(), add_pooling_layer=False).eval()
    enc = getattr(vit, "encoder", None)  # transformers 4: vit.encoder.layer; 5: vit.layers
    layers = enc.layer if enc is not None else vit.layers
    for prm in vit.parameters():
        prm.requires_grad_(False)
    for prm in list(layers[-1].parameters()) + list(vit.layernorm.parameters()):
        prm.requires_grad_(True)
    import copy
    ref_layer = copy.deepcopy(layers[-1]).requires_grad_(False)
    heads, ref_heads = Heads(t, 768), Heads(t, 768).requires_grad_(False)
    params = [q for q in vit.parameters() if q.requires_grad] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    priv = torch.zeros(t, dtype=torch.bool)
    priv[:p] = True
    alpha, avg = [0.5, 0.5], None
    pixels = torch.randn(args.batch, 3, 224, 224)
    y = (torch.rand(args.batch, t) < 0.05).float()
    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            h = vit.embeddings(pixels)
            for layer in layers[:-1]:
                h = layer(h)
                h = h[0] if isinstance(h, tuple) else h
            s_ref = ref_heads(tail_forward(vit, ref_layer, h))
        s = heads(tail_forward(vit, layers[-1], h))
        l_p, l_np = cpo_losses(s, y, s_ref, priv)
        vals = [l_p.item(), l_np.item()]
        if avg is None:
            avg = vals[:]
        scaled = [(v - a) / (abs(a) + 1e-6) for v, a in zip(vals, avg)]
        w = [a * torch.tensor(0.05 * sc).clamp(-10, 10).exp().item() for a, sc in zip(alpha, scaled)]
        alpha = [x / sum(w) for x in w]
        avg = [0.9 * a + 0.1 * v for a, v in zip(avg, vals)]
        loss = alpha[0] * l_p + alpha[1] * l_np
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}, "
          f"mean step {sum(times) / len(times):.3f} s")
    print(f"img_per_s={args.batch * len(times) / sum(times):.4f}")


if __name__ == "__main__":
    main()
