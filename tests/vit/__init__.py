"""Tests of the ViT block-wise image encryption (a package, so its conftest has its own name)."""
