"""The ``tabular_torch`` example: a small MLP classifier saved as TorchScript (seeded, no downloads)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

FEATURES = 16
CLASSES = 4


class TabularClassifier(nn.Module):
    """features [batch, 16] -> 64 -> 32 -> probabilities [batch, 4] (softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, CLASSES)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.layers(features), dim=-1)


def save_tabular_torch(path: Path, seed: int = 0) -> None:
    """Script the classifier and save it with ``torch.jit.save`` (a TorchScript archive, not a pickle)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        module = TabularClassifier().eval()
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream as it was
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the format the torch engine loads safely.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=DeprecationWarning)
        scripted = torch.jit.script(module)
        torch.jit.save(scripted, str(path))
