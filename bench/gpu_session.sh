#!/usr/bin/env bash
# The prepared GPU session of issue #17, one device call (about 9 minutes of the 15):
#   prepare here:  .venv/bin/python -m bench.gpu_bundle   (.gpu/site.zip: the packages the GPU box lacks)
#                  and the GL loader .debs in .gl/ (the device entry's README has the apt-get download line)
#   then:          device run(command="bash bench/gpu_session.sh", carry=[".gpu", ".gl"], timeout_s=560)
# 1. python -m bench.packed: the GPU plan (K = 1..32, lz4/raw, evaluation on, precision, in-process loop for
#    comparison), its JSON rewritten after every run, within BENCH_LIMIT seconds.
# 2. critic_i_mode PROFILE=gpu without Ray (--in-process) for LEARN_LIMIT seconds into a store, its figures
#    and final table drawn from it; the store and figures come back zipped.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
mkdir -p /tmp/site && python -m zipfile -e .gpu/site.zip /tmp/site
export PYTHONPATH=/tmp/site:$PWD MUJOCO_GL=egl PYOPENGL_PLATFORM=egl PYTHONUNBUFFERED=1
python - <<'PY' || exit 3
import torch, mujoco, lz4, pydantic
from envs import make_env
env = make_env("cartpole_swingup", "pixels", 1, 2, 3)
env.reset()
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| mujoco", mujoco.__version__)
PY
timeout "${BENCH_LIMIT:-330}" python -m bench.packed --out "$OUT/gpu_h200_workers.json" \
    --time-limit "$(( ${BENCH_LIMIT:-330} - 10 ))" 2>&1 | tee "$OUT/bench.log"
timeout "${LEARN_LIMIT:-300}" python -m orchestrator.sweep --grid critic_i_mode --profile gpu --in-process \
    --results /tmp/results --no-figures 2>&1 | tail -40 > "$OUT/learn.log"
python -m analysis.figures --results /tmp/results --out /tmp/figures > "$OUT/figures.log" 2>&1
(cd /tmp && python -m zipfile -c "$OUT/gpu_store.zip" results figures)
ls -la "$OUT"
