"""``python -m fedgaze.cli``: the same as the ``fedgaze`` console script."""

import sys

from fedgaze.cli.main import main

sys.exit(main())
