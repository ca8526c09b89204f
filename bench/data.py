#!/usr/bin/env python3
"""Python counterpart of `cargo xtask bench data` (crates/fairpo-data/examples/bench_data.rs).

Same pipeline on the same JPEG files: PIL decode -> convert RGB -> resize shorter side to 256
(bilinear, torchvision's Resize(256) arithmetic) -> centre crop 224 -> float32 /255 -> normalise
(mean = std = 0.5) -> [3,224,224]. Timed with 1 process and with N worker processes
(multiprocessing.Pool), after one warm-up pass. Prints one JSON object.
"""
import argparse
import glob
import json
import multiprocessing as mp
import os
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.5, 0.5, 0.5], np.float32)
STD = np.array([0.5, 0.5, 0.5], np.float32)


def process(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = 256, int(256 * h / w)
    else:
        nw, nh = int(256 * w / h), 256
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - 224) / 2.0))
    left = int(round((nw - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return ((arr - MEAN) / STD).transpose(2, 0, 1).sum()


def run(files, procs, repeats):
    """Best wall-clock images/s; for one process also images per CPU-second (process_time)."""
    best = float("inf")
    if procs == 1:
        for f in files[:8]:
            process(f)
        cpu = time.process_time()
        for _ in range(repeats):
            t = time.perf_counter()
            for f in files:
                process(f)
            best = min(best, time.perf_counter() - t)
        return len(files) / best, len(files) * repeats / (time.process_time() - cpu)
    else:
        with mp.Pool(procs) as pool:
            pool.map(process, files[: 8 * procs], chunksize=4)
            for _ in range(repeats):
                t = time.perf_counter()
                pool.map(process, files, chunksize=8)
                best = min(best, time.perf_counter() - t)
    return len(files) / best, float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.dir, "*.jpg")))
    if not files:
        raise SystemExit(f"no .jpg files in {a.dir}")
    import PIL

    out = {
        "images": len(files),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "procs": a.procs,
    }
    out["one_process_images_per_s"], out["one_process_images_per_cpu_s"] = run(files, 1, a.repeats)
    out["n_process_images_per_s"], _ = run(files, a.procs, a.repeats)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
