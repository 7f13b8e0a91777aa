"""``python -m wxgate_plugins.storages.nx_quiet ARGS``: nx-27017 with warnings-only logs.

At its default level the server logs every command with its documents: a growing
file, CPU spent on every request, and stored data (phones, sealed keys) in a log.
"""

import logging
import sys

if __name__ == "__main__":
    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    # its SQLite layer warns on every $group it answers through its fallback path (correctly)
    logging.getLogger("neosqlite").setLevel(logging.ERROR)
    from nx_27017.nx_27017 import main  # type: ignore[import-untyped]

    sys.argv[0] = "nx-27017"
    main()
