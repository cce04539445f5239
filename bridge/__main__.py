"""`python -m bridge [--host H] [--port P] [--coda ADDR]`: the same as `coda bridge`."""

import sys

from coda.cli import main

sys.exit(main(["bridge", *sys.argv[1:]]))
