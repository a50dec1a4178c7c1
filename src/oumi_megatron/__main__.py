import sys

from oumi_megatron.cli import main

if __name__ == "__main__":  # not when a spawned rollout process imports the main module
    sys.exit(main())
