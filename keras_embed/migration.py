"""`keras_embed.migration`, the path of `swap`, `unswap` and `MigrationWarning`
before they moved to `keras_embed.saving.migration`; kept so that code written
against it keeps working."""

from keras_embed.saving.migration import MigrationWarning, swap, unswap

__all__ = ["MigrationWarning", "swap", "unswap"]
