"""``python -m sphere_bench.train [overrides]``: see :mod:`sphere_bench.train.run`."""

from sphere_bench.train.run import cli

if __name__ == "__main__":
    cli()
