"""Convert the paper's published Keras 1 / Theano weights into a pretrained checkpoint.

    python experiments/import_weights.py --h5 ../shared/anchors/choi2017/weights_theano.hdf5 \
        --out checkpoints/choi2017_msd

Reads the HDF5 with h5py only (`transfer_jax.weights.load_choi2017_h5`, which also checks
the stored kapre frontend against the project's), and writes an orbax checkpoint that
`transfer_jax.checkpoint.load_pretrained(out)` turns into a `Tagger(norm="per_clip")`
with its variables. Batch-statistics mode (`norm="batch"`, dB reference "batch") is the
other supported way to run it; the stored running statistics are placeholders.

    python experiments/import_weights.py --h5 ../shared/anchors/choi2017/weights_theano.hdf5 \
        --out checkpoints/choi2017_msd_calibrated --calibrate calibration_files.txt

With `--calibrate AUDIO_LIST` (one audio path a line) the checkpoint instead stores
*dataset statistics* computed over those files (`transfer_jax.dataset_stats`: Keras 1
BatchNorm mode 2 with the whole list as one batch, layer by layer, and the dB reference
of that batch) as its running statistics: metadata norm "running", `db_ref` the fixed dB
reference, `calibrated_on` the number of files used. Then a single file is tagged or
embedded as if it were part of that batch, deterministically (`tag_audio.py`,
`extract_features.py` use it by default).
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
    "for norm per_clip, whole batch for norm batch; the fixed db_ref of this metadata, the "
    "calibration set's max, for norm running), floored at -80 dB; 12 kHz mono, "
    "first 29 s (348,000 samples), shorter audio tiled (short_policy)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h5", required=True, help="weights_theano.hdf5 (Keras 1 / Theano)")
    parser.add_argument("--out", default="checkpoints/choi2017_msd", help="checkpoint directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--calibrate", metavar="AUDIO_LIST", default=None,
                        help="store dataset statistics computed over these files (one path a line; "
                             "first 29 s of each, shorter audio tiled)")
    parser.add_argument("--calibration-batch-size", type=int, default=16,
                        help="model inputs per jitted call while calibrating (default 16)")
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
    model = Tagger(norm="per_clip")
    extra = {"db_ref": "clip", "bn_modes_supported": ["per_clip", "batch"]}
    if args.calibrate:
        from transfer_jax import dataset_stats

        try:
            entries, paths = dataset_stats.read_path_list(args.calibrate)
            if not paths:
                raise ValueError(f"{args.calibrate} lists no files")
            stats, db_ref, cal = dataset_stats.stats_from_files(
                model, variables, paths, batch_size=args.calibration_batch_size,
                long_policy="first", progress=True)
        except ValueError as e:
            print(f"error: calibration: {e}", file=sys.stderr)
            return 1
        for path, reason in cal["failures"]:
            print(f"calibration: skipped {path}: {reason}", file=sys.stderr)
        model, variables = dataset_stats.dataset_model(model, variables, stats)
        extra = {"db_ref": db_ref, "bn_modes_supported": ["running", "per_clip", "batch"],
                 "calibrated_on": cal["n_files"], "calibration_inputs": cal["n_inputs"],
                 "calibration_list": str(pathlib.Path(args.calibrate).absolute()),
                 "calibration_failed": len(cal["failures"]),
                 "calibration_policy": f"short {cal['short_policy']}, long {cal['long_policy']}"}
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    metadata = checkpoint.model_metadata(
        model, tags=list(MSD_TAGS), source="choi2017 weights_theano.hdf5",
        frontend=FRONTEND_NOTE, frontend_max_abs_diff=info["frontend_max_abs_diff"], **extra)
    written = checkpoint.save_pretrained(out, variables, metadata)
    how = (f"norm=running, dataset statistics of {extra['calibrated_on']} files, db_ref "
           f"{extra['db_ref']:.4f} dB" if args.calibrate else "norm=per_clip")
    print(f"wrote {written} (Tagger {how}, {len(MSD_TAGS)} MSD tags) from {info['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
