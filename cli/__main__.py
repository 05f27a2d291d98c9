"""``python -m scene_telemetry.cli``."""

import sys

from .main import main

sys.exit(main())
