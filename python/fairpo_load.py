"""Load a `fairpo export` folder into transformers' ViTModel plus the label heads.

    from fairpo_load import load
    model = load("exports/coco-cpo")           # a torch.nn.Module
    probs = model.predict(["a.jpg", "b.png"])  # [N, T] probabilities, model.labels names them

Probabilities are sigmoid(heads(CLS after the final LayerNorm)): the CLS row of ViTModel's
last_hidden_state, then per label an MLP (heads.{k}.weight [T, out, in], heads.{k}.bias [T, out],
ReLU between layers, one logit from the last). Needs numpy, torch, transformers, safetensors and
Pillow. Command line: python3 python/fairpo_load.py EXPORT_DIR IMAGE... prints one JSON line per
image.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import ViTImageProcessor, ViTModel


class Heads(torch.nn.Module):
    """The per-label MLP heads, evaluated for every label at once."""

    def __init__(self, tensors):
        super().__init__()
        self.weights, self.biases = [], []
        k = 0
        while f"heads.{k}.weight" in tensors:
            self.weights.append(torch.nn.Parameter(tensors[f"heads.{k}.weight"]))
            self.biases.append(torch.nn.Parameter(tensors[f"heads.{k}.bias"]))
            k += 1
        if not self.weights:
            raise ValueError("no heads.0.weight: not a fairpo export")
        self.weights = torch.nn.ParameterList(self.weights)
        self.biases = torch.nn.ParameterList(self.biases)

    def forward(self, z):  # z [B, D] -> logits [B, T]
        x = z.unsqueeze(0).expand(self.weights[0].shape[0], -1, -1)  # [T, B, D]
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))  # [T, B, out]
            if k < len(self.weights) - 1:
                x = torch.relu(x)
        return x.squeeze(-1).transpose(0, 1)


class FairpoModel(torch.nn.Module):
    def __init__(self, folder):
        super().__init__()
        self.vit = ViTModel.from_pretrained(folder, add_pooling_layer=False)
        self.heads = Heads(load_file(os.path.join(folder, "model.safetensors")))
        self.processor = ViTImageProcessor.from_pretrained(folder)
        with open(os.path.join(folder, "labels.json")) as f:
            meta = json.load(f)
        self.labels, self.privileged = meta["labels"], meta["privileged"]
        self.eval()

    def forward(self, pixel_values):  # [B, 3, H, W] -> probabilities [B, T]
        cls = self.vit(pixel_values=pixel_values).last_hidden_state[:, 0]
        return torch.sigmoid(self.heads(cls))

    @torch.no_grad()
    def predict(self, paths):
        from PIL import Image

        images = [Image.open(p).convert("RGB") for p in paths]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return self(pixels)


def load(folder):
    return FairpoModel(folder)


if __name__ == "__main__":
    model = load(sys.argv[1])
    for path, p in zip(sys.argv[2:], model.predict(sys.argv[2:]).tolist()):
        print(json.dumps({"path": path, **dict(zip(model.labels, p))}))
