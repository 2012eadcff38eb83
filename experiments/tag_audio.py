"""Top-k tags of audio files with a pretrained tagger checkpoint.

    python experiments/tag_audio.py --checkpoint checkpoints/choi2017_msd FILE...
    python experiments/tag_audio.py --checkpoint DIR --norm batch --top-k 10 a.mp3 b.wav

Each file is decoded to 12 kHz mono (`transfer_jax.audio.load_audio`) and fitted to one
model input (29 s): longer audio keeps its first 29 s, shorter audio is filled by the
checkpoint's `short_policy` ("tile" or "pad"). Normalisation (`--norm`, default: the
checkpoint's):
- per_clip: each file on its own (vmapped), dB reference = the clip's own maximum;
- batch: all files as one batch, BatchNorm statistics and dB reference (the maximum) of
  the whole batch, as the paper's model saw its batches: results depend on the batch;
- running: stored running statistics, dB reference the checkpoint's `db_ref` when it is a
  number (a checkpoint calibrated with `import_weights.py --calibrate`: dataset
  statistics, each file tagged as if in the calibration batch), else per clip.
A file that cannot be used prints its error and the run goes on; the exit status is 1
when any file failed.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

PER_CLIP_CHUNK = 16  # files per jitted call in the per-example modes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="directory written by import_weights / training")
    parser.add_argument("--top-k", type=int, default=5, help="tags to print per file (default 5)")
    parser.add_argument("--norm", choices=("per_clip", "batch", "running"), default=None,
                        help="BatchNorm mode (default: the checkpoint's)")
    parser.add_argument("files", nargs="+", help="audio files (.wav .flac .ogg .mp3 .au .aiff .npy)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")

    import numpy as np

    from transfer_jax import audio, checkpoint
    from transfer_jax.config import MSD_TAGS
    from transfer_jax.weights import tag_probabilities

    model, variables = checkpoint.load_pretrained(args.checkpoint)
    meta = checkpoint.load_metadata(args.checkpoint)
    norm = args.norm or model.norm
    if norm == "train":
        norm = "batch"
    model = model.clone(norm=norm)
    if norm == "running":  # a calibrated checkpoint stores its dataset dB reference
        stored = meta.get("db_ref", "clip")
        ref = float(stored) if isinstance(stored, (int, float)) and not isinstance(stored, bool) else "clip"
    else:
        ref = "batch" if norm == "batch" else "clip"
    fe = model.config.frontend
    tags = list(meta.get("tags") or MSD_TAGS)
    if len(tags) != model.config.n_classes:
        print(f"warning: checkpoint lists {len(tags)} tags for {model.config.n_classes} outputs; "
              "using indices", file=sys.stderr)
        tags = [f"tag{i}" for i in range(model.config.n_classes)]
    seconds = fe.n_samples / fe.sample_rate
    print(f"# {args.checkpoint}: norm={norm} db_ref={ref} input=first {seconds:g} s at "
          f"{fe.sample_rate} Hz, shorter audio: {fe.short_policy}")

    names, waves, failed = [], [], 0
    for name in args.files:
        try:
            y = audio.load_audio(name, fe.sample_rate)
            waves.append(audio.fit_length(y, fe.n_samples, fe.short_policy))
            names.append((name, len(y) / fe.sample_rate))
        except (audio.AudioError, ValueError) as e:
            print(f"{name}: error: {e}")
            failed += 1
    if not waves:
        return 1
    x = np.stack(waves)
    if norm == "batch":
        probs = tag_probabilities(model, variables, x, ref)
    else:
        probs = np.concatenate([tag_probabilities(model, variables, x[i:i + PER_CLIP_CHUNK], ref)
                                for i in range(0, len(x), PER_CLIP_CHUNK)])
    k = min(args.top_k, len(tags))
    for (name, dur), p in zip(names, probs):
        note = "" if dur >= seconds else f", {fe.short_policy} from {dur:.1f} s"
        print(f"{name} ({dur:.1f} s{note})")
        for j in np.argsort(-p, kind="stable")[:k]:
            print(f"  {tags[j]:<20s} {p[j]:.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
