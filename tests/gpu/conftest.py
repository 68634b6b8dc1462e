"""GPU tests: skipped without CUDA. cuBLAS needs its workspace setting before its first use for
deterministic matrix products (the exact-resume test); setting it here, at collection, is early
enough because no test has run a CUDA kernel yet."""
from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
