#!/usr/bin/env bash
# The prepared GPU check: one script for a lent CUDA machine (see benchmarks/README.md).
#
#   bash benchmarks/gpu_session.sh layers  # ~3 min: layer table, GPU-path tests, conformance on
#                                          # CUDA, then the layer speed table
#   bash benchmarks/gpu_session.sh smoke   # ~4 min: layer table + conformance + Python layers on CUDA
#   bash benchmarks/gpu_session.sh full    # + the net suite at batch 64 and 256, layer speed table
#
# Run from the repository root. Every stage has its own time limit and log in a work folder, so
# one failing stage does not hide the others; at the end everything is packed into
# $OUT/gpu-MODE.tar.gz (and summary.log copied beside it) when $OUT is set. Needs the
# conformance cases in .conformance/ (a copy of ../shared/conformance) for that stage.
set -u
MODE=${1:-smoke}
LOGS=${LOGS:-/tmp/neocaffe-gpu}
mkdir -p "$LOGS"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 GLOG_minloglevel=2
PY=${PYTHON:-python3}

DEADLINE=${DEADLINE:-100000}  # seconds: stages are cut to finish before it

pack() {  # everything so far into $OUT (when set): a run killed later still returns it
  if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu-$MODE.tar.gz" -C "$LOGS" . && cp "$LOGS/summary.log" "$OUT/"
  fi
}

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - SECONDS - 10))
  if [ "$left" -lt 15 ]; then
    echo "== $name: skipped (deadline)" | tee -a "$LOGS/summary.log"; return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOGS/summary.log"
  tail -n 4 "$LOGS/$name.log" | sed 's/^/   /' | tee -a "$LOGS/summary.log"
  pack
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, numpy, google.protobuf as p; print('torch', torch.__version__,
'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'protobuf', p.__version__)"
} >"$LOGS/summary.log" 2>&1

T="env NEOCAFFE_TEST_DEVICE=cuda $PY -m pytest -q --no-header -p no:cacheprovider"
LAYER_SPEED="$PY -m benchmarks.layer_speed --device cuda --repeats 9"
GPU_PATHS="tests/gpu tests/precision tests/test_timer.py tests/layers_extra/test_recurrent_fused.py"
stage layers_cuda 100 $T tests/test_layers.py -k "not test_gradient" --maxfail=30
stage gradients_cuda 100 $T tests/test_layers.py -k "test_gradient" --maxfail=30
stage graph_precision_cuda 60 $T $GPU_PATHS
stage conformance_cuda 80 $PY benchmarks/gpu_conformance.py .conformance
if [ "$MODE" = layers ]; then
  stage layer_speed_cuda 80 $LAYER_SPEED --markdown "$LOGS/layer_speed_cuda.md" \
    --json "$LOGS/layer_speed_cuda.json"
  # the recurrent rows with cuDNN's kernels allowed (both sides), as under set_precision
  stage layer_speed_cuda_tf32 30 $LAYER_SPEED --types LSTM,RNN --precision tf32 \
    --markdown "$LOGS/layer_speed_cuda_tf32.md" --json "$LOGS/layer_speed_cuda_tf32.json"
  pack
  cat "$LOGS/summary.log"
  exit 0
fi
stage python_layers_cuda 30 $PY -m benchmarks.python_layer_copies --device cuda
stage main_job_gpu 60 $PY -m caffe train -solver examples/mnist/lenet_solver.prototxt -gpu 0
if [ "$MODE" = smoke ]; then
  stage suite_lenet 45 $PY -m benchmarks run --device cuda --quick --only lenet,caffenet:solver \
    --batch 64 --threads 1 --repeats 3 --no-opencv --no-executor --tag cuda-smoke --out "$LOGS"
fi
if [ "$MODE" = full ]; then
  RUN="$PY -m benchmarks run --device cuda --quick --threads 1 --no-opencv --no-executor"
  NETS=lenet,cifar10_quick,caffenet:forward,caffenet:fwdbwd,caffenet:solver,googlenet
  NETS=$NETS,resnet50:forward,resnet50:fwdbwd,resnet50:solver
  stage suite_b64 150 $RUN --batch 64 --only $NETS --tag cuda-b64 --out "$LOGS"
  stage suite_b1 60 $RUN --only caffenet:infer_b1,resnet50:infer_b1 --no-caffe-time \
    --tag cuda-b1 --out "$LOGS"
  stage profile_lenet 40 $PY -m benchmarks profile --device cuda --net lenet --batch 64 \
    --mode forward --iterations 200 --rows 30
  stage profile_resnet_b1 40 $PY -m benchmarks profile --device cuda --net resnet50 --batch 1 \
    --mode infer_b1 --iterations 30 --rows 30
  stage layer_speed_cuda 80 $LAYER_SPEED --markdown "$LOGS/layer_speed_cuda.md" \
    --json "$LOGS/layer_speed_cuda.json"
  stage suite_b256 200 $RUN --batch 256 --only $NETS --no-caffe-time --tag cuda-b256 --out "$LOGS"
  stage suite_b64_graph 120 $RUN --batch 64 --only $NETS --cuda-graph --no-memory \
    --no-caffe-time --tag cuda-b64-graph --out "$LOGS"
fi
pack
cat "$LOGS/summary.log"
