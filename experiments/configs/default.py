"""CPU default: the paper's network and frontend, sized to train in minutes on 2 cores.

Differences from the paper (configs/paper.py): 3.6 s inputs (170 frames) instead of
29 s (1360 frames), so the time pools shrink to (4, 4, 2, 2, 2); the embedded synthetic
corpus instead of the MSD; a few epochs. Everything else (12 kHz, 512/256 STFT, 96
Slaney mels, 5 x Conv3x3(32)-BN-ELU-MaxPool, BN epsilon 1e-3) is the paper's.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "checkpoints/default"  # checkpoints, log.csv, tensorboard/, results.json
    c.compilation_cache = ""  # '' -> $TRANSFER_JAX_CACHE or ~/.cache/transfer_jax/jax
    c.cpu_devices = 0  # on CPU: 0 -> one JAX device per core (at most; the batch sizes must divide by it); 1 -> one
    c.tune_malloc = True  # glibc keeps freed memory (runtime.tune_malloc): no page faults each step

    c.data = ml_collections.ConfigDict()
    c.data.source = "synthetic"  # or "msd": split_dir + audio_root; or "msd_tfrecord": tfrecord_dir
    c.data.root = "data"  # where the synthetic corpus is written
    c.data.split_dir = ""  # msd: the folder of {train,valid,test}_x_*.txt, *_y.npy
    c.data.audio_root = ""  # msd: the folder of 7digital clips (3/6/36122424.clip.mp3)
    c.data.cache_dir = ""  # log-mel cache ('' -> next to split_dir)
    c.data.tfrecord_dir = ""  # msd_tfrecord: a folder written by data_pipelines/prepare_msd.py
    c.data.shuffle_buffer = 2048  # msd_tfrecord: records in the shuffle buffer (261 kB each at 29 s)
    c.data.deterministic = True  # msd_tfrecord: batch order a function of (seed, epoch): exact resume
    c.data.n_train = 1200
    c.data.n_valid = 200
    c.data.n_test = 200
    c.data.clip_seconds = 4.0
    c.data.seed = 0

    c.frontend = ml_collections.ConfigDict()
    c.frontend.n_samples = 43_520  # 170 frames at hop 256
    c.frontend.short_policy = "tile"

    c.model = ml_collections.ConfigDict()
    c.model.channels = 32
    c.model.pools = ((2, 4), (3, 4), (2, 2), (2, 2), (4, 2))  # 96x170 -> 1x1

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 6
    c.train.batch_size = 32
    c.train.learning_rate = 2e-3
    c.train.optimizer = "adam"
    c.train.seed = 0
    c.train.checkpoint_every_steps = 10
    c.train.eval_batch_size = 64

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # set on every host for multi-host training
    c.distributed.num_processes = 0
    c.distributed.process_id = 0
    return c
