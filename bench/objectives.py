#!/usr/bin/env python3
"""PyTorch counterpart of crates/fairpo-objectives/examples/bench_objectives.rs.

Same shapes (B=32, T=80, D=768, heads 768-256-64-16-4-1), PyTorch eager on CPU, float32,
fastest of 15 after 3 warm-up runs (the minimum is least disturbed
by other processes). Prints `row name<TAB>milliseconds` lines, the row names
matching the Rust table. Objectives are vectorised the usual PyTorch way (confusing labels by
argmax of uniform noise over the candidate mask), the same formulas as the Rust crate.
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

B, T, D = 32, 80, 768
SIZES = [D, 256, 64, 16, 4, 1]
WARMUP, ITERS = 3, 15
torch.manual_seed(0)


def time_ms(f):
    for _ in range(WARMUP):
        f()
    v = []
    for _ in range(ITERS):
        t = time.perf_counter()
        f()
        v.append((time.perf_counter() - t) * 1e3)
    return min(v)


class StackedHeads(nn.Module):
    """Same layout as fairpo-heads: [T, in, out] per layer, one batched matmul per layer."""

    def __init__(self):
        super().__init__()
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(T, i, o) / i ** 0.5) for i, o in zip(SIZES, SIZES[1:])])
        self.bs = nn.ParameterList([nn.Parameter(torch.zeros(T, 1, o)) for o in SIZES[1:]])

    def forward(self, z):
        h = z.unsqueeze(0).expand(T, B, D)
        for i, (w, b) in enumerate(zip(self.ws, self.bs)):
            h = torch.bmm(h, w) + b
            if i + 1 < len(self.ws):
                h = F.relu(h)
        return h.reshape(T, B).t()


def loop_heads():
    heads = nn.ModuleList()
    for _ in range(T):
        layers = []
        for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
            layers.append(nn.Linear(a, b))
            if i + 2 < len(SIZES):
                layers.append(nn.ReLU())
        heads.append(nn.Sequential(*layers))
    return lambda z: torch.cat([h(z) for h in heads], dim=1)


def objective(method, s, sr, y, priv, beta=0.5, gamma=0.1, lam=0.5, eps=0.01, lam_p=5.0):
    bce = F.binary_cross_entropy_with_logits(s, y, reduction="none")
    pm = priv.float().expand_as(s)
    npm = 1 - pm
    mean = lambda v, m: (v * m).sum() / m.sum().clamp(min=1)
    if method == "Bce":
        return bce.mean()
    if method == "Reweighted":
        w = pm * lam_p + npm
        return (bce * w).sum() / w.sum()
    if method == "Gdro":
        return 0.5 * mean(bce, pm) + 0.5 * mean(bce, npm)
    with torch.no_grad():
        sd = s.detach()
        pos = y.bool()
        # cand[i, l, k]: k confusing for (i, l)
        ge = sd.unsqueeze(1) >= sd.unsqueeze(2)  # s[k] >= s[l]
        le = sd.unsqueeze(1) <= sd.unsqueeze(2)
        cand = torch.where(pos.unsqueeze(2), (~pos).unsqueeze(1) & ge, pos.unsqueeze(1) & le)
        noise = torch.rand(cand.shape).masked_fill(~cand, -1.0)
        k = noise.argmax(2)
        has = cand.any(2).float() * pm
        l = torch.arange(T).expand(B, T)
        w_idx = torch.where(pos, l, k)
        d_idx = torch.where(pos, k, l)
    lm = F.logsigmoid(s)
    x = lm.gather(1, w_idx) - lm.gather(1, d_idx)
    if method == "Dpo":
        lr = F.logsigmoid(sr)
        pref = -F.logsigmoid(beta * (x - (lr.gather(1, w_idx) - lr.gather(1, d_idx))))
    elif method == "Simpo":
        pref = -F.logsigmoid(beta * x - gamma)
    else:
        pref = -F.logsigmoid(beta * x)
    fb = (1 - has) * pm
    if method == "Cpo":
        per = has * pref + lam * bce
    else:
        per = has * pref + fb * bce
    hinge = F.relu(bce - F.binary_cross_entropy_with_logits(sr, y, reduction="none") - eps)
    return 0.5 * mean(per, pm) + 0.5 * mean(hinge, npm)


def main():
    torch.set_num_threads(torch.get_num_threads())
    z = torch.randn(B, D)
    heads = StackedHeads()
    rows = []

    def fb():
        heads(z).sum().backward()

    rows.append(("heads fwd+bwd, batched (stacked [T,in,out])", time_ms(fb)))
    with torch.no_grad():
        rows.append(("heads fwd only, batched", time_ms(lambda: heads(z))))
    lf = loop_heads()
    rows.append(("heads fwd+bwd, loop over 80 nn::Linear stacks", time_ms(lambda: lf(z).sum().backward())))
    base = torch.randn(B, T) * 2
    sr = torch.randn(B, T) * 2
    y = (torch.rand(B, T) < 0.1).float()
    priv = torch.arange(T) % 5 == 0
    for m in ["Bce", "Reweighted", "Gdro", "Dpo", "Simpo", "Cpo"]:
        def run():
            s = base.clone().requires_grad_()
            objective(m, s, sr, y, priv).backward()
        rows.append((f"objective {m} fwd+bwd (from logits)", time_ms(run)))
    rows.append(("heads + CPO fwd+bwd (per training step)",
                 time_ms(lambda: objective("Cpo", heads(z), sr, y, priv).backward())))
    for name, ms in rows:
        print(f"{name}\t{ms:.4f}")


if __name__ == "__main__":
    main()
