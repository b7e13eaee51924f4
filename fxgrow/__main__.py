import sys

from fxgrow.cli import main

sys.exit(main())
