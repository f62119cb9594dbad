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
-> table, report.html and report.md in WORKDIR (report.py).

Options:
  --checkpoint PATH   training checkpoint (PyTorch .pth, MindSpore .ckpt / .safetensors); without it, the demo
  --images DIR        images to classify (flat, like ImageNet val, or one subfolder per class)
  --labels FILE       val_label.txt ('<file> <0-based class>' per line); default: the one preprocess.py
                      writes for a class-folder layout
  --arch NAME         RepVGG variant, e.g. RepVGG-A0, RepVGG-B1g2 (default: recognised from the checkpoint)
  --input-size N      model input size (default 224)
  --workdir DIR       where everything is written (default: ./demo_out for the demo, else ./work_dir)
  --batch-sizes "1 16"  batch sizes to run, spaces or commas (default "1 16"); e.g. 1,4,8,16,32,64 for a
                      sweep: one OM per size on Ascend; accuracy computed once when all give the same top-5
  --backend B         auto (default), onnxruntime or ascend
  --chip C            310 or 310P: per-card throughput (default: from npu-smi on Ascend, none otherwise)
  --device N          NPU id for ais_bench (default 0)
  --soc_version V     passed to atc_convert.sh (default: detected from npu-smi)
  --aipp              Ascend only: uint8 tensors, normalised on the device by AIPP (atc_convert.sh --aipp)
  --precision_mode M  ATC's precision mode, passed to atc_convert.sh and previewed without an NPU
                      (default: ATC's own, force_fp16 on 310/310P)
  --no-drift          skip the drift table (PyTorch reference vs ONNX float32 vs FP16 preview or OM)
  --preset P          preprocess.py --preset: torchvision (default), mindspore or mindspore-310 (the
                      MindSpore model zoo's eval / Ascend 310 transforms, see preprocess.py --help)
  --overwrite         redo every step, also in a work folder made with other settings (it remembers
                      checkpoint, arch, input size, images and tensor type, and refuses others without this)
  --stream            infer.py decodes the images itself (preprocess.py's transform in worker processes):
                      no prep_bin/ of tensors in the work folder, same dumps
  -h, --help          this help
Environment: PYTHON (default: python, else python3).

Every option and input is checked before the first step. Unreadable images are listed in
WORKDIR/prep_bin/failed.txt; the run goes on with the others and exits 1 at the end. A run stopped
part-way (Ctrl-C) resumes when rerun with the same options.
EOF
}

# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"  # die, parse_batch_sizes
current_step=""
step() { current_step="$*"; echo; echo "== $PROG: $*"; }
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value"; }

# What a run writes into the work folder (globs). The settings check refuses a folder holding any of these
# without a settings record; --overwrite in a folder made with other settings removes exactly these.
OUTPUTS=(repvgg.onnx repvgg_prep_bin.info prep_bin result 'result_bs*.json' report.md report.html pth2onnx.log
         'repvgg_bs*.om' aipp.config batch_agreement.json drift.json drift.log)
MADE_FROM_SETTINGS=(repvgg.onnx prep_bin result 'repvgg_bs*.om')

first_existing() {  # the first of the globs $@ that exists in $workdir, or nothing
  (cd -- "$workdir" 2>/dev/null || exit 0
   shopt -s nullglob
   for glob in "$@"; do
     for path in $glob; do [[ ! -e "$path" && ! -L "$path" ]] || { echo "$path"; exit 0; }; done
   done)
}

clear_outputs() {  # --overwrite in a folder made with other settings: remove what the earlier runs wrote, nothing else
  (cd -- "$workdir" && shopt -s nullglob \
   && rm -f -- repvgg.onnx repvgg_prep_bin.info report.md report.html pth2onnx.log aipp.config result_bs*.json \
        repvgg_bs*.om batch_agreement.json drift.json drift.log \
   && rm -f -- prep_bin/*.bin prep_bin/val_label.txt prep_bin/failed*.txt prep_bin/.preprocess-settings.json \
        result/val_label.txt result/failed*.txt \
   && for run in result/bs* result/torch_bs* result/fp16_bs* result/onnx_bs*; do \
        [[ -d "$run" ]] || continue; \
        rm -f -- "$run"/*_[0-9]*.bin "$run"/*_[0-9]*.npy "$run"/*_[0-9]*.txt "$run"/.infer_dumps.json "${run}_summary.json"; \
      done \
   && { rmdir -- result/*/ prep_bin result 2>/dev/null; true; }) \
    || die "--overwrite: cannot remove the earlier outputs in $workdir"
  echo "$PROG: --overwrite: removed the outputs of the earlier run (other settings) from $workdir"
}

check_settings() {  # $1 record file, $2... "key=value": die unless the work folder may be used with these settings
  local file="$1" line key old new found changed=()
  shift
  if [[ ! -e "$file" && ! -L "$file" ]]; then
    local ours=("${OUTPUTS[@]}")
    [[ "$demo" == 0 ]] || ours+=(images '*-random-weights.pth')
    found="$(first_existing "${ours[@]}")"
    [[ -z "$found" ]] || die "$workdir already holds '$found', which no recorded run of $PROG wrote; choose another --workdir, or remove it yourself if an earlier version of $PROG made it (nothing was changed)"
    return 0
  fi
  [[ -f "$file" && -r "$file" ]] || die "cannot read the settings record $file"
  local -A previous=()
  while IFS= read -r line; do
    [[ "$line" == \#* || "$line" != *=* ]] || previous["${line%%=*}"]="${line#*=}"
  done <"$file"
  [[ -n "${previous[input_size]+set}" ]] || changed+=("the record is damaged")
  for line in "$@"; do
    key="${line%%=*}" new="$(printf '%q' "${line#*=}")"
    old="${previous[$key]-$new}"  # a key an older record lacks is not a change
    [[ "$old" == "$new" ]] || changed+=("$key ${old:0:40} -> ${new:0:40}")
  done
  [[ ${#changed[@]} -gt 0 ]] || return 0
  [[ -n "$(first_existing "${MADE_FROM_SETTINGS[@]}")" ]] || return 0  # nothing made from the old settings yet
  changed=("$(printf '%s; ' "${changed[@]}")")
  [[ "$overwrite" == 1 ]] || die "$workdir holds the outputs of other settings (${changed[0]%; }); pass --overwrite to redo it with these, or choose another --workdir (nothing was changed)"
  clear_outputs
}

write_settings() {  # $1 record file, $2... "key=value" lines ("# ..." lines verbatim), written atomically
  local file="$1" line tmp
  shift
  tmp="$(mktemp "$file.tmp-XXXXXX" 2>/dev/null)" || die "cannot write in $(dirname -- "$file")"
  chmod "$(printf '%04o' $((0666 & ~0$(umask))))" "$tmp"  # mktemp makes it 0600; a record is as readable as the rest
  {
    echo "# $PROG: what this work folder's outputs are made from; a run with other values is refused (or redone with --overwrite)"
    for line in "$@"; do
      if [[ "$line" == \#* ]]; then echo "${line//$'\n'/\\n}"; else printf '%s=%q\n' "${line%%=*}" "${line#*=}"; fi
    done
  } >"$tmp" && mv -f -- "$tmp" "$file" || { rm -f -- "$tmp"; die "cannot write the settings record $file"; }
}

checkpoint="" images="" labels="" arch="" input_size=224 workdir="" batch_sizes="1 16" backend=auto chip=""
device=0 soc_version="" aipp=0 preset="" overwrite=0 stream=0
precision_mode="" drift=1  # issue 10: drift table
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
    --precision_mode|--precision-mode) need_value "$@"; precision_mode="$2"; shift 2 ;;  # issue 10
    --no-drift|--no_drift) drift=0; shift ;;  # issue 10
    --preset) need_value "$@"; preset="$2"; shift 2 ;;
    --overwrite|--force) overwrite=1; shift ;;
    --stream) stream=1; shift ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done

# ---- check everything before the first step: nothing is written until all of it has passed
trap 'echo "$PROG: interrupted; rerun the same command to resume" >&2; exit 130' INT TERM
PYTHON="${PYTHON:-$(command -v python || command -v python3 || true)}"
[[ -n "$PYTHON" ]] || die "no python found: install Python 3.10+ and 'pip install -r requirements.txt'"
command -v -- "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON: no such program; set PYTHON to a Python 3.10+ interpreter"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 \
  || die "PYTHON=$PYTHON does not run Python 3.10+; set PYTHON to a Python 3.10+ interpreter"
demo=0
if [[ -z "$checkpoint" && -z "$images" && -z "$labels" ]]; then
  demo=1
  workdir="${workdir:-demo_out}"
  arch="${arch:-RepVGG-A0}"
else
  [[ -n "$checkpoint" && -n "$images" ]] || die "give both --checkpoint and --images (or no options for the demo)"
  check_file checkpoint "$checkpoint"
  check_dir "image folder" "$images"
  [[ -z "$labels" ]] || check_file "label file" "$labels"
  workdir="${workdir:-work_dir}"
fi
[[ "$input_size" =~ ^[1-9][0-9]{0,3}$ ]] && (( input_size >= 32 && input_size <= 2048 )) \
  || die "--input-size must be an integer from 32 to 2048 (RepVGG downsamples by 32), got '$input_size'"
[[ "$device" =~ ^[0-9]{1,4}$ ]] || die "--device must be a non-negative integer, got '$device'"
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
    npu-smi info >/dev/null 2>&1 || die "--backend ascend: 'npu-smi info' fails: is the NPU driver loaded?"
    command -v atc >/dev/null 2>&1 \
      || die "--backend ascend: atc not found: run 'source /usr/local/Ascend/ascend-toolkit/set_env.sh' first" ;;
  *) die "--backend must be auto, onnxruntime or ascend, got '$backend'" ;;
esac
[[ "$aipp" == 0 || "$backend" == ascend ]] || die "--aipp applies to OM models only; no Ascend NPU is in use here"
[[ -z "$soc_version" || "$backend" == ascend ]] || die "--soc_version applies to OM models only; no Ascend NPU is in use here"
[[ -z "$soc_version" || "$soc_version" =~ ^[A-Za-z0-9_]+$ ]] || die "--soc_version must look like Ascend310P3, got '$soc_version'"
if [[ "$backend" == ascend && -z "$chip" ]]; then
  # "310P3" -> 310P (one chip per card), "310" -> 310 (four per card), as parse_perf.py counts them
  chip="$( (npu-smi info 2>/dev/null || true) \
    | sed -nE 's/^\|[[:space:]]*[0-9]+[[:space:]]+(Ascend)?(310P?)[A-Za-z0-9]*[[:space:]]*\|.*/\2/p' | head -n 1)"
fi
dtype=float32
[[ "$aipp" == 0 ]] || dtype=uint8

abspath() { [[ -z "$1" || "$1" == /* ]] && echo "$1" || echo "$PWD/$1"; }
checkpoint="$(abspath "$checkpoint")" images="$(abspath "$images")" labels="$(abspath "$labels")"
workdir="$(abspath "$workdir")"
[[ "$workdir" != *$'\n'* ]] || die "--workdir must not contain a line break: the info file lists one tensor path per line"
check_writable_dir "--workdir" "$workdir"
# Inputs and outputs must not overlap: the steps would read what they write (or scan their own outputs).
real_workdir="$(realpath -m -- "$workdir")"
if [[ "$demo" == 0 ]]; then
  real_images="$(realpath -m -- "$images")"
  [[ "$real_workdir" != "$real_images" ]] || die "--workdir and --images are the same folder ($images); give another --workdir"
  [[ "$real_workdir/" != "$real_images/"* ]] \
    || die "--workdir $workdir lies inside the image folder $images; choose a work folder outside it"
  for input in "$real_images" "$(realpath -m -- "$checkpoint")" ${labels:+"$(realpath -m -- "$labels")"}; do
    for out in "${OUTPUTS[@]}"; do  # $out unquoted: a pattern
      [[ "$input" != "$real_workdir/"$out && "$input" != "$real_workdir/"$out/* ]] \
        || die "input $input is among the outputs this script writes into $workdir; move it or choose another --workdir"
    done
  done
else
  real_images="$real_workdir/images"
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # for `python -m repvgg_pipeline...` from any folder
# The Python side of the checks: interpreter and packages, the images and their labels, --chip, the checkpoint's sha256.
input_facts="$("$PYTHON" - "$demo" "$images" "$labels" "$chip" "$checkpoint" <<'PY'
import signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C while importing: no traceback
def die(message):
    print(f"run_pipeline.sh: error: {message}", file=sys.stderr)
    sys.exit(2)
import hashlib, importlib.util
missing = [m for m in ("numpy", "PIL", "tqdm", "torch", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
if missing:
    die(f"{sys.executable} lacks {', '.join(missing)}: run '{sys.executable} -m pip install -r requirements.txt'")
from repvgg_pipeline.cli import UserError
demo, images, labels, chip, checkpoint = sys.argv[1:6]
sha, count, layout = "demo", 0, "demo"
if chip:
    from repvgg_pipeline.formats.perf import normalise_chip
    try:
        chip = normalise_chip(chip)
    except UserError as err:
        die(f"--chip: {err}")
try:
    if demo != "1":
        from repvgg_pipeline.dataset import FLAT, find_images
        from repvgg_pipeline.formats.labels import image_key, read_labels
        found = find_images(images)
        count, layout = len(found.items), found.layout
        if labels:
            known = read_labels(labels)
            if not any(image_key(item.name) in known for item in found.items):
                die(f"none of the {count} images in {images} has a label in {labels}")
        elif found.layout == FLAT:
            die(f"{images} holds images without class subfolders: give their labels with --labels val_label.txt")
        digest = hashlib.sha256()
        with open(checkpoint, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        sha = digest.hexdigest()
except UserError as err:
    die(str(err))
except OSError as err:
    die(f"cannot read {err.filename}: {err.strerror}")
print(sha, chip or "-", count, layout)
PY
)" || exit $?
read -r checkpoint_sha chip image_count image_layout <<<"$input_facts"
[[ "$chip" != - ]] || chip=""

[[ -z "$precision_mode" ]] || "$PYTHON" -c 'import sys; from repvgg_pipeline.fp16_preview import PRECISION_MODES as m
sys.exit(sys.argv[1] not in m)' "$precision_mode" \
  || die "unknown --precision_mode '$precision_mode' (ATC's: force_fp16, must_keep_origin_dtype, allow_fp32_to_fp16, ...)"

# ---- the work folder remembers what its outputs were made from, and refuses to mix them with others
settings_file="$workdir/.run_pipeline-settings"
settings=("checkpoint_sha256=$checkpoint_sha" "arch=${arch:-auto}" "input_size=$input_size" "images=$real_images"
          "tensor_dtype=$dtype" "preset=${preset:-torchvision}")  # what the ONNX model, the tensors and the dumps depend on
[[ -d "$workdir" ]] || mkdir -p -- "$workdir" 2>/dev/null || die "cannot create --workdir $workdir"
workdir="$(cd -- "$workdir" && pwd)"
if command -v flock >/dev/null 2>&1; then  # two runs in one folder would clear and rewrite each other's files
  exec 9<"$workdir"
  flock -n 9 || die "another run of $PROG is using $workdir; wait for it or choose another --workdir"
fi
check_settings "$settings_file" "${settings[@]}"
write_settings "$settings_file" "${settings[@]}" \
  "# recorded, not binding: checkpoint=${checkpoint:-generated} labels=${labels:-from the class folders} batch_sizes=${batch_list[*]} backend=$backend"
start=$SECONDS
trap 'rc=$?; [[ $rc == 0 || $rc == 130 || -z "$current_step" ]] || echo "== $PROG: stopped in step \"$current_step\" (exit $rc): see the error above"' EXIT
echo "$PROG: work folder $workdir; backend $backend; batch sizes ${batch_list[*]}; python $PYTHON"
[[ "$demo" == 1 ]] || echo "$PROG: $image_count images ($image_layout) in $images; checkpoint sha256 ${checkpoint_sha:0:12}..."

# ---- 0. demo inputs: random-weight checkpoint + generated images (deterministic, so reruns reuse them)
if [[ "$demo" == 1 ]]; then
  step "demo inputs: random $arch checkpoint and generated images"
  checkpoint="$workdir/${arch}-random-weights.pth"
  if [[ ! -f "$checkpoint" ]]; then
    "$PYTHON" -c 'import sys; from repvgg_model import write_random_checkpoint as w; from repvgg_model.errors import ModelError
try: w(sys.argv[1], arch=sys.argv[2])
except ModelError as err: print(f"run_pipeline.sh: error: --arch: {err}", file=sys.stderr); sys.exit(2)' \
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
: >"$workdir/pth2onnx.log"  # its stdout and stderr, for the notes; its errors also go to stderr
"$PYTHON" "$ROOT/pth2onnx.py" "${export_args[@]}" 2> >(tee -i -a "$workdir/pth2onnx.log" >&2) | tee -i -a "$workdir/pth2onnx.log"

# ---- 2. images -> .bin tensors, and their info file
infer_input="$workdir/repvgg_prep_bin.info" stream_args=()
unreadable=0  # exit 1 with a failure list: some images could not be read; go on with the others
if [[ "$stream" == 1 ]]; then
  step "2/6 streaming: infer.py preprocesses the images itself ($dtype), no .bin tensors written"
  infer_input="$images" stream_args=(--stream --crop "$input_size" --dtype "$dtype" ${preset:+--preset "$preset"})
  [[ -n "$labels" ]] || labels="$workdir/result/val_label.txt"  # infer.py writes it for a class-folder layout
else
  step "2/6 preprocess + gen_dataset_info: images -> $dtype .bin tensors"
  prep_args=("$images" "$workdir/prep_bin" --crop "$input_size" --dtype "$dtype" ${preset:+--preset "$preset"})
  [[ "$overwrite" == 0 ]] || prep_args+=(--overwrite)
  rc=0
  "$PYTHON" "$ROOT/preprocess.py" "${prep_args[@]}" || rc=$?
  unreadable=0  # exit 1 with a failure list: some images could not be read; go on with the others
  if [[ $rc == 1 && -s "$workdir/prep_bin/failed.txt" ]]; then
    unreadable="$(grep -c '' "$workdir/prep_bin/failed.txt")"
    echo "$PROG: $unreadable of $image_count images could not be read (listed in $workdir/prep_bin/failed.txt); going on with the others"
  elif [[ $rc != 0 ]]; then
    exit "$rc"
  fi
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
  [[ -z "$precision_mode" ]] || atc_args+=(--precision_mode "$precision_mode")
  bash "$ROOT/scripts/atc_convert.sh" "${atc_args[@]}"
  for b in "${batch_list[@]}"; do models+=("$workdir/repvgg_bs$b.om"); done
  backend_name=ais_bench
else
  step "3/6 no Ascend NPU here (atc/npu-smi not usable): ONNX Runtime runs the ONNX model"
  for b in "${batch_list[@]}"; do models+=("$onnx"); done
  backend_name=onnxruntime
fi

# ---- 4. inference, ais_bench output layout
# ais_bench writes only into folders of at most rwxr-x--- (its path_security_check.py): make result/ so
[[ "$backend_name" != ais_bench ]] || mkdir -p -m 750 -- "$workdir/result"
scoring_problems=()
summaries=()
sweep_runs=()
for i in "${!batch_list[@]}"; do
  b="${batch_list[$i]}"
  step "4/6 infer: batch $b with $backend_name"
  rc=0
  "$PYTHON" "$ROOT/infer.py" "${models[$i]}" "$infer_input" "$workdir/result" \
    --output_dirname "bs$b" --batch-size "$b" --device "$device" ${stream_args[@]+"${stream_args[@]}"} || rc=$?
  if [[ $rc == 1 && "$stream" == 1 && -s "$workdir/result/failed.txt" ]]; then  # streaming: unreadable images
    unreadable="$(grep -c '' "$workdir/result/failed.txt")"
    echo "$PROG: $unreadable of $image_count images could not be read (listed in $workdir/result/failed.txt); going on with the others"
  elif [[ $rc != 0 ]]; then
    exit "$rc"
  fi
  summaries+=("$workdir/result/bs${b}_summary.json")
  sweep_runs+=("bs$b=$workdir/result/bs$b")
done

# ---- 5. accuracy: once per backend when every batch size gives each image the same top-5, else per batch size
b0="${batch_list[0]}"
step "5/6 postprocess: top-k accuracy of batch $b0"
score() {  # $1 dump folder name, $2 result json: exit 1 with a result means scored with problems it reported
  local rc=0
  rm -f -- "$2"  # an earlier run's figures must not pass for this run's
  "$PYTHON" "$ROOT/postprocess.py" "$workdir/result/$1" "$labels" "$2" || rc=$?
  if [[ $rc == 1 && -s "$2" ]]; then scoring_problems+=("$1"); elif [[ $rc != 0 ]]; then exit "$rc"; fi
}
score "bs$b0" "$workdir/result_bs$b0.json"
rm -f -- "$workdir/batch_agreement.json"
for b in "${batch_list[@]:1}"; do rm -f -- "$workdir/result_bs$b.json"; done  # ours, from an earlier run
if [[ ${#batch_list[@]} -gt 1 ]]; then
  step "5/6 compare the dumps of batch ${batch_list[*]}: equal top-5 means equal accuracy"
  differing="$("$PYTHON" -m repvgg_pipeline.report_sweep --backend "$backend_name" \
    --json "$workdir/batch_agreement.json" "${sweep_runs[@]}")"
  for name in $differing; do
    step "5/6 postprocess: $name differs from bs$b0, its own accuracy"
    score "$name" "$workdir/result_$name.json"
  done
fi

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
[[ "$unreadable" == 0 ]] || notes+=("$unreadable of $image_count images could not be read and are not counted above: see $workdir/prep_bin/failed.txt.")
[[ ${#scoring_problems[@]} == 0 ]] || notes+=("postprocess.py reported problems scoring ${scoring_problems[*]} (see its messages above).")
notes+=("Finished in $((SECONDS - start)) s; everything is in $workdir.")
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
report_args=("$workdir" --checkpoint "$checkpoint" "${note_args[@]}")
[[ -z "$arch" ]] || report_args+=(--arch "$arch")
[[ -z "$chip" ]] || report_args+=(--chip "$chip")
echo

# ---- 7. accuracy drift (issue 10): the PyTorch reference beside the float32 ONNX run and, without an NPU,
# the FP16 preview of ATC's precision mode (on Ascend: the OM), on the same images at one batch size
if [[ "$drift" == 1 && "$aipp" == 1 ]]; then
  echo; echo "$PROG: no drift table with --aipp (uint8 tensors feed only the OM; PyTorch and ONNX need float32)"
elif [[ "$drift" == 1 ]]; then
  db="${batch_list[-1]}"
  mode="${precision_mode:-force_fp16}"
  what="the $mode preview"
  [[ "$backend" != ascend ]] || what="the OM"
  step "drift: PyTorch reference, ONNX float32 and $what at batch $db (log: $workdir/drift.log)"
  : > "$workdir/drift.log"
  torch_args=("$checkpoint" "$infer_input" "$workdir/result" --output_dirname "torch_bs$db"
              --batch-size "$db" --input-size "$input_size" ${stream_args[@]+"${stream_args[@]}"})
  [[ -z "$arch" ]] || torch_args+=(--arch "$arch")
  "$PYTHON" "$ROOT/infer.py" "${torch_args[@]}" >> "$workdir/drift.log"
  runs=("$workdir/result/torch_bs$db") names="torch"
  if [[ "$backend" == ascend ]]; then
    "$PYTHON" "$ROOT/infer.py" "$onnx" "$infer_input" "$workdir/result" --backend onnxruntime \
      --output_dirname "onnx_bs$db" --batch-size "$db" ${stream_args[@]+"${stream_args[@]}"} >> "$workdir/drift.log"
    runs+=("$workdir/result/onnx_bs$db" "$workdir/result/bs$db") names+=",onnx-fp32,om-$mode"
  else
    runs+=("$workdir/result/bs$db") names+=",onnx-fp32"
    if [[ "$mode" != must_keep_origin_dtype ]]; then
      "$PYTHON" "$ROOT/infer.py" "$onnx" "$infer_input" "$workdir/result" --precision_mode "$mode" \
        --output_dirname "fp16_bs$db" --batch-size "$db" ${stream_args[@]+"${stream_args[@]}"} >> "$workdir/drift.log"
      runs+=("$workdir/result/fp16_bs$db") names+=",$mode-preview"
    fi
  fi
  # printed under the accuracy table, after the report (which reads drift.json)
  drift_table="$("$PYTHON" "$ROOT/compare.py" "${runs[@]}" --labels "$labels" --names "$names" --json "$workdir/drift.json")"
  [[ "$backend" == ascend ]] || drift_table+=$'\n'"The FP16 preview rounds data as ATC's $mode does but runs ONNX Runtime's kernels: ATC's own fusions and kernels can drift more or less (README, 'FP16 preview')."
fi
echo
"$PYTHON" "$ROOT/report.py" "${report_args[@]}"
if [[ -n "${drift_table:-}" ]]; then
  echo; echo "$drift_table"
  echo "$PROG: drift record in $workdir/drift.json; all done in $((SECONDS - start)) s."
fi
current_step=""
problems=()  # partial results: the table is printed, and the exit code says that not everything was counted
[[ "$unreadable" == 0 ]] || problems+=("$unreadable of $image_count images could not be read (listed in $workdir/prep_bin/failed.txt); the figures are over the other $((image_count - unreadable))")
[[ ${#scoring_problems[@]} == 0 ]] || problems+=("postprocess.py reported problems scoring ${scoring_problems[*]}: see its messages above")
if [[ ${#problems[@]} -gt 0 ]]; then problems=("$(printf '%s; ' "${problems[@]}")"); die "${problems[0]%; }" 1; fi
