"""The paper's tagger in PyTorch: a benchmark baseline only (imported when torch is).

Same network as `transfer_jax.model.Tagger` ("running" / "train" modes): Conv2d 3x3
padding 1 -> BatchNorm2d(eps 1e-3, momentum 0.01 = Keras/Flax 0.99) -> ELU -> MaxPool2d,
five times, input (batch, 1, n_mels, frames) in channels_last memory format; features =
the global average of each block's pooled output, logits = Linear(last one).
`copy_flax_variables` loads a Flax tagger's variables so both compute the same numbers.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from transfer_jax.config import ModelConfig


class TorchTagger(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c = config.channels
        self.blocks = nn.ModuleList()
        for i, pool in enumerate(config.pools):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(1 if i == 0 else c, c, 3, padding=1),
                nn.BatchNorm2d(c, eps=config.bn_epsilon, momentum=1.0 - config.bn_momentum),
                nn.ELU(), nn.MaxPool2d(pool, stride=pool)))
        self.dense = nn.Linear(c, config.n_classes)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (batch, n_mels, frames) -> (logits (batch, n_classes), features
        (batch, n_layers, channels))."""
        x = mel[:, None].contiguous(memory_format=torch.channels_last)
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x.mean(dim=(2, 3)))
        return self.dense(feats[-1]), torch.stack(feats, dim=1)


def build(config: ModelConfig = ModelConfig(), device: str = "cpu") -> TorchTagger:
    return TorchTagger(config).to(device).to(memory_format=torch.channels_last)


def copy_flax_variables(model: TorchTagger, variables: dict) -> None:
    """Flax {'params', 'batch_stats'} -> torch (kernels HWIO -> OIHW, dense transposed)."""
    p, s = variables["params"], variables["batch_stats"]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))  # noqa: E731
    with torch.no_grad():
        for i, block in enumerate(model.blocks, start=1):
            conv, bn = block[0], block[1]
            conv.weight.copy_(t(np.transpose(p[f"conv{i}"]["kernel"], (3, 2, 0, 1))))
            conv.bias.copy_(t(p[f"conv{i}"]["bias"]))
            bn.weight.copy_(t(p[f"bn{i}"]["scale"]))
            bn.bias.copy_(t(p[f"bn{i}"]["bias"]))
            bn.running_mean.copy_(t(s[f"bn{i}"]["mean"]))
            bn.running_var.copy_(t(s[f"bn{i}"]["var"]))
        model.dense.weight.copy_(t(np.asarray(p["dense"]["kernel"]).T))
        model.dense.bias.copy_(t(p["dense"]["bias"]))


def forward_fn(model: TorchTagger):
    """mel (batch, n_mels, frames), numpy or a tensor -> numpy features, in inference mode.
    A tensor already on the model's device is used as it is (no copy)."""
    model.eval()
    device = next(model.parameters()).device

    def forward(mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.as_tensor(mel, device=device))[1]
            return out.cpu().numpy()

    return forward


def train_step_fn(model: TorchTagger, learning_rate: float = 1e-3):
    """(mel, labels) numpy or tensors -> loss float; Adam, BCE with logits, BatchNorm in
    train mode. Tensors already on the model's device are used as they are (no copy)."""
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()

    def step(mel: np.ndarray, labels: np.ndarray) -> float:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(torch.as_tensor(mel, device=device))[0], torch.as_tensor(labels, device=device))
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step
