"""Ground-floor helpers with no knowledge of data formats, models or training:

- :mod:`.errors`: the expected errors, naming the file or config key at fault;
- :mod:`.cli`: the tools' one error style and their shared argparse types;
- :mod:`.atomic_files`: writes that never leave a half-written file;
- :mod:`.paths`: checks of input files and output paths before any work;
- :mod:`.run_files`: the names of the files in a run folder;
- :mod:`.device`: the device to run on;
- :mod:`.values`: what counts as a number in JSON files.
"""
