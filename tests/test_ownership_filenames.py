from __future__ import annotations

import pytest

from gateway.ownership.filenames import FILENAME_STAMP_PREFIX, split_filename, stamp_filename
from gateway.ownership.rules import tenant_digest


def test_a_stamped_filename_splits_back_into_its_owner_and_name() -> None:
    owner = tenant_digest("k8s:team-a")
    stored = stamp_filename(owner, "report-2026.pdf")
    assert stored.startswith(FILENAME_STAMP_PREFIX)
    assert split_filename(stored) == (owner, "report-2026.pdf")


@pytest.mark.parametrize(
    "stored", ["report.pdf", "gwo-report.pdf", "gwo-" + "A" * 32 + "-x", "gwo-" + "a" * 31 + "-x"]
)
def test_an_unstamped_filename_has_no_owner(stored: str) -> None:
    assert split_filename(stored) == (None, stored)


def test_only_a_digest_can_stamp() -> None:
    with pytest.raises(ValueError, match="32 lowercase hex"):
        stamp_filename("team-a", "x.txt")
