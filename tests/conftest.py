"""Shared test setup: import the package from this checkout, quiet and deterministic."""

import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
for _path in (ROOT, TESTS):  # the package, and the tests' shared helpers (_paths, _zoo, ...) for every folder
    if _path not in sys.path:
        sys.path.insert(0, _path)

os.environ.setdefault("MPLBACKEND", "Agg")

# Measured roofs are cached per machine; tests measure afresh into a private directory so a
# cache written on a busy machine (or by another checkout) never leaks into assertions.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["TORCH_ROOFLINE_CACHE_DIR"] = tempfile.mkdtemp(prefix="torch-roofline-test-cache-")
atexit.register(shutil.rmtree, os.environ["TORCH_ROOFLINE_CACHE_DIR"], ignore_errors=True)

# torch.compile's caches too: a graph cached by an earlier run keeps the provenance and the stack
# traces (line numbers) of the code it was first compiled from, so tests compile into a private
# directory (what a fresh machine does).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="torch-roofline-test-inductor-")
atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
