# Shell helpers shared by the scripts in this folder (sourced, not run). The caller sets PROG.

die() {  # one line on stderr, exit code (default 2: bad input or setup)
  echo "$PROG: error: $1" >&2
  exit "${2:-2}"
}

parse_batch_sizes() {  # "1 16" or "1,16" -> the array batch_list; dies on anything but positive integers
  local b
  batch_list=()
  for b in ${1//,/ }; do
    [[ "$b" =~ ^[1-9][0-9]*$ ]] || die "batch sizes must be positive integers, got '$b' in '$1'"
    [[ " ${batch_list[*]} " != *" $b "* ]] || die "batch size $b is given twice in '$1'"
    batch_list+=("$b")
  done
  [[ ${#batch_list[@]} -gt 0 ]] || die "no batch sizes given"
}
