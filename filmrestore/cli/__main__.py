"""``python -m filmrestore.cli``: the same as the ``filmrestore`` script."""

from filmrestore.cli import main

main()
