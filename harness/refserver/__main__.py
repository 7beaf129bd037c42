import sys

from harness.refserver.server import main

sys.exit(main())
