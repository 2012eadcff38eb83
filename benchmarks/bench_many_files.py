"""Many short files through experiments/extract_features.py: files/s and peak memory.

    python benchmarks/bench_many_files.py                 # 2,000 generated 3 s wavs
    python benchmarks/bench_many_files.py --files 10000 --tunables
    python benchmarks/bench_many_files.py --cpu-devices 1,0   # one device vs one per core, same files

Generates `--files` wavs (22.05 kHz mono, tones + noise, `--seconds` long) and a paper-size
tagger checkpoint (random weights, per-clip normalisation) into a temporary folder under
/tmp (removed afterwards), runs the real script on them as a child process (chunked and
resumable, decoding threads ahead of the jitted model) and reports wall-clock files/s and
the child's peak RSS. `--tunables` runs the child with glibc malloc tunables equivalent to
`transfer_jax.runtime.tune_malloc`, which extract_features.py now applies itself
(`--no-tune-malloc` turns it off).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824:glibc.malloc.arena_max=1"


def write_files(folder: pathlib.Path, n: int, seconds: float, sr: int = 22_050) -> list[str]:
    """n mono PCM-16 wavs of a tone and noise."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(n):
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.normal(size=len(t))
        p = folder / f"{i // 1000:03d}" / f"clip{i:05d}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, y.astype(np.float32), sr, subtype="PCM_16")
        paths.append(str(p))
    return paths


def write_checkpoint(folder: pathlib.Path) -> pathlib.Path:
    import jax

    from transfer_jax import checkpoint
    from transfer_jax.model import Tagger, init_variables

    model = Tagger(norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    return checkpoint.save_pretrained(folder / "ckpt", v, checkpoint.model_metadata(model))


def run_script(ckpt: pathlib.Path, listing: pathlib.Path, out: pathlib.Path, batch: int,
               tunables: bool, cpu_devices: int = 0) -> dict:
    env = dict(os.environ)
    if tunables:
        env["GLIBC_TUNABLES"] = TUNABLES
    cmd = [sys.executable, str(ROOT / "experiments" / "extract_features.py"), "--checkpoint", str(ckpt),
           "--norm", "per-clip", "--batch-size", str(batch), "--cpu-devices", str(cpu_devices),
           "--no-progress", str(listing), str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"extract_features.py failed:\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 2), "child_peak_rss_mb": round(max(peak, before) / 1024, 1),
            "peak_is_this_run": peak > before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tunables", action="store_true", help="child with glibc malloc tunables")
    p.add_argument("--cpu-devices", default="0",
                   help="the child's --cpu-devices; several (e.g. 1,0) run one after another on the same files")
    p.add_argument("--out", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        tmp = pathlib.Path(tmp)
        t0 = time.perf_counter()
        paths = write_files(tmp, args.files, args.seconds)
        gen = time.perf_counter() - t0
        listing = tmp / "files.txt"
        listing.write_text("\n".join(paths) + "\n")
        ckpt = write_checkpoint(tmp)
        import numpy as np

        results, first = [], None
        for devices in (int(d) for d in args.cpu_devices.split(",")):
            out = tmp / f"feats{devices}.npy"  # its own file: the script would resume from another's
            r = run_script(ckpt, listing, out, args.batch_size, args.tunables, devices)
            feats = np.load(out)
            first = feats if first is None else first
            results.append({"files": args.files, "seconds_each": args.seconds, "batch_size": args.batch_size,
                            "tunables": args.tunables, "cpu_devices": devices, "generate_s": round(gen, 1), **r,
                            "files_per_s": round(args.files / r["seconds"], 2), "shape": list(feats.shape),
                            "finite": bool(np.isfinite(feats).all()),
                            "max_abs_diff_vs_first": float(np.abs(feats - first).max()),
                            "load": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()})
            print(json.dumps(results[-1]), flush=True)
    result = results if len(results) > 1 else results[0]
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
