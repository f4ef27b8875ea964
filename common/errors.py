"""One-line errors for users, raised anywhere and printed once by the run scripts."""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

# A full disk, a quota, a file-size limit, a read-only or forbidden folder: the user's to fix, not a crash.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class PipelineError(Exception):
    """A problem the user can fix (bad input, missing file); printed as one line, no traceback."""


def run_main(main: Callable[[], int | None], lock_outputs: bool = True) -> None:
    """Entry point wrapper for the run scripts: PipelineError -> `error: ...` on stderr, exit 2. A script locks the
    output folder it writes (common/locks.py) when it resolves its flags."""
    from common import locks

    locks.arm()
    try:
        code = main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        from common.paths import output_root

        where = exc.filename or output_root()
        print(f"error: {where}: could not write ({os.strerror(exc.errno)}); free disk space or choose a writable "
              f"--output-root, then run the same command again to resume (finished files are kept whole)",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def log_line(message: str) -> None:
    """Print above any open progress bar, unbuffered so logs of background runs stay current."""
    from tqdm import tqdm

    tqdm.write(message)
    sys.stdout.flush()
