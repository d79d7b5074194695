"""`keras_embed.migration`, the compatibility path of `swap`, `unswap` and
`MigrationWarning` from before they moved to `keras_embed.saving.migration`."""

import os
import subprocess
import sys


def test_reached_after_a_bare_import_in_a_fresh_process():
    code = (
        "import keras_embed\n"
        "from keras_embed.saving import migration\n"
        "assert keras_embed.migration.MigrationWarning is migration.MigrationWarning\n"
        "assert keras_embed.migration.swap is keras_embed.swap\n"
        "assert 'migration' not in keras_embed.__all__\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_other_missing_names_keep_pythons_message():
    import keras_embed

    try:
        keras_embed.no_such_name
    except AttributeError as error:
        assert str(error) == "module 'keras_embed' has no attribute 'no_such_name'"
    else:
        raise AssertionError("no AttributeError")
