"""`python -m seckill` is the `seckill` command."""

import sys

from seckill.cli import main

sys.exit(main())
