"""``python -m hec`` is the ``hec`` command."""

from hec.cli.main import main

main()
