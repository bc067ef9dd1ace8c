#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    """Run administrative tasks."""
    if sys.version_info < (3, 12):  # noqa: UP036 - says so clearly on an older Python
        sys.exit(
            f"Jobtracker needs Python 3.12 or newer (Django 6); this is {sys.version.split()[0]}."
        )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobtracker.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
