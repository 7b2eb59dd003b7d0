"""``python -m voicefleet`` is the ``voicefleet`` command."""

import sys

from voicefleet.cli import main

sys.exit(main())
