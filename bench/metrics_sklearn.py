#!/usr/bin/env python3
"""Python counterpart of `cargo xtask bench metrics` (crates/fairpo-metrics/examples/bench_metrics.rs).

Computes, with scikit-learn in one process, every metric fairpo-metrics computes for the three
label groups (all, privileged, non-privileged) on the same arrays:
  AP per label (average_precision_score, labels with a positive) -> mAP,
  f1_score(average="samples", zero_division=0), subset accuracy (EMR), 1 - hamming_loss,
with predictions `scores >= 0.5` (float32). Times `--repeats` runs after one warm-up and prints
one JSON object: {"median_s", "min_s", "runs", "sklearn", "groups": {...}}.

Usage: bench/metrics_sklearn.py S.npy Y.npy --privileged 1,2,3 [--repeats 3]
"""
import argparse
import json
import time
import warnings

import numpy as np
import sklearn
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss


def all_metrics(s, y, privileged):
    t = s.shape[1]
    priv = sorted(privileged)
    nonpriv = [j for j in range(t) if j not in set(priv)]
    out = {}
    for name, labels in (("all", list(range(t))), ("privileged", priv), ("non_privileged", nonpriv)):
        aps = [average_precision_score(y[:, j], s[:, j]) for j in labels if y[:, j].any()]
        yt = y[:, labels]
        yp = (s[:, labels] >= np.float32(0.5)).astype(np.uint8)
        out[name] = {
            "map": float(np.mean(aps)) if aps else None,
            "sample_f1": float(f1_score(yt, yp, average="samples", zero_division=0)),
            "emr": float(accuracy_score(yt, yp)),
            "accuracy": float(1.0 - hamming_loss(yt, yp)),
            "labels_scored": len(aps),
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scores")
    ap.add_argument("targets")
    ap.add_argument("--privileged", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    s = np.load(a.scores)
    y = np.load(a.targets)
    privileged = [int(v) for v in a.privileged.split(",") if v]
    warnings.simplefilter("ignore")
    groups = all_metrics(s, y, privileged)  # warm-up
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        groups = all_metrics(s, y, privileged)
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "median_s": float(np.median(times)),
        "min_s": min(times),
        "runs": len(times),
        "sklearn": sklearn.__version__,
        "groups": groups,
    }))


if __name__ == "__main__":
    main()
