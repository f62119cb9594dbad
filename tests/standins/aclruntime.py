"""Stand-in for `aclruntime` of the 2025 release line (tests only): see acl_standin.py."""

from acl_standin import make_aclruntime

globals().update(make_aclruntime("2025"))
