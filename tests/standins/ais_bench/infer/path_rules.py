"""The path rules of ais_bench since 2024 (tests only), from ais_bench/infer/common/path_security_check.py.

`FileStat.check_linux_permission` and `check_path_legality`, rewritten (facts, not code):

- the absolute path (`os.path.abspath`, links not resolved) must match only `[_A-Za-z0-9/.-]`
  (PATH_WHITE_LIST_REGEX), be at most 4096 characters, each name at most 255;
- a path that is read must exist; a symbolic link is refused (`os.path.islink` on the path itself);
- the current user must own it or be in its group (`is_user_or_group_owner`);
- READ: group- or other-writable is refused (READ_FILE_NOT_PERMITTED_STAT), so is unreadable;
- WRITE (the CLI's --output, infer/args_check.py `check_output_path_legality`): an existing
  path with any of g+w, o+w, o+r, o+x is refused (WRITE_FILE_NOT_PERMITTED_STAT: at most 0o750);
- a file to read: the wanted suffix (`is_legal_file_type`) and at most `max_size` bytes.
The messages are the ValueErrors the real checks raise.
"""

from __future__ import annotations

import os
import re
import stat

READ, WRITE = "read", "write"
_ILLEGAL = re.compile(r"[^_A-Za-z0-9/.-]")


def refusal(path: str, perm: str) -> str | None:
    """Why the rules refuse `path` for `perm`, or None."""
    absolute = os.path.abspath(path)
    if len(absolute) > 4096 or any(len(name) > 255 for name in absolute.split("/")):
        return "path length out of range"
    if _ILLEGAL.search(absolute):
        return "path contains illegal char, legal chars include A-Z a-z 0-9 _ - / ."
    exists = os.path.exists(absolute)
    if not exists and perm != WRITE:
        return "not exist"
    if exists and os.path.islink(absolute):
        return "is a soft link, not supported"
    if not exists:
        return None
    info = os.stat(absolute)
    if info.st_uid != os.geteuid() and info.st_gid not in os.getgroups():
        return "current user isn't path's owner or ownergroup"
    mode = stat.S_IMODE(info.st_mode)
    if perm == READ:
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            return "group writable, or is others writable, permission should not be over 0o755"
        if not os.access(absolute, os.R_OK) or not mode & stat.S_IRUSR:
            return "no read permission"
    elif perm == WRITE:
        if mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IROTH | stat.S_IXOTH):
            return "group writable, or is others writable, permission should not be over 0o750"
        if not os.access(absolute, os.W_OK):
            return "no write permission"
    return None


def check_path(path: str, perm: str, max_size: int | None = None, suffix: str | None = None,
               is_file: bool = True) -> None:
    """`check_path_legality`: raise ValueError as the real one does."""
    absolute = os.path.abspath(path)
    if len(absolute) > 4096 or _ILLEGAL.search(absolute):
        raise ValueError("The path string is illegal. Please check.")
    if os.path.isfile(absolute) != is_file:
        raise ValueError(f"The path:{path} is not a {'file' if is_file else 'directory'}.")
    if refusal(path, perm) is not None:
        raise ValueError(f"The path:{path} is illegal. Please check the error log for more detail.")
    if suffix and os.path.splitext(absolute)[1] != f".{suffix}":
        raise ValueError(f"The suffix of path:{path} not in ['{suffix}']. Please check.")
    if max_size is not None and os.path.getsize(absolute) > max_size:
        raise ValueError(f"The file:{path} size is larger than {max_size}. Please check.")
