"""Which errors stop a study (the machine's) and which are a trial's own failure."""
from __future__ import annotations

import errno
import os

import pytest

from svite_search.search.stop import infrastructure_error


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EFBIG, errno.EDQUOT])
def test_storage_errors_name_the_path_and_the_cause(code: int) -> None:
    err = OSError(code, os.strerror(code), "/study/trials/3/last.pt")
    assert infrastructure_error(err) == f"/study/trials/3/last.pt: {os.strerror(code)} ({errno.errorcode[code]})"


def test_a_storage_error_behind_a_library_error_is_found() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/study/trials/0/last.pt")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as err:
        assert infrastructure_error(err).startswith("/study/trials/0/last.pt: No space left on device")


@pytest.mark.parametrize("err", [RuntimeError("a bug"), ValueError("nan"), FileNotFoundError(errno.ENOENT, "gone", "x"),
                                 MemoryError()])
def test_a_trials_own_failure_is_not_the_machines(err: BaseException) -> None:
    assert infrastructure_error(err) is None
