"""Stand-in for `aclruntime` of the 2023 release line, tools commit 9d6da90 (tests only): see acl_standin.py."""

from acl_standin import make_aclruntime

globals().update(make_aclruntime("2023"))
