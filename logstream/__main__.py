import sys

from logstream.cli import main

sys.exit(main())
