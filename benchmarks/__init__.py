"""The benchmark suite: how fast svite-search does its job (see ``benchmarks/README.md``).

A package, run from the repository root: ``python -m benchmarks.run_all`` runs the suite,
``python -m benchmarks.bench_<name>`` one benchmark, ``python -m benchmarks.gpu_check`` the GPU
check. :mod:`benchmarks.benchkit` holds what the scripts share; importing it runs the
torchvision import guard, so a script imports it before timm.
"""
