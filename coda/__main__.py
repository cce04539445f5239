import signal
import sys

# A Ctrl-C while the modules load ends the process at once, quietly (nothing to clean up yet);
# `main` hands Ctrl-C back to Python once the commands are loaded. (An ignored SIGINT stays ignored.)
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from coda.cli import main

sys.exit(main())
