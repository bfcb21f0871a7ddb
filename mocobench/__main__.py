"""``python -m mocobench ...``: the same command as the ``mocobench`` console script."""

from mocobench.cli import main

main(prog_name="mocobench")
