"""Convert the paper's published Keras 1 / Theano weights into a pretrained checkpoint.

    python experiments/import_weights.py --h5 ../shared/anchors/choi2017/weights_theano.hdf5 \
        --out checkpoints/choi2017_msd

Reads the HDF5 with h5py only (`transfer_jax.weights.load_choi2017_h5`, which also checks
the stored kapre frontend against the project's), and writes an orbax checkpoint that
`transfer_jax.checkpoint.load_pretrained(out)` turns into a `Tagger(norm="per_clip")`
with its variables. Batch-statistics mode (`norm="batch"`, dB reference "batch") is the
other supported way to run it; the stored running statistics are placeholders.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

FRONTEND_NOTE = (
    "kapre/Theano: pad_left=257 (Theano true-convolution STFT with 'half' padding 256: "
    "frame t covers samples [256t-257, 256t+255)), n_fft=512, hop=256, periodic Hann, "
    "power 2, 96 Slaney mels 0-6000 Hz, 10*log10(max(x,1e-10)) minus the max (per clip "
    "for norm per_clip, whole batch for norm batch), floored at -80 dB; 12 kHz mono, "
    "first 29 s (348,000 samples), shorter audio tiled (short_policy)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h5", required=True, help="weights_theano.hdf5 (Keras 1 / Theano)")
    parser.add_argument("--out", default="checkpoints/choi2017_msd", help="checkpoint directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)

    from transfer_jax import checkpoint
    from transfer_jax.config import MSD_TAGS
    from transfer_jax.model import Tagger
    from transfer_jax.weights import WeightsError, load_choi2017_h5

    try:
        variables, info = load_choi2017_h5(args.h5)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = pathlib.Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            print(f"error: {out} exists and is not empty (use --overwrite to replace it)", file=sys.stderr)
            return 1
        strangers = [p.name for p in out.iterdir() if not (p.is_dir() and p.name.isdigit())]
        if strangers:  # only ever delete what looks like an orbax checkpoint directory
            print(f"error: {out} holds more than checkpoint steps ({', '.join(sorted(strangers)[:5])}); "
                  "not replacing it", file=sys.stderr)
            return 1
        shutil.rmtree(out)
    model = Tagger(norm="per_clip")
    metadata = checkpoint.model_metadata(
        model, tags=list(MSD_TAGS), db_ref="clip", source="choi2017 weights_theano.hdf5",
        bn_modes_supported=["per_clip", "batch"], frontend=FRONTEND_NOTE,
        frontend_max_abs_diff=info["frontend_max_abs_diff"])
    written = checkpoint.save_pretrained(out, variables, metadata)
    print(f"wrote {written} (Tagger norm=per_clip, {len(MSD_TAGS)} MSD tags) from {info['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
