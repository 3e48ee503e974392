"""A small Vision Transformer in torch (needs ``hec[train]``), for training and for ONNX fixtures.

The patch embedding is either a Conv with kernel = stride = patch (as in most ViTs) or an explicit
reshape into patch rows followed by a Linear layer; both export to the two forms that
``hec vit adapt`` rewrites. Position embeddings are learned and added per token, with a class token
in front whose final state feeds the classifier head.
"""

from __future__ import annotations

from typing import Any

from hec.errors import EnvironmentProblem

__all__ = ["import_torch", "make_vit"]


def import_torch() -> Any:
    """Import torch or explain how to get it."""
    try:
        import torch
    except ImportError:
        raise EnvironmentProblem(
            "ViT training needs torch, which is not installed; pip install 'hec[train]'"
        ) from None
    return torch


def make_vit(
    image_size: tuple[int, int],
    channels: int,
    patch: int,
    *,
    dim: int = 32,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: int = 2,
    classes: int = 10,
    embed: str = "conv",
    dropout: float = 0.0,
) -> Any:
    """Build a ``TinyViT`` torch module (class-token pooling, learned position embeddings)."""
    torch = import_torch()
    nn = torch.nn
    # the base class as a value: torch is imported on demand, untyped (Any) here
    Module: Any = nn.Module
    h, w = image_size
    gh, gw = h // patch, w // patch
    nb, length = gh * gw, patch * patch * channels

    class Attention(Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.out = nn.Linear(dim, dim)

        def forward(self, x: Any) -> Any:
            n, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(n, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5
            y = att.softmax(dim=-1) @ v
            return self.out(y.transpose(1, 2).reshape(n, t, dim))

    class Block(Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = Attention()
            self.mlp = nn.Sequential(
                nn.Linear(dim, mlp_ratio * dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(mlp_ratio * dim, dim),
            )
            self.drop = nn.Dropout(dropout)

        def forward(self, x: Any) -> Any:
            x = x + self.drop(self.attn(self.ln1(x)))
            return x + self.drop(self.mlp(self.ln2(x)))

    class TinyViT(Module):
        def __init__(self) -> None:
            super().__init__()
            if embed == "conv":
                self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
            elif embed == "linear":
                self.embed = nn.Linear(length, dim)
            else:
                raise ValueError(f"embed must be conv or linear, got {embed!r}")
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos = nn.Parameter(torch.randn(1, nb + 1, dim) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, classes)

        def tokens(self, x: Any) -> Any:
            n = x.shape[0]
            if embed == "conv":
                return self.embed(x).flatten(2).transpose(1, 2)
            # Rows of (channel, row, column) patch values, as timm-style "unfold" code writes it.
            rows = x.reshape(n, channels, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
            return self.embed(rows.reshape(n, nb, length))

        def forward(self, x: Any) -> Any:
            t = self.tokens(x)
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
            for block in self.blocks:
                t = block(t)
            return self.head(self.norm(t)[:, 0])

    return TinyViT()
