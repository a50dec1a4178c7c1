import sys

from oumi_megatron.cli import main

sys.exit(main())
