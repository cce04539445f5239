import sys

try:
    from coda.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load: exit as a Ctrl-C'd command does, quietly
    sys.exit(130)

sys.exit(main())
