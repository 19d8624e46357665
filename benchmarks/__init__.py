"""The benchmarks, importable as ``benchmarks.<name>`` from the checkout's root (the tests use
``benchmarks.gen_corpus`` and friends) and runnable as scripts: ``python benchmarks/<name>.py``."""
