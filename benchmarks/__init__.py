"""finegrained_ops' benchmark suite (`python -m benchmarks`, see suite.py): a package of the
source repository, not of the installed library, because it compares against peer libraries
that are not dependencies of finegrained_ops."""
