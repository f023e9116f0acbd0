"""``python -m invokeai_provider.cli``: the ``invokeai-airflow`` command (the container entrypoint uses it)."""

import sys

from invokeai_provider.cli.app import main

sys.exit(main())
