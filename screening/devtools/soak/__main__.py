"""``python -m screening.devtools.soak '<options as JSON>'``: the soak worker (`manage.py soak`)."""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pbxscreen.settings")
    import django

    django.setup()
    from screening.devtools.soak.runner import Options, run

    return run(Options(**json.loads(sys.argv[1])))


if __name__ == "__main__":
    sys.exit(main())
