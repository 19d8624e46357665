"""The maintainers' tools, runnable as scripts (``python tools/gen_reference.py``) and importable
as ``tools.<name>`` from the checkout's root (the docs tests use ``tools.gen_reference``)."""
