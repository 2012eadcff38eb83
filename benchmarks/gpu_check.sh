#!/usr/bin/env bash
# The prepared accelerator check of issue 6 (one call of the device tool, ~8 min; give it
# timeout_s 540): bench_extraction.py on the GPU: forward b=1..256 from host memory
# (library, plain Flax, bf16, torch), audio->features, log-mel on device, train step
# b=32/256 at the paper's input size; forward b=1..1024 with the batch on the device;
# end to end from generated files, HEAR. Writes $OUT/gpu*.{txt,log,json}.
# The GPU image has jax/flax/optax/orbax/torch but not librosa & co.: carry their wheels
# (see /work/.library/device/README.md), made here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     librosa==0.11.0 soxr audioread soundfile cffi pycparser pooch platformdirs decorator
# and run as: device run, carry [".whl"], command "bash benchmarks/gpu_check.sh".
set -u
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, torch; print(jax.__version__, flax.__version__, torch.__version__, jax.devices())" \
  2>&1 | tee -a "$OUT/gpu.txt"
set -o pipefail
# three runs with their own limits, so that each one's rows come back even if a later one
# runs out of time (the first call, 2026-11-28 on an H200, spent 430 s before e2e)
run() {  # name, limit in s, arguments
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 benchmarks/bench_extraction.py --cpu-devices 1 --out "$OUT/$name.json" "$@" 2>&1 \
    | grep -v "^WARNING\|^I0000" | tee "$OUT/$name.log"
}
run gpu "${BENCH_TIMEOUT:-230}" --sections env,forward,train --batches 1,32,256 --train-batches 32,256 \
  --repeats 5 --frameworks jax,torch
run gpu_resident 150 --sections forward --resident --batches 1,32,256,1024 --repeats 5 \
  --frameworks jax,torch --no-plain
run gpu_e2e 80 --sections e2e,hear --e2e-files 16 --repeats 3 --frameworks jax
