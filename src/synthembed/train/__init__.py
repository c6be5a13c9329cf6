"""Contrastive LoRA training of the embedder: InfoNCE loss, trainer setup, DeepSpeed launch, export."""
