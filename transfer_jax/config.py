"""The paper's constants and the configs built from them: one source of truth.

Every module imports its defaults from here; experiment configs override them.
Spec: Choi et al., ISMIR 2017, as computed by the published Keras 1/Theano model.
"""
from __future__ import annotations

import dataclasses
import math

# The 50 Last.fm tags of the MSD tagging split, in label order.
MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists",
    "dance", "00s", "alternative rock", "jazz", "beautiful", "metal", "chillout",
    "male vocalists", "classic rock", "soul", "indie rock", "Mellow", "electronica",
    "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues",
    "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar",
    "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad",
    "House", "happy",
)

N_LAYERS = 5
PAPER_POOLS: tuple[tuple[int, int], ...] = ((2, 4), (3, 4), (2, 5), (2, 4), (4, 4))


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
    """Log-mel frontend, as kapre computed it inside the published model.

    `pad_left` fixes the STFT framing: frame t covers samples
    [t * hop - pad_left, t * hop - pad_left + n_fft). Theano's 'same' convolution pads
    n_fft // 2 and, being a true convolution, flips the STFT kernels, which delays the
    periodic Hann window by one sample: hence n_fft // 2 + 1 = 257.
    """

    sample_rate: int = 12_000
    n_samples: int = 348_000  # 29 s
    n_fft: int = 512
    hop_length: int = 256
    pad_left: int = 257
    n_mels: int = 96
    fmin: float = 0.0
    fmax: float = 6_000.0
    amin: float = 1e-10
    top_db: float = 80.0
    short_policy: str = "tile"  # or "pad": how audio shorter than n_samples is filled

    @property
    def n_frames(self) -> int:
        """Frames per input ('same' framing): 1360 for 348,000 samples."""
        return math.ceil(self.n_samples / self.hop_length)

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The 5-block VGG-style tagger. Defaults are the paper's (39,282 parameters)."""

    channels: int = 32
    pools: tuple[tuple[int, int], ...] = PAPER_POOLS  # (freq, time) per block
    n_classes: int = 50
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    frontend: FrontendConfig = FrontendConfig()

    @property
    def n_layers(self) -> int:
        return len(self.pools)

    @property
    def feature_dim(self) -> int:
        return self.channels * self.n_layers


def model_config_from_dict(d: dict) -> ModelConfig:
    """Inverse of `dataclasses.asdict` for ModelConfig (used for checkpoint metadata)."""
    d = dict(d)
    frontend = FrontendConfig(**d.pop("frontend", {}))
    pools = tuple(tuple(int(v) for v in p) for p in d.pop("pools", PAPER_POOLS))
    return ModelConfig(pools=pools, frontend=frontend, **d)
