#!/usr/bin/env bash
# Convert the exported RepVGG ONNX model into static-batch OM models with CANN's ATC.
# See ../shared/docs/ASCEND_FORMATS.md section 2 for the ATC command line and the AIPP config.
set -euo pipefail

PROG=atc_convert.sh

usage() {
  cat <<'EOF'
Usage: bash scripts/atc_convert.sh [options]

Builds one OM model per batch size from an ONNX export with CANN's ATC:
  atc --framework=5 --model=ONNX --output=PREFIX_bsB --input_format=NCHW \
      --input_shape="INPUT_NAME:B,3,H,W" --log=error --soc_version=SOC [--precision_mode=M] [--insert_op_conf=aipp.config]
Default: repvgg.onnx -> repvgg_bs1.om, repvgg_bs16.om. Any OM of the same name is deleted
before its conversion, and the script fails if an OM is missing afterwards.

Options (each also read from the environment variable in brackets; options win):
  --onnx PATH             ONNX model to convert [ATC_ONNX] (default: repvgg.onnx)
  --output-prefix P       OM path prefix; writes P_bs<B>.om [ATC_OUTPUT_PREFIX] (default: ONNX path minus .onnx)
  --batch-sizes "1 16"    batch sizes, space or comma separated [ATC_BATCH_SIZES] (default: "1 16")
  --input-size N|H,W      input height and width [ATC_INPUT_SIZE] (default: 224)
  --input-name NAME       ONNX input name [ATC_INPUT_NAME] (default: actual_input_1)
  --soc_version V         e.g. Ascend310, Ascend310P3 [SOC_VERSION]
                          (default: "Ascend" + the chip Name shown by `npu-smi info`)
  --precision_mode M      ATC precision mode, e.g. force_fp16, allow_fp32_to_fp16, must_keep_origin_dtype
                          [ATC_PRECISION_MODE] (default: ATC's own default, force_fp16 on 310)
  --aipp                  write an AIPP config (uint8 RGB input, ImageNet mean/std applied on the device)
                          and pass it to ATC; feed such OMs with `preprocess.py --dtype uint8` tensors [ATC_AIPP=1]
  --aipp-config PATH      where to write the AIPP config [ATC_AIPP_CONFIG] (default: aipp.config beside the OMs)
  --log LEVEL             ATC log level: debug, info, warning, error, null [ATC_LOG] (default: error)
  --atc-arg ARG           one more argument for ATC, verbatim (repeatable), e.g. --atc-arg=--precision_mode_v2=fp16
  --dry-run               print the ATC commands (and the AIPP config) without running or writing anything
  -h, --help              this help

ATC comes with CANN: `source /usr/local/Ascend/ascend-toolkit/set_env.sh` first.
EOF
}

# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"  # die, parse_batch_sizes

onnx="${ATC_ONNX:-repvgg.onnx}"
prefix="${ATC_OUTPUT_PREFIX:-}"
batch_sizes="${ATC_BATCH_SIZES:-1 16}"
input_size="${ATC_INPUT_SIZE:-224}"
input_name="${ATC_INPUT_NAME:-actual_input_1}"
soc_version="${SOC_VERSION:-}"
precision_mode="${ATC_PRECISION_MODE:-}"
aipp="${ATC_AIPP:-0}"
aipp_config="${ATC_AIPP_CONFIG:-}"
log_level="${ATC_LOG:-error}"
dry_run=0
extra_args=()

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value"; }

while [[ $# -gt 0 ]]; do
  arg="$1"
  if [[ "$arg" == --*=* ]]; then  # --name=value -> --name value
    set -- "${arg%%=*}" "${arg#*=}" "${@:2}"
    arg="$1"
  fi
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --onnx) need_value "$@"; onnx="$2"; shift 2 ;;
    --output-prefix|--output_prefix) need_value "$@"; prefix="$2"; shift 2 ;;
    --batch-sizes|--batch_sizes|--batch-size) need_value "$@"; batch_sizes="$2"; shift 2 ;;
    --input-size|--input_size) need_value "$@"; input_size="$2"; shift 2 ;;
    --input-name|--input_name) need_value "$@"; input_name="$2"; shift 2 ;;
    --soc_version|--soc-version) need_value "$@"; soc_version="$2"; shift 2 ;;
    --precision_mode|--precision-mode) need_value "$@"; precision_mode="$2"; shift 2 ;;
    --aipp) aipp=1; shift ;;
    --aipp-config|--aipp_config) need_value "$@"; aipp_config="$2"; aipp=1; shift 2 ;;
    --log) need_value "$@"; log_level="$2"; shift 2 ;;
    --atc-arg|--atc_arg) need_value "$@"; extra_args+=("$2"); shift 2 ;;
    --dry-run|--dry_run) dry_run=1; shift ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done

# ---- check the inputs before touching anything
# Checked first: on a host where neither CANN nor the driver is set up, the first thing to do is source it.
if [[ "$dry_run" != 1 ]] && ! command -v atc >/dev/null 2>&1; then
  command -v npu-smi >/dev/null 2>&1 || [[ -n "$soc_version" ]] || no_smi=" (npu-smi, from the driver, is missing too)"
  die "atc not found on PATH: run 'source /usr/local/Ascend/ascend-toolkit/set_env.sh' (CANN) first${no_smi:-}"
fi

[[ -e "$onnx" || -L "$onnx" ]] || die "ONNX model not found: $onnx (export one with: python pth2onnx.py CHECKPOINT $onnx)"
check_file "ONNX model" "$onnx"
[[ -n "$prefix" ]] || prefix="${onnx%.onnx}"
parse_batch_sizes "$batch_sizes"
if [[ "$input_size" =~ ^([1-9][0-9]*)$ ]]; then
  height="$input_size"; width="$input_size"
elif [[ "$input_size" =~ ^([1-9][0-9]*)[,x]([1-9][0-9]*)$ ]]; then
  height="${BASH_REMATCH[1]}"; width="${BASH_REMATCH[2]}"
else
  die "input size must be N or H,W, got '$input_size'"
fi
[[ "$aipp" == 0 || "$aipp" == 1 ]] || die "ATC_AIPP must be 0 or 1, got '$aipp'"
case "$log_level" in debug|info|warning|error|null) ;; *) die "unknown ATC log level '$log_level'" ;; esac
# Values that land inside ATC's own syntax ("name:B,3,H,W", --flag=value) must not carry its separators.
[[ "$input_name" =~ ^[^[:space:],\;\"\']+$ ]] || die "--input-name must not hold spaces, commas, semicolons or quotes, got '$input_name'"
[[ -z "$soc_version" || "$soc_version" =~ ^[A-Za-z0-9_]+$ ]] || die "--soc_version must look like Ascend310P3, got '$soc_version'"
[[ -z "$precision_mode" || "$precision_mode" =~ ^[A-Za-z0-9_]+$ ]] \
  || die "--precision_mode must be one word like force_fp16, got '$precision_mode'"
if [[ "$dry_run" == 0 ]]; then  # the folders the OMs and the AIPP config go to: one line now, not mkdir's message later
  check_writable_dir "output folder" "$(dirname -- "$prefix")"
  [[ "$aipp" == 0 || -z "$aipp_config" ]] || check_writable_dir "AIPP config folder" "$(dirname -- "$aipp_config")"
  [[ ! -d "$prefix" ]] || die "--output-prefix $prefix is a folder; give a path prefix such as $prefix/repvgg"
fi

if [[ -z "$soc_version" ]]; then
  command -v npu-smi >/dev/null 2>&1 \
    || die "cannot detect the chip: npu-smi not found; pass --soc_version (e.g. Ascend310 or Ascend310P3)"
  smi_output="$(npu-smi info 2>&1)" || die "cannot detect the chip: 'npu-smi info' failed; pass --soc_version"
  # First NPU row: "| 0     310P3      | OK ..." (the Name column); chip rows below it carry no name.
  chip_name="$(sed -nE 's/^\|[[:space:]]*[0-9]+[[:space:]]+((Ascend)?[0-9]{3}[A-Za-z0-9]*)[[:space:]]*\|.*/\1/p' \
    <<<"$smi_output" | head -n 1)"
  [[ -n "$chip_name" ]] || die "cannot find a chip name in 'npu-smi info' output; pass --soc_version"
  soc_version="Ascend${chip_name#Ascend}"
fi

if [[ "$aipp" == 1 && -z "$aipp_config" ]]; then
  aipp_config="$(dirname -- "$prefix")/aipp.config"
fi

aipp_text() {  # uint8 RGB -> (x - 255*mean) * 1/(255*std), ImageNet mean/std (ASCEND_FORMATS.md section 2)
  cat <<EOF
aipp_op {
  aipp_mode : static
  input_format : RGB888_U8
  src_image_size_w : $width
  src_image_size_h : $height
  crop : false
  min_chn_0 : 123.675
  min_chn_1 : 116.28
  min_chn_2 : 103.53
  var_reci_chn_0 : 0.0171247538316637
  var_reci_chn_1 : 0.0175070028011204
  var_reci_chn_2 : 0.0174291938997821
}
EOF
}

atc_command() {  # the ATC command for batch $1, into the array `cmd`
  cmd=(atc --framework=5 "--model=$onnx" "--output=${prefix}_bs$1" --input_format=NCHW
       "--input_shape=${input_name}:$1,3,${height},${width}" "--log=$log_level" "--soc_version=$soc_version")
  [[ -z "$precision_mode" ]] || cmd+=("--precision_mode=$precision_mode")
  [[ "$aipp" == 0 ]] || cmd+=("--insert_op_conf=$aipp_config")
  [[ ${#extra_args[@]} -eq 0 ]] || cmd+=("${extra_args[@]}")
}

if [[ "$dry_run" == 1 ]]; then
  if [[ "$aipp" == 1 ]]; then
    echo "# would write $aipp_config:"
    aipp_text | sed 's/^/# /'
  fi
  for b in "${batch_list[@]}"; do
    atc_command "$b"
    quoted=()
    for word in "${cmd[@]}"; do  # copy-pastable, without escaping what needs none (commas, colons)
      if [[ "$word" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then quoted+=("$word"); else quoted+=("$(printf '%q' "$word")"); fi
    done
    echo "${quoted[*]}"
  done
  exit 0
fi

mkdir -p -- "$(dirname -- "$prefix")"
if [[ "$aipp" == 1 ]]; then
  mkdir -p -- "$(dirname -- "$aipp_config")"
  tmp_config="$(mktemp "${aipp_config}.tmp-XXXXXX")"
  aipp_text >"$tmp_config"
  mv -f -- "$tmp_config" "$aipp_config"
fi

start=$SECONDS
built=()
for b in "${batch_list[@]}"; do
  out="${prefix}_bs$b"
  # An OM left by an earlier run must never pass for this run's result.
  # (Some CANN versions name the file ${out}_linux_<arch>.om; *unverified*, so both are handled.)
  rm -f -- "$out.om" "${out}"_linux_*.om
  atc_command "$b"
  echo "$PROG: batch $b: ${cmd[*]}" >&2
  rc=0
  "${cmd[@]}" || rc=$?
  [[ $rc -eq 0 ]] || die "atc failed for batch $b (exit code $rc); see the ATC log above" 1
  if [[ ! -s "$out.om" ]]; then
    arch_named=("${out}"_linux_*.om)
    [[ -s "${arch_named[0]}" && ${#arch_named[@]} -eq 1 ]] && mv -f -- "${arch_named[0]}" "$out.om"
  fi
  [[ -s "$out.om" ]] || die "atc reported success for batch $b but $out.om was not written" 1
  built+=("$out.om")
done
echo "$PROG: built ${#built[@]} OM models for $soc_version in $((SECONDS - start)) s: ${built[*]}"
