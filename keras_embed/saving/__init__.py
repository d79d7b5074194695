"""Files: load errors, inspection and conversion, migration between stock and ours."""
