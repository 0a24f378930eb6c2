#!/usr/bin/env bash
# The GPU headline (benchmarks/gpu.py) on a machine with one NVIDIA GPU and no network: JAX with CUDA, numpy,
# pandas, matplotlib, scikit-learn and OpenCV installed, no TensorFlow.
#
#   bash scripts/bench_gpu.sh fetch              # beforehand, with network: the wheels into .whl/
#   bash scripts/bench_gpu.sh [gpu.py options]   # on the GPU machine, from the project root, .whl/ beside it
#
# fetch runs ../shared/gpu/fetch-wheels.sh (Keras, albumentations, Hydra, MLflow with SQLite, for Python 3.12)
# and adds the joblib launcher that --jobs and --compare-packing use, plus, in .whl/extra/, wheels of what those
# wheels need and that script expects the machine's image to have (PyYAML, protobuf, requests, h5py, ...).
# The run installs .whl/*.whl into /tmp/site as that script's header says, then from .whl/extra/ only what
# `pip check` reports missing; sets KERAS_BACKEND=jax (unless set), runs benchmarks/gpu.py with the given
# options (default: --compare-packing), writing the report and the sweeps' logs into $OUT when that is set (the
# device tool brings $OUT back), else into runs/bench/.
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = fetch ]; then
  bash ../shared/gpu/fetch-wheels.sh .whl || exit
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl hydra-joblib-launcher==1.2.0
  # The versions this project is tested with (make install), for Python 3.12 on x86-64.
  extra=(pyyaml==6.0.4 protobuf==7.36.2 requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1
         charset-normalizer==3.5.3 click==8.5.1 absl-py==2.5.1 h5py==3.14.0 rich==15.0.0 markdown-it-py==4.3.0
         mdurl==0.1.2 pygments==2.21.0 typing-extensions==4.16.0 markupsafe==3.0.4 anyio==4.16.0 sniffio==1.3.1
         h11==0.16.0 zipp==4.1.2 annotated-doc==0.0.7 packaging==26.4)
  for p in "${extra[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
      -d .whl/extra "$p" 2>/dev/null \
      || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl/extra "$p" \
      || echo "could not fetch $p" >&2
  done
  du -sh .whl
  exit
fi

if compgen -G ".whl/*.whl" >/dev/null; then
  started=$(date +%s)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit
  export PYTHONPATH=/tmp/site:$PWD
  # What the wheels need and the image lacks: from .whl/extra/ when it has them (rounds: what those need in turn).
  tried=" "
  for round in 1 2 3 4; do
    missing=$(python3 -m pip check 2>/dev/null | sed -n 's/.* requires \([^,]*\), which is not installed\./\1/p' | sort -u)
    new=$(for name in $missing; do case "$tried" in *" $name "*) ;; *) echo "$name" ;; esac; done)
    [ -z "$new" ] && break
    echo "missing from the image: $(echo $new)"
    for name in $new; do
      tried="$tried$name "
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --find-links .whl/extra \
        --target /tmp/site --upgrade "$name" 2>/dev/null || echo "  $name: no wheel in .whl/extra" >&2
    done
  done
  echo "wheels installed into /tmp/site in $(( $(date +%s) - started )) s"
else
  echo "no .whl/*.whl: running with the installed packages" >&2
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} NO_ALBUMENTATIONS_UPDATE=1
python3 -c 'import jax; print("jax devices:", jax.devices())' 2>&1 | tail -1

[ $# -eq 0 ] && set -- --compare-packing
# With $OUT (the device tool's folder that comes back) the report and logs are written there as they are made,
# so a command stopped at its time limit still returns what was measured.
case " $* " in *" --out "*) ;; *) [ -n "${OUT:-}" ] && set -- "$@" --out "$OUT/gpu.md" ;; esac
exec python3 benchmarks/gpu.py "$@"
