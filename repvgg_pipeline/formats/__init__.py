"""One module per file format that crosses the boundary with the Ascend tools.

Each format is read *and* written in exactly one module, so a change to a format
(see ../shared/docs/ASCEND_FORMATS.md) is made in one place.
"""
