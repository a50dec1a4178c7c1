"""oumi-megatron: GRPO (and SFT) on Megatron-Core, plugged into Oumi.

Importing this package registers `TrainerType.MEGATRON_GRPO` / `MEGATRON_SFT` with Oumi
(immediately if Oumi is loaded, else the moment Oumi's config module is imported).
"""

from oumi_megatron.registration import register_with_oumi

__version__ = "0.1.0"

register_with_oumi()
