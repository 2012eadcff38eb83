"""Extraction and training throughput of the tagger: JAX vs tf.keras vs PyTorch, side by side.

    python benchmarks/bench_extraction.py                       # everything, ~5 min on 2 cores
    python benchmarks/bench_extraction.py --sections forward --batches 1,8,32,256
    python benchmarks/bench_extraction.py --allocator default   # glibc malloc as it comes
    python benchmarks/bench_extraction.py --cpu-devices 1       # one JAX CPU device for all cores
    python benchmarks/bench_extraction.py --out bench.json

One run, the same inputs and the same weights for every implementation (the Keras and
PyTorch baselines in benchmarks/ get the Flax variables copied in, and their features are
compared with JAX's). Each baseline framework runs in a child process of the run, one
after the other, so that no framework's idle thread pools compete with another's timed
calls (measured: tf.keras loaded beside JAX cut the library's b=8 rows from 304 to 197
clips/s), and TensorFlow and PyTorch cannot share a process here (a segfault in libc's
free during the torch train step). Runs unchanged on CPU and GPU: JAX, TensorFlow and PyTorch each use
their default device; PyTorch rows appear when torch is importable. Timings are the median
of `--repeats` runs (forward rows: at least 32 clips' worth, e.g. 32 calls at b=1) after a
warm-up (compilation) call; the machine, its load average and the backend are printed and
saved with the numbers.

Sections:
- env: machine, sgemm peak (numpy float32 on CPU, jnp on accelerators), the convnet's
  FLOPs per clip (counted and XLA's cost analysis) and the compute roofline in clips/s;
- forward: log-mel -> 5 layer features, clips/s per batch size: JAX as in the library
  (`extraction.features_from_mel`: pool-first, lax.map on CPU / vmap on GPU, the batch
  split over all devices: on CPU one per core, `runtime.use_cpu_cores`, and the same
  on one device of them for the side-by-side), the plain
  Flax "before" (benchmarks/plain_flax.py: vmap of `model.apply`), the library in bf16,
  tf.keras (graph; XLA), torch (channels_last); audio -> features (mel fused); the
  log-mel alone; max abs feature difference of each against the library in fp32;
- train: train-step clips/s at the paper's input size, JAX (library step, reshape
  max-pool, data-parallel over all devices, and on one of them) vs the same step with
  flax's max-pool vs tf.keras vs torch;
- hear: `transfer_jax.hear` timestamp embeddings (windows/s) and scene embeddings;
- e2e: files -> features: decode + resample (`audio.load_audio`) vs log-mel vs convnet
  shares, and the library's `extract_files` wall clock, on real mp3s (the anchors,
  repeated) and on generated 44.1 kHz stereo wavs (in a temporary folder, removed).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


ANCHOR_AUDIO = pathlib.Path(__file__).resolve().parents[2] / "shared" / "anchors" / "choi2017" / "audio"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="env,forward,train,e2e,hear")
    p.add_argument("--batches", default="1,8,32", help="forward batch sizes")
    p.add_argument("--train-batches", default="32", help="train-step batch sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-warmup", type=int, default=6,
                   help="train steps run before timing: the first ones grow the heap (page faults, "
                        "seconds each on a VM); the timed ones are the steady state")
    p.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                   help="glibc malloc: tuned (runtime.tune_malloc) or default")
    p.add_argument("--e2e-files", type=int, default=16, help="files per e2e set")
    p.add_argument("--frameworks", default="jax,keras,torch")
    p.add_argument("--out", default="")
    p.add_argument("--cpu-devices", default="cores",
                   help="JAX CPU devices: 'cores' (runtime.use_cpu_cores, one per core) or a number")
    p.add_argument("--resident", action="store_true",
                   help="forward rows take a batch already on the device (the model alone, no "
                        "host-to-device copy); audio->features rows are skipped")
    p.add_argument("--no-plain", action="store_true",
                   help="skip the plain Flax rows (OOM-killed at b=256 on a 24 GB machine)")
    p.add_argument("--child", choices=["keras", "torch"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = parse_args()
from transfer_jax import runtime  # noqa: E402

ALLOCATOR_TUNED = runtime.tune_malloc() if ARGS.allocator == "tuned" else False
if not ARGS.child:
    runtime.use_cpu_cores(None if ARGS.cpu_devices == "cores" else int(ARGS.cpu_devices))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from transfer_jax import audio as audio_lib  # noqa: E402
from transfer_jax import cpu_kernels, extraction, frontend, train  # noqa: E402
from transfer_jax.config import ModelConfig  # noqa: E402
from transfer_jax.model import Tagger, init_variables  # noqa: E402

import plain_flax  # noqa: E402

ROWS: list[dict] = []


def block(x):
    """Waits for any framework's result."""
    if isinstance(x, (list, tuple)):
        return [block(v) for v in x]
    if hasattr(x, "block_until_ready"):
        return x.block_until_ready()
    if hasattr(x, "numpy"):
        return x.numpy()
    return x


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `repeats` calls after `warmup` warm-up calls."""
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def kernels_off():
    """The library with its CPU kernels switched off (all in XLA, as before the kernels):
    jit caches are cleared on the way in and out so that each way is traced."""
    available = cpu_kernels.available
    cpu_kernels.available = lambda: False
    jax.clear_caches()
    try:
        yield
    finally:
        cpu_kernels.available = available
        jax.clear_caches()


@contextlib.contextmanager
def survive(what: str):
    """Reports a failure (e.g. out of device memory at a large batch) and goes on."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - a benchmark row, not a library call
        print(f"FAILED {what}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        ROWS.append({"what": what, "error": f"{type(e).__name__}: {str(e)[:300]}"})


def record(section: str, what: str, clips: int, seconds: float, **extra) -> None:
    row = {"section": section, "what": what, "clips": clips, "seconds": round(seconds, 5),
           "clips_per_s": round(clips / seconds, 2), "load": round(os.getloadavg()[0], 2), **extra}
    ROWS.append(row)
    more = "  ".join(f"{k}={v}" for k, v in extra.items())
    print(f"[{section}] {what:58s} n={clips:<4d} {seconds:9.4f} s {clips / seconds:9.1f} clips/s "
          f"load {row['load']:.2f}  {more}", flush=True)


# ----------------------------------------------------------------------------------------
# env: machine, sgemm peak, FLOPs, roofline
# ----------------------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "backend": jax.default_backend(),
            "devices": [d.device_kind for d in jax.devices()], "jax": jax.__version__,
            "python": platform.python_version(), "allocator_tuned": ALLOCATOR_TUNED,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load_at_start": [round(v, 2) for v in os.getloadavg()]}
    try:
        flags = open("/proc/cpuinfo").read()
        info["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    except OSError:
        pass
    return info


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """float32 matmul GFLOP/s: numpy on the host; jnp (fp32 and bf16) on an accelerator."""
    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    out = {"numpy_float32": 2 * n ** 3 / timed(lambda: a @ a, repeats) / 1e9}
    if jax.default_backend() != "cpu":
        m = 8192
        for dtype in (jnp.float32, jnp.bfloat16):
            x = jnp.ones((m, m), dtype)
            f = jax.jit(lambda x: x @ x)
            out[f"jax_{jnp.dtype(dtype).name}"] = 2 * m ** 3 / timed(lambda: f(x), repeats) / 1e9
    return {k: round(v, 1) for k, v in out.items()}


def tagger_flops(config: ModelConfig) -> dict:
    """Multiply-adds x 2 of the convolutions and the dense layer per clip, per block."""
    h, w, c_in, per_block = config.frontend.n_mels, config.frontend.n_frames, 1, []
    for ph, pw in config.pools:
        per_block.append(2 * h * w * 9 * c_in * config.channels)
        h, w, c_in = h // ph, w // pw, config.channels
    dense = 2 * config.channels * config.n_classes
    return {"per_block_mflop": [round(f / 1e6, 1) for f in per_block],
            "total_mflop": round((sum(per_block) + dense) / 1e6, 1)}


def xla_flops(model: Tagger, variables: dict) -> float | None:
    fe = model.config.frontend
    mel = jnp.zeros((1, fe.n_mels, fe.n_frames), jnp.float32)
    try:
        cost = jax.jit(lambda m: model.apply(variables, m)).lower(mel).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return round(float(cost["flops"]) / 1e6, 1)
    except Exception:  # noqa: BLE001 - not every backend reports costs
        return None


# ----------------------------------------------------------------------------------------
# forward and train
# ----------------------------------------------------------------------------------------

def paper_variables(model: Tagger, seed: int = 0) -> dict:
    """Initial weights with non-trivial running statistics (as a trained model has)."""
    v = init_variables(model, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    stats = {k: {"mean": rng.normal(0, 0.5, 32).astype(np.float32),
                 "var": rng.uniform(0.5, 4.0, 32).astype(np.float32)} for k in v["batch_stats"]}
    return {"params": jax.tree_util.tree_map(np.asarray, v["params"]), "batch_stats": stats}


def test_mels(batch: int, config: ModelConfig, seed: int = 0) -> np.ndarray:
    """Log-mels of noisy tones: (batch, n_mels, frames) float32 in dB."""
    rng = np.random.default_rng(seed)
    fe = config.frontend
    t = np.arange(fe.n_samples) / fe.sample_rate
    waves = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000, (batch, 1)) * t)
             + 0.05 * rng.normal(size=(batch, fe.n_samples))).astype(np.float32)
    return np.asarray(frontend.log_mel_jit(waves, fe, "clip")), waves


def frameworks() -> set[str]:
    """The frameworks this process times: JAX in the main process, one baseline in each
    child (`baseline_rows`)."""
    if ARGS.child:
        return {ARGS.child}
    return set(ARGS.frameworks.split(",")) & {"jax"}


def baseline_rows(sections: list[str]) -> None:
    """Runs this script once per baseline framework asked for (keras, torch), each in a
    child process timing that framework alone on the same inputs and weights; adds their rows."""
    import subprocess

    wanted = [s for s in sections if s in ("forward", "train")]
    for fw in [f for f in ("keras", "torch") if f in ARGS.frameworks.split(",")] if wanted else []:
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / f"{fw}.json"
            subprocess.run([sys.executable, __file__, "--child", fw, "--frameworks", fw,
                            "--sections", ",".join(wanted), "--batches", ARGS.batches,
                            "--train-batches", ARGS.train_batches, "--repeats", str(ARGS.repeats),
                            "--train-warmup", str(ARGS.train_warmup), *(["--resident"] if ARGS.resident else []),
                            "--allocator", ARGS.allocator, "--out", str(out)], check=False)
            if out.exists():
                ROWS.extend(json.loads(out.read_text())["rows"])


def keras_impl(config, variables):
    import baselines_keras as bk

    model = bk.build(config)
    bk.copy_flax_variables(model, variables)
    return model, bk


def torch_impl(config, variables):
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, None
    import baselines_torch as bt

    torch.backends.cudnn.benchmark = True  # torch at its best on a GPU: autotuned convs
    model = bt.build(config, "cuda" if torch.cuda.is_available() else "cpu")
    bt.copy_flax_variables(model, variables)
    return model, bt


def forward_repeats(batch: int) -> int:
    """Timed calls per forward row: --repeats, and at least 32 clips' worth, as a small
    batch's call (~5 ms for one clip) is at the mercy of the machine's noise."""
    return max(ARGS.repeats, -(-32 // batch))


def section_forward(config: ModelConfig) -> None:
    run = Tagger(config, norm="running")
    v = paper_variables(run)
    v_bf16 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), v)
    per_clip = run.clone(norm="per_clip")
    keras_model, bk = keras_impl(config, v) if "keras" in frameworks() else (None, None)
    torch_model, bt = torch_impl(config, v) if "torch" in frameworks() else (None, None)
    k_graph = bk.forward_fn(keras_model, jit_compile=False) if keras_model else None
    k_xla = bk.forward_fn(keras_model, jit_compile=True) if keras_model else None
    t_fwd = bt.forward_fn(torch_model) if torch_model else None
    for b in [int(s) for s in ARGS.batches.split(",")]:
        mel, waves = test_mels(b, config)
        ref = np.asarray(extraction.features_from_mel(run, v, mel))

        def diff(out) -> float:
            return float(np.max(np.abs(np.asarray(block(out), np.float32) - ref)))

        mel_bf16 = mel.astype(jnp.bfloat16)  # converted before timing: the rows time the model
        t_mel = mel
        if ARGS.resident:
            mel, mel_bf16 = jax.device_put(mel), jax.device_put(mel_bf16)
            if t_fwd:
                t_mel = bt.torch.as_tensor(t_mel, device=next(torch_model.parameters()).device)

        impls = {} if ARGS.child else {
            "JAX library (extraction.features_from_mel), running": lambda: extraction.features_from_mel(run, v, mel),
            **({} if len(jax.local_devices()) == 1 else {
                "JAX library on one of the devices, running": lambda: extraction.features_from_mel(
                    run, v, mel, devices=jax.local_devices()[:1])}),
            "JAX library bf16 params and inputs, running": lambda: extraction.features_from_mel(
                run, v_bf16, mel_bf16),
        }
        if not ARGS.no_plain and not ARGS.child:
            impls["JAX plain Flax (vmap of model.apply), running"] = lambda: plain_flax.features_from_mel(run, v, mel)
        if k_graph:
            impls["tf.keras (tf.function graph), running"] = lambda: k_graph(mel)
            impls["tf.keras (tf.function XLA), running"] = lambda: k_xla(mel)
        if t_fwd:
            impls["torch (channels_last, inference_mode), running"] = lambda: t_fwd(t_mel)
        if cpu_kernels.available() and jax.default_backend() == "cpu" and not ARGS.child:
            lib = impls["JAX library (extraction.features_from_mel), running"]
            impls["JAX library, all in XLA (no CPU kernels), running"] = lib
        for name, fn in impls.items():
            with survive(f"forward {name} b={b}"), (kernels_off() if "no CPU kernels" in name
                                                    else contextlib.nullcontext()):
                record("forward", name, b, timed(fn, forward_repeats(b)), max_abs_diff=round(diff(fn()), 6))
        # audio -> features, the extraction path (per_clip: the published one-file mode)
        if ARGS.child or ARGS.resident:
            continue
        pc_ref = np.asarray(extraction.features_from_audio(per_clip, v, waves))
        mel_ref = np.asarray(frontend.log_mel_jit(waves, config.frontend, "clip"))
        for name, fn, want in (
            ("JAX library audio->features (extraction.features_from_audio), per_clip",
             lambda: extraction.features_from_audio(per_clip, v, waves), pc_ref),
            *(() if ARGS.no_plain else (("JAX plain Flax audio->features (vmap of log-mel + apply), per_clip",
                                          lambda: plain_flax.features_from_audio(per_clip, v, waves), pc_ref),)),
            ("JAX log-mel only (frontend.log_mel_jit)", lambda: frontend.log_mel_jit(waves, config.frontend, "clip"),
             mel_ref),
        ):
            with survive(f"forward {name} b={b}"):
                d = float(np.max(np.abs(np.asarray(block(fn())) - want)))
                record("forward", name, b, timed(fn, forward_repeats(b)), max_abs_diff=round(d, 6))


def section_train(config: ModelConfig) -> None:
    for b in [int(s) for s in ARGS.train_batches.split(",")]:
        with survive(f"train b={b}"):
            train_batch(config, b)


def train_batch(config: ModelConfig, b: int) -> None:
    mel, _ = test_mels(b, config, seed=1)
    labels = (np.random.default_rng(0).random((b, config.n_classes)) < 0.1).astype(np.float32)
    # data parallel over as many devices as divide the batch (a batch of 1 on one)
    all_devices = jax.devices()[: runtime.cpu_device_count(len(jax.devices()), divides=b)]
    one = jax.devices()[:1]
    jax_models = () if ARGS.child else (
        ("JAX library train step (jit, Adam)", Tagger(config, norm="train"), all_devices),
        *(() if len(jax.devices()) == 1 else (
            ("JAX library train step on one of the devices", Tagger(config, norm="train"), one),)),
        *(() if not cpu_kernels.available() or jax.default_backend() != "cpu" else (
            ("JAX library train step, all in XLA (no CPU kernels)", Tagger(config, norm="train"), all_devices),)),
        *(() if ARGS.no_plain else (
            ("JAX train step, plain Flax layers (before)", plain_flax.PlainTagger(config, "train"), all_devices),)))
    for name, model, devices in jax_models:
        tx = train.make_optimizer(1e-3)
        mesh = train.make_mesh(devices)
        state = {"s": train.create_train_state(jax.random.key(0), model, tx, config.frontend.n_frames, mesh)}
        step = train.jit_sharded(train.make_train_step(model, tx), mesh)
        x, y = train.shard_batch(mesh, mel, labels)

        def jax_step():
            state["s"], metrics = step(state["s"], x, y)
            return metrics["loss"]

        with kernels_off() if "no CPU kernels" in name else contextlib.nullcontext():
            record("train", name, b, timed(jax_step, ARGS.repeats, warmup=ARGS.train_warmup))
    v = paper_variables(Tagger(config, norm="running"))
    if "torch" in frameworks():
        tm, bt = torch_impl(config, v)
        if tm is not None:
            tstep = bt.train_step_fn(tm, 1e-3)
            device = next(tm.parameters()).device  # the batch on the device, as JAX's is
            tx_, ty_ = bt.torch.as_tensor(mel, device=device), bt.torch.as_tensor(labels, device=device)
            record("train", "torch train step (channels_last, Adam)", b,
                   timed(lambda: tstep(tx_, ty_), ARGS.repeats, warmup=ARGS.train_warmup))
    if "keras" in frameworks():
        km, bk = keras_impl(config, v)
        for xla in (False, True):
            kstep = bk.train_step_fn(km, 1e-3, jit_compile=xla)
            record("train", f"tf.keras train step ({'XLA' if xla else 'graph'}, Adam)", b,
                   timed(lambda: kstep(mel, labels), ARGS.repeats, warmup=ARGS.train_warmup))


# ----------------------------------------------------------------------------------------
# end to end from files
# ----------------------------------------------------------------------------------------

def generated_wavs(folder: pathlib.Path, n: int, seconds: float = 30.0, sr: int = 44_100) -> list[str]:
    """n stereo PCM-16 wavs of tones and noise."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(n):
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)[:, None] + 0.05 * rng.normal(size=(len(t), 2))
        p = folder / f"gen{i:04d}.wav"
        sf.write(p, y.astype(np.float32), sr, subtype="PCM_16")
        paths.append(str(p))
    return paths


def e2e_set(name: str, paths: list[str], model: Tagger, v: dict, batch: int = 16) -> None:
    fe = model.config.frontend
    # stages one after another, single process: the shares of the work
    t0 = time.perf_counter()
    waves = np.stack([audio_lib.fit_length(audio_lib.load_audio(p, fe.sample_rate), fe.n_samples, "tile")
                      for p in paths])
    t_decode = time.perf_counter() - t0
    n = len(paths)
    chunks = [waves[i:i + batch] for i in range(0, n, batch)]
    frontend.log_mel_jit(chunks[0], fe, "clip").block_until_ready()
    t_mel = timed(lambda: [frontend.log_mel_jit(c, fe, "clip") for c in chunks], 1)
    mels = [frontend.log_mel_jit(c, fe, "clip") for c in chunks]
    t_conv = timed(lambda: [extraction.features_from_mel(model, v, m) for m in mels], 1)
    t_conv_plain = timed(lambda: [plain_flax.features_from_mel(model, v, m) for m in mels], 1)
    total = t_decode + t_mel + t_conv
    record("e2e", f"{name}: decode + resample (load_audio, 1 thread)", n, t_decode,
           share=round(t_decode / total, 3))
    record("e2e", f"{name}: log-mel (log_mel_jit)", n, t_mel, share=round(t_mel / total, 3))
    record("e2e", f"{name}: convnet (library)", n, t_conv, share=round(t_conv / total, 3))
    record("e2e", f"{name}: convnet (plain Flax, before)", n, t_conv_plain)
    # the library end to end: threads decode ahead of the jitted extraction
    extraction.extract_files(v, paths[:batch], model=model, batch_size=batch)  # compile
    record("e2e", f"{name}: extract_files (library, wall clock)", n,
           timed(lambda: extraction.extract_files(v, paths, model=model, batch_size=batch), 1))


def section_e2e(config: ModelConfig) -> None:
    model = Tagger(config, norm="per_clip")
    v = paper_variables(model)
    n = ARGS.e2e_files
    real = sorted(str(p) for p in ANCHOR_AUDIO.glob("*.mp3"))
    if real:
        e2e_set(f"real mp3 ({len(real)} anchors x {-(-n // len(real))}, 44.1 kHz, ~30 s)",
                (real * n)[:n], model, v)
    else:
        print(f"[e2e] no anchor mp3s in {ANCHOR_AUDIO}; skipping the real-file set")
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        e2e_set("generated wav (44.1 kHz stereo, 30 s)", generated_wavs(pathlib.Path(tmp), n), model, v)


def section_hear(config: ModelConfig) -> None:
    """HEAR timestamp and scene embeddings of 16 kHz sounds with the paper's model."""
    from transfer_jax import hear

    model = Tagger(config, norm="per_clip")
    m = hear.make_model(model, paper_variables(model), sample_rate=16_000, tf_module=False)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.normal(size=(2, 16_000 * 10))).astype(np.float32)
    emb, ts = hear.get_timestamp_embeddings(audio, m)
    n_windows = emb.shape[0] * emb.shape[1]
    record("hear", f"timestamp embeddings, 2 x 10 s, hop {np.diff(ts[0]).mean():.2f} ms (windows)",
           n_windows, timed(lambda: hear.get_timestamp_embeddings(audio, m), 1))
    record("hear", "scene embeddings, 2 x 10 s (sounds)", 2, timed(lambda: hear.get_scene_embeddings(audio, m), 1))


def main() -> None:
    config = ModelConfig()
    info = machine()
    print(json.dumps(info))
    sections = ARGS.sections.split(",")
    if "env" in sections:
        model = Tagger(config, norm="running")
        flops = tagger_flops(config)
        flops["xla_cost_analysis_mflop"] = xla_flops(model, paper_variables(model))
        peak = sgemm_gflops()
        best = max(peak.values())
        info.update(flops=flops, sgemm_gflops=peak,
                    roofline_clips_per_s=round(best * 1e3 / flops["total_mflop"], 1))
        print(json.dumps({k: info[k] for k in ("flops", "sgemm_gflops", "roofline_clips_per_s")}))
    if not ARGS.child:  # first: this process is still small (the heap is never trimmed)
        baseline_rows(sections)
    if "forward" in sections:
        with survive("section forward"):
            section_forward(config)
    if "train" in sections:
        with survive("section train"):
            section_train(config)
    if "e2e" in sections and not ARGS.child:
        with survive("section e2e"):
            section_e2e(config)
    if "hear" in sections and not ARGS.child:
        with survive("section hear"):
            section_hear(config)
    info["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if ARGS.out:
        pathlib.Path(ARGS.out).write_text(json.dumps({"machine": info, "rows": ROWS}, indent=1))
        print(f"wrote {ARGS.out}")


if __name__ == "__main__":
    main()
