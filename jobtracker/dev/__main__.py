"""``python -m jobtracker.dev run|test|services``: what ``./dev`` hands over to."""

import sys

from jobtracker.dev.commands import main

sys.exit(main())
