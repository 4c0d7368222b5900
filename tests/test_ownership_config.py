"""The ``[ownership]`` section (every owned kind) and its deprecated alias ``[threads]``."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.app import _lookup_versions
from gateway.config import ConfigError, parse
from tests.stack import deep_merge
from tests.test_config import MINIMAL


def config_of(extra: dict[str, Any]) -> Any:
    return parse(deep_merge(MINIMAL, extra))


def test_the_ownership_section_and_its_defaults() -> None:
    settings = config_of({}).ownership
    assert (settings.enabled, settings.unknown, settings.list_scan_pages) == (True, "deny", 10)
    given = config_of(
        {
            "ownership": {
                "enabled": False,
                "unknown": "allow",
                "cache_ttl_s": 0,
                "lookup_timeout_s": 2,
                "record_ttl_days": 30,
                "list_scan_pages": 3,
            }
        }
    ).ownership
    assert (given.enabled, given.unknown, given.cache_ttl_s) == (False, "allow", 0.0)
    assert (given.lookup_timeout_s, given.record_ttl_days, given.list_scan_pages) == (2.0, 30, 3)


def test_threads_is_a_deprecated_alias_that_still_works() -> None:
    settings = config_of(
        {"threads": {"ownership": False, "unknown": "allow", "cache_ttl_s": 5}}
    ).ownership
    assert (settings.enabled, settings.unknown, settings.cache_ttl_s) == (False, "allow", 5.0)
    # Keys of the two sections that do not overlap combine.
    both = config_of({"threads": {"unknown": "allow"}, "ownership": {"list_scan_pages": 2}})
    assert (both.ownership.unknown, both.ownership.list_scan_pages) == ("allow", 2)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"threads": {"unknown": "allow"}, "ownership": {"unknown": "allow"}},
            "threads.unknown: deprecated alias of ownership.unknown, which is given too: "
            "keep that one",
        ),
        ({"threads": {"unknown": "sometimes"}}, "threads.unknown: must be one of deny, allow"),
        (
            {"ownership": {"list_scan_pages": 0}},
            "ownership.list_scan_pages: must be between 1 and 100",
        ),
        (
            {"ownership": {"lookup_api_version": "2099-01-01"}},
            "ownership.lookup_api_version: must be one of api.versions",
        ),
        ({"ownership": {"threads": True}}, "ownership.threads: unknown key"),
    ],
)
def test_ownership_problems(extra: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_of(extra)
    assert expected in err.value.problems


def test_each_kind_is_looked_up_with_an_api_version_that_has_its_lookup_row() -> None:
    v1_only = config_of({"api": {"versions": ["2024-02-15-preview"]}})
    assert _lookup_versions(v1_only)["thread_id"] == "2024-02-15-preview"
    both = config_of(
        {
            "api": {"versions": ["2024-02-15-preview", "2024-05-01-preview"]},
            "ownership": {"lookup_api_version": "2024-02-15-preview"},
        }
    )
    assert _lookup_versions(both)["thread_id"] == "2024-02-15-preview"
