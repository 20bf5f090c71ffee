"""Ground-floor helpers with no knowledge of data formats, models or training: errors
(:mod:`.errors`), atomic file writes (:mod:`.atomic_files`), path checks (:mod:`.paths`),
device choice (:mod:`.device`) and the tools' error handling (:mod:`.cli`)."""
