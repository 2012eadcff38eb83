"""The paper's configuration: MSD tagging, 29 s inputs (96 x 1360), the paper's pools.

First prepare the shards (docs/data.md), then train from them:

    python data_pipelines/prepare_msd.py ...   # -> PREPARED
    python experiments/train_tagger.py --config experiments/configs/paper.py \
        --config.data.tfrecord_dir PREPARED
"""
import ml_collections

from experiments.configs import default
from transfer_jax.config import PAPER_POOLS


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.workdir = "checkpoints/paper"
    c.data.source = "msd_tfrecord"
    c.frontend.n_samples = 348_000
    c.model.pools = PAPER_POOLS
    c.train.epochs = 100
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.checkpoint_every_steps = 1000
    return c
