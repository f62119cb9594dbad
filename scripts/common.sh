# shellcheck shell=bash
# Shell helpers shared by the scripts in this folder (sourced, not run). The caller sets PROG.

die() {  # one line on stderr, exit code (default 2: bad input or setup)
  local message="${1//$'\n'/\\n}"  # a path holding a newline must not split the one line
  echo "$PROG: error: $message" >&2
  exit "${2:-2}"
}

parse_batch_sizes() {  # "1 16" or "1,16" -> the array batch_list; dies on anything but distinct positive integers
  local b seen=" "
  batch_list=()
  for b in ${1//,/ }; do
    [[ "$b" =~ ^[1-9][0-9]*$ ]] || die "batch sizes must be positive integers, got '$b' in '$1'"
    [[ ${#b} -le 4 && $b -le 4096 ]] || die "batch size $b is too large (at most 4096)"
    [[ "$seen" != *" $b "* ]] || die "batch size $b is given twice in '$1'"
    seen+="$b "
    batch_list+=("$b")
  done
  [[ ${#batch_list[@]} -gt 0 ]] || die "no batch sizes given"
}

check_file() {  # $1 what, $2 path: dies unless it is a readable, non-empty regular file
  local what="$1" path="$2"
  if [[ -L "$path" && ! -e "$path" ]]; then die "$what $path: broken symlink or symlink loop"
  elif [[ ! -e "$path" ]]; then die "$what not found: $path"
  elif [[ -d "$path" ]]; then die "$what $path is a folder, not a file"
  elif [[ ! -f "$path" ]]; then die "$what $path is not a regular file"
  elif [[ ! -r "$path" ]]; then die "$what $path is not readable (permission denied)"
  elif [[ ! -s "$path" ]]; then die "$what $path is empty"
  fi
}

check_dir() {  # $1 what, $2 path: dies unless it is a folder whose entries can be listed and read
  local what="$1" path="$2"
  if [[ -L "$path" && ! -e "$path" ]]; then die "$what $path: broken symlink or symlink loop"
  elif [[ ! -e "$path" ]]; then die "$what not found: $path"
  elif [[ ! -d "$path" ]]; then die "$what $path is not a folder"
  elif [[ ! -r "$path" || ! -x "$path" ]]; then die "$what $path is not readable (permission denied)"
  fi
}

check_writable_dir() {  # $1 what, $2 path: dies unless it is a writable folder or one that can be created
  local what="$1" path="$2" parent
  if [[ -L "$path" && ! -e "$path" ]]; then die "$what $path: broken symlink or symlink loop"
  elif [[ -e "$path" ]]; then
    [[ -d "$path" ]] || die "$what $path is not a folder"
    [[ -w "$path" && -x "$path" ]] || die "$what $path is not writable (permission denied)"
    parent="$(mktemp -p "$path" .write-test.XXXXXX 2>/dev/null)" && rm -f -- "$parent" \
      || die "$what $path is not writable (read-only file system or disk full?)"
  else
    parent="$(dirname -- "$path")"
    while [[ ! -e "$parent" && ! -L "$parent" ]]; do parent="$(dirname -- "$parent")"; done
    [[ ! -L "$parent" || -e "$parent" ]] || die "cannot create $what $path: $parent is a broken symlink or symlink loop"
    [[ -d "$parent" ]] || die "cannot create $what $path: $parent is not a folder"
    [[ -w "$parent" && -x "$parent" ]] || die "cannot create $what $path: $parent is not writable (permission denied)"
  fi
}
