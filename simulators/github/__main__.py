import sys

from simulators.github.cli import main

sys.exit(main())
