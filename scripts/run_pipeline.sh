#!/usr/bin/env bash
# The main job: checkpoint -> ONNX -> .bin tensors -> (OM on Ascend | ONNX Runtime) at batch 1 and 16
# -> accuracy and throughput, ending with one table. With no arguments: a self-contained demo.
set -euo pipefail

PROG=run_pipeline.sh
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
Usage: bash scripts/run_pipeline.sh [options]

With no options: the demo. A RepVGG-A0 checkpoint with random weights (official key format) and
32 generated images are made in the work folder (default ./demo_out) and run through every step.

With your data:
  bash scripts/run_pipeline.sh --checkpoint RepVGG-A0-train.pth --images /data/imagenet/val \
      --labels val_label.txt [--arch RepVGG-A0] [--input-size 224] [--workdir work_dir] [--chip 310P]

Steps: pth2onnx.py -> preprocess.py -> gen_dataset_info.py -> scripts/atc_convert.sh + infer.py with
ais_bench (when `atc` and `npu-smi` work) or infer.py with ONNX Runtime -> postprocess.py -> parse_perf.py
-> table (also in WORKDIR/report.md).

Options:
  --checkpoint PATH   training checkpoint (.pth); without it, the demo
  --images DIR        images to classify (flat, like ImageNet val, or one subfolder per class)
  --labels FILE       val_label.txt ('<file> <0-based class>' per line); default: the one preprocess.py
                      writes for a class-folder layout
  --arch NAME         RepVGG variant, e.g. RepVGG-A0, RepVGG-B1g2 (default: recognised from the checkpoint)
  --input-size N      model input size (default 224)
  --workdir DIR       where everything is written (default: ./demo_out for the demo, else ./work_dir)
  --batch-sizes "1 16"  batch sizes to run (default "1 16")
  --backend B         auto (default), onnxruntime or ascend
  --chip C            310 or 310P: per-card throughput (default: from npu-smi on Ascend, none otherwise)
  --device N          NPU id for ais_bench (default 0)
  --soc_version V     passed to atc_convert.sh (default: detected from npu-smi)
  --aipp              Ascend only: uint8 tensors, normalised on the device by AIPP (atc_convert.sh --aipp)
  --stream            infer.py decodes the images itself (preprocess.py's transform in worker processes):
                      no prep_bin/ of tensors in the work folder, same dumps
  -h, --help          this help
Environment: PYTHON (default: python, else python3).
EOF
}

# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"  # die, parse_batch_sizes
step() { echo; echo "== $PROG: $*"; }
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value"; }

checkpoint="" images="" labels="" arch="" input_size=224 workdir="" batch_sizes="1 16" backend=auto chip=""
device=0 soc_version="" aipp=0 stream=0
while [[ $# -gt 0 ]]; do
  arg="$1"
  if [[ "$arg" == --*=* ]]; then set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; arg="$1"; fi
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --checkpoint) need_value "$@"; checkpoint="$2"; shift 2 ;;
    --images) need_value "$@"; images="$2"; shift 2 ;;
    --labels) need_value "$@"; labels="$2"; shift 2 ;;
    --arch) need_value "$@"; arch="$2"; shift 2 ;;
    --input-size|--input_size) need_value "$@"; input_size="$2"; shift 2 ;;
    --workdir) need_value "$@"; workdir="$2"; shift 2 ;;
    --batch-sizes|--batch_sizes) need_value "$@"; batch_sizes="$2"; shift 2 ;;
    --backend) need_value "$@"; backend="$2"; shift 2 ;;
    --chip) need_value "$@"; chip="$2"; shift 2 ;;
    --device) need_value "$@"; device="$2"; shift 2 ;;
    --soc_version|--soc-version) need_value "$@"; soc_version="$2"; shift 2 ;;
    --aipp) aipp=1; shift ;;
    --stream) stream=1; shift ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done

# ---- check everything before the first step
PYTHON="${PYTHON:-$(command -v python || command -v python3 || true)}"
[[ -n "$PYTHON" ]] || die "no python found: install Python 3.10+ and 'pip install -r requirements.txt'"
demo=0
if [[ -z "$checkpoint" && -z "$images" && -z "$labels" ]]; then
  demo=1
  workdir="${workdir:-demo_out}"
  arch="${arch:-RepVGG-A0}"
else
  [[ -n "$checkpoint" && -n "$images" ]] || die "give both --checkpoint and --images (or no options for the demo)"
  [[ -f "$checkpoint" ]] || die "checkpoint not found: $checkpoint"
  [[ -d "$images" ]] || die "image folder not found: $images"
  [[ -z "$labels" || -f "$labels" ]] || die "label file not found: $labels"
  workdir="${workdir:-work_dir}"
fi
[[ "$input_size" =~ ^[1-9][0-9]*$ ]] || die "--input-size must be a positive integer, got '$input_size'"
[[ "$device" =~ ^[0-9]+$ ]] || die "--device must be a non-negative integer, got '$device'"
parse_batch_sizes "$batch_sizes"
case "$backend" in
  auto)
    if command -v atc >/dev/null 2>&1 && command -v npu-smi >/dev/null 2>&1 && npu-smi info >/dev/null 2>&1; then
      backend=ascend
    else
      backend=onnxruntime
    fi ;;
  onnxruntime) ;;
  ascend)
    command -v npu-smi >/dev/null 2>&1 || die "--backend ascend: npu-smi not found (is the Ascend driver installed?)"
    command -v atc >/dev/null 2>&1 \
      || die "--backend ascend: atc not found: run 'source /usr/local/Ascend/ascend-toolkit/set_env.sh' first" ;;
  *) die "--backend must be auto, onnxruntime or ascend, got '$backend'" ;;
esac
[[ "$aipp" == 0 || "$backend" == ascend ]] || die "--aipp applies to OM models only; no Ascend NPU is in use here"
if [[ "$backend" == ascend && -z "$chip" ]]; then
  # "310P3" -> 310P (one chip per card), "310" -> 310 (four per card), as parse_perf.py counts them
  chip="$(npu-smi info 2>/dev/null | sed -nE 's/^\|[[:space:]]*[0-9]+[[:space:]]+(Ascend)?(310P?)[A-Za-z0-9]*[[:space:]]*\|.*/\2/p' \
    | head -n 1)"
fi

abspath() { [[ -z "$1" || "$1" == /* ]] && echo "$1" || echo "$PWD/$1"; }
checkpoint="$(abspath "$checkpoint")" images="$(abspath "$images")" labels="$(abspath "$labels")"
mkdir -p -- "$workdir"
workdir="$(cd -- "$workdir" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # for `python -m repvgg_pipeline...` from any folder
start=$SECONDS
echo "$PROG: work folder $workdir; backend $backend; batch sizes ${batch_list[*]}; python $PYTHON"

# ---- 0. demo inputs: random-weight checkpoint + generated images (deterministic, so reruns reuse them)
if [[ "$demo" == 1 ]]; then
  step "demo inputs: random $arch checkpoint and generated images"
  checkpoint="$workdir/${arch}-random-weights.pth"
  if [[ ! -f "$checkpoint" ]]; then
    "$PYTHON" -c 'import sys; from repvgg_model import write_random_checkpoint as w; w(sys.argv[1], arch=sys.argv[2])' \
      "$checkpoint" "$arch"
  fi
  echo "checkpoint: $checkpoint"
  "$PYTHON" -m repvgg_pipeline.demo "$workdir/images"
  images="$workdir/images"
  labels="$images/val_label.txt"
fi

# ---- 1. checkpoint -> fused ONNX, checked against the PyTorch model on the images themselves
step "1/6 pth2onnx: fuse and export to ONNX, compare with PyTorch"
onnx="$workdir/repvgg.onnx"
export_args=("$checkpoint" "$onnx" --input-size "$input_size" --verify-images "$images")
[[ -z "$arch" ]] || export_args+=(--arch "$arch")
"$PYTHON" "$ROOT/pth2onnx.py" "${export_args[@]}" 2>&1 | tee "$workdir/pth2onnx.log"

# ---- 2. images -> .bin tensors, and their info file
dtype=float32
[[ "$aipp" == 0 ]] || dtype=uint8
infer_input="$workdir/repvgg_prep_bin.info" stream_args=()
if [[ "$stream" == 1 ]]; then
  step "2/6 streaming: infer.py preprocesses the images itself ($dtype), no .bin tensors written"
  infer_input="$images" stream_args=(--stream --crop "$input_size" --dtype "$dtype")
  if [[ -z "$labels" ]]; then  # infer.py writes val_label.txt into result/ for a class-folder layout
    find "$images" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | grep -q . \
      || die "no --labels given and $images has no class subfolders to take them from"
    labels="$workdir/result/val_label.txt"
  fi
else
  step "2/6 preprocess + gen_dataset_info: images -> $dtype .bin tensors"
  "$PYTHON" "$ROOT/preprocess.py" "$images" "$workdir/prep_bin" --crop "$input_size" --dtype "$dtype"
  "$PYTHON" "$ROOT/gen_dataset_info.py" bin "$workdir/prep_bin" "$workdir/repvgg_prep_bin.info" \
    "$input_size" "$input_size"
fi
if [[ -z "$labels" ]]; then
  [[ -f "$workdir/prep_bin/val_label.txt" ]] \
    || die "no --labels given and $images has no class subfolders to take them from"
  labels="$workdir/prep_bin/val_label.txt"
fi

# ---- 3. the models the runs use: static-batch OMs on Ascend, the ONNX model itself elsewhere
models=()
if [[ "$backend" == ascend ]]; then
  step "3/6 atc_convert: ONNX -> OM for batch ${batch_list[*]}"
  atc_args=(--onnx "$onnx" --output-prefix "$workdir/repvgg" --batch-sizes "${batch_list[*]}" --input-size "$input_size")
  [[ -z "$soc_version" ]] || atc_args+=(--soc_version "$soc_version")
  [[ "$aipp" == 0 ]] || atc_args+=(--aipp)
  bash "$ROOT/scripts/atc_convert.sh" "${atc_args[@]}"
  for b in "${batch_list[@]}"; do models+=("$workdir/repvgg_bs$b.om"); done
  backend_name=ais_bench
else
  step "3/6 no Ascend NPU here (atc/npu-smi not usable): ONNX Runtime runs the ONNX model"
  for b in "${batch_list[@]}"; do models+=("$onnx"); done
  backend_name=onnxruntime
fi

# ---- 4. inference, ais_bench output layout
report_runs=()
summaries=()
for i in "${!batch_list[@]}"; do
  b="${batch_list[$i]}"
  step "4/6 infer: batch $b with $backend_name"
  "$PYTHON" "$ROOT/infer.py" "${models[$i]}" "$infer_input" "$workdir/result" \
    --output_dirname "bs$b" --batch-size "$b" --device "$device" ${stream_args[@]+"${stream_args[@]}"}
  # ---- 5. accuracy
  step "5/6 postprocess: top-k accuracy of batch $b"
  "$PYTHON" "$ROOT/postprocess.py" "$workdir/result/bs$b" "$labels" "$workdir/result_bs$b.json"
  report_runs+=(--run "$b" "$workdir/result_bs$b.json" "$workdir/result/bs${b}_summary.json")
  summaries+=("$workdir/result/bs${b}_summary.json")
done

# ---- 6. throughput, then the table
step "6/6 parse_perf: throughput"
perf_args=("${summaries[@]}")
[[ -z "$chip" ]] || perf_args+=(--chip "$chip")
"$PYTHON" "$ROOT/parse_perf.py" "${perf_args[@]}"

notes=()
if [[ "$demo" == 1 ]]; then
  notes+=("Demo: the model has RANDOM weights and the generated images show no ImageNet class, so top-1/top-5"
          "above are meaningless. What is meaningful is the agreement of the exported model with PyTorch:")
  while IFS= read -r line; do notes+=("    $line"); done \
    < <(grep -iE 'agree|diff' "$workdir/pth2onnx.log" || echo "(see $workdir/pth2onnx.log)")
fi
[[ "$backend" == ascend ]] || notes+=("Throughput is ONNX Runtime on this machine's $(
  "$PYTHON" -c 'import onnxruntime as o; print(o.get_device())') compute only, not an Ascend figure.")
notes+=("Finished in $((SECONDS - start)) s; everything is in $workdir.")
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
model_name="${arch:-$(basename -- "$checkpoint")}"
report_args=(--model "$model_name" --backend "$backend_name" "${report_runs[@]}" "${note_args[@]}"
             --out "$workdir/report.md")
[[ -z "$chip" ]] || report_args+=(--chip "$chip")
echo
"$PYTHON" -m repvgg_pipeline.report "${report_args[@]}"
