"""transfer_jax: convnet transfer learning for music (Choi et al., ISMIR 2017) in JAX.

    model, variables = transfer_jax.load_pretrained(path)
    features = transfer_jax.extract(variables, waveforms, model=model)  # (n, 5, 32)
"""
from transfer_jax.checkpoint import load_pretrained, save_pretrained
from transfer_jax.config import MSD_TAGS, FrontendConfig, ModelConfig
from transfer_jax.extraction import extract, extract_files, parse_layers, select_layers
from transfer_jax.model import Tagger, init_variables

__all__ = [
    "MSD_TAGS", "FrontendConfig", "ModelConfig", "Tagger", "extract", "extract_files",
    "init_variables", "load_pretrained", "parse_layers", "save_pretrained", "select_layers",
]
