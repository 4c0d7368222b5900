"""The generic declarations (gateway/config/schema.py, reader.py) on small sections of their own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pytest

from gateway.config.reader import Problems, read
from gateway.config.schema import (
    REQUIRED,
    Row,
    at,
    between,
    env_overrides,
    keys,
    non_empty,
    problem,
    rows,
    setting,
    table_name,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scalars:
    name: str = setting("x", "a string")
    count: int = setting(3, "an integer", check=between(1, 10))
    ratio: float = setting(0.5, "a number")
    flag: bool = setting(False, "a flag")
    mode: Literal["a", "b"] = setting("a", "a choice")
    maybe: int | None = setting(None, "optional")


def read_problems(cls: type, data: Any, path: str = "s") -> tuple[Any, list[str]]:
    found = Problems()
    out: Any = read(cls, data, path, found)
    return out, found.items


def test_defaults_when_nothing_is_written() -> None:
    out, found = read_problems(Scalars, {})
    assert found == []
    assert out == Scalars()


def test_values_of_the_declared_types_are_read() -> None:
    data = {"name": "n", "count": 10, "ratio": 2, "flag": True, "mode": "b", "maybe": 0}
    out, found = read_problems(Scalars, data)
    assert found == []
    assert out == Scalars(name="n", count=10, ratio=2.0, flag=True, mode="b", maybe=0)
    assert isinstance(out.ratio, float)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": 1}, "s.name: must be a string"),
        ({"count": "3"}, "s.count: must be an integer"),
        ({"count": True}, "s.count: must be an integer"),
        ({"count": 2.0}, "s.count: must be an integer"),
        ({"count": 11}, "s.count: must be between 1 and 10"),
        ({"ratio": True}, "s.ratio: must be a number"),
        ({"ratio": float("nan")}, "s.ratio: must be a number"),
        ({"ratio": float("inf")}, "s.ratio: must be a number"),
        ({"flag": 1}, "s.flag: must be true or false"),
        ({"mode": "c"}, "s.mode: must be one of a, b"),
        ({"mode": 1}, "s.mode: must be one of a, b"),
        ({"maybe": "x"}, "s.maybe: must be an integer"),
        ({"colour": "blue"}, "s.colour: unknown key"),
    ],
)
def test_each_wrong_value_is_one_problem_and_keeps_the_default(
    data: dict[str, Any], expected: str
) -> None:
    out, found = read_problems(Scalars, data)
    assert found == [expected]
    assert out == Scalars()


def test_every_problem_at_once_in_declaration_order_then_unknown_keys() -> None:
    _, found = read_problems(Scalars, {"zzz": 1, "count": 0, "name": 5, "flag": "no"})
    assert found == [
        "s.name: must be a string",
        "s.count: must be between 1 and 10",
        "s.flag: must be true or false",
        "s.zzz: unknown key",
    ]


def test_a_section_that_is_not_a_table() -> None:
    out, found = read_problems(Scalars, [1, 2])
    assert (out, found) == (Scalars(), ["s: must be a table"])
    assert problem("", "must be a table") == "(root): must be a table"


@dataclass(frozen=True, slots=True, kw_only=True)
class Lists:
    tags: tuple[str, ...] = setting(("a",), "a list", check=non_empty("must list one"))
    kinds: frozenset[str] = setting(frozenset(), "allowed values", allowed={"x", "y"})
    even: tuple[str, ...] = setting(
        (), "per item", each=lambda s: None if len(s) % 2 == 0 else "odd"
    )


def test_string_lists() -> None:
    out, found = read_problems(Lists, {"tags": ["b", "c"], "kinds": ["x", "x"], "even": ["ab"]})
    assert found == []
    assert out == Lists(tags=("b", "c"), kinds=frozenset({"x"}), even=("ab",))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"tags": "a"}, ["s.tags: must be a list of strings"]),
        ({"tags": []}, ["s.tags: must list one"]),
        (
            {"tags": ["a", "", 3]},
            ["s.tags[1]: must be a non-empty string", "s.tags[2]: must be a non-empty string"],
        ),
        ({"kinds": ["x", "z"]}, ["s.kinds[1]: unknown value 'z'"]),
        ({"even": ["ab", "abc"]}, ["s.even[1]: odd"]),
    ],
)
def test_string_list_problems_name_the_item(data: dict[str, Any], expected: list[str]) -> None:
    out, found = read_problems(Lists, data)
    assert found == expected
    assert out == Lists()  # a list with a bad item is not half-taken


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf:
    name: str = table_name()
    size: int = setting(REQUIRED, "required", check=between(1, 9))
    note: str = setting("", "optional")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    leaf: Leaf = setting(Leaf(size=1))
    optional: Leaf | None = setting(None, "an optional table")
    many: tuple[Leaf, ...] = setting(())
    named: Mapping[str, Leaf] = setting(
        factory=dict, names=lambda n: None if n.islower() else "lower case only"
    )


def test_nested_array_and_named_tables() -> None:
    data = {
        "leaf": {"size": 2},
        "optional": {"size": 3},
        "many": [{"size": 4}, {"size": 5, "note": "n"}],
        "named": {"a": {"size": 6}},
    }
    out, found = read_problems(Tree, data, "")
    assert found == []
    assert out.leaf == Leaf(size=2)
    assert out.optional == Leaf(size=3)
    assert out.many == (Leaf(size=4), Leaf(size=5, note="n"))
    assert out.named == {"a": Leaf(name="a", size=6)}


def test_a_missing_plain_section_is_read_as_empty_so_its_required_keys_are_reported() -> None:
    out, found = read_problems(Tree, {}, "")
    assert found == ["leaf.size: is required"]
    assert out.optional is None and out.many == () and out.named == {}


def test_problems_in_nested_tables_carry_their_whole_path() -> None:
    data = {
        "leaf": 5,
        "optional": "x",
        "many": [{"size": 0}, 7, {"size": 1, "extra": 1}],
        "named": {"B": {"size": 1}, "c": {}, "d": 4},
    }
    out, found = read_problems(Tree, data, "t")
    assert found == [
        "t.leaf: must be a table",
        "t.leaf.size: is required",  # a lone table is still read, so its checks run
        "t.optional: must be a table",  # an optional one is left out
        "t.many[0].size: must be between 1 and 9",
        "t.many[1]: must be a table",
        "t.many[2].extra: unknown key",
        "t.named.B: lower case only",
        "t.named.c.size: is required",
        "t.named.d: must be a table",
    ]
    assert len(out.many) == 2  # the item that is not a table is skipped
    assert set(out.named) == {"B", "c"}


def test_arrays_and_named_tables_must_have_their_shape() -> None:
    _, found = read_problems(Tree, {"leaf": {"size": 1}, "many": {"size": 1}, "named": []}, "")
    assert found == ["many: must be an array of tables", "named: must be a table"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    low: int = setting(0, "lower bound")
    high: int = setting(10, "upper bound")
    label: str = setting(REQUIRED, "label", env="WINDOW_LABEL", missing="is required")
    code: str = setting(REQUIRED, "code", missing="must name a code")
    __refused__: ClassVar[Mapping[str, str]] = {"secret": "never here"}

    def __check__(self, path: str) -> Iterable[str]:
        if self.low > self.high:
            yield problem(at(path, "low"), "must not exceed high")
        if not self.label:
            yield problem(at(path, "label"), "must not be empty")


def test_required_keys_and_their_messages() -> None:
    _, found = read_problems(Window, {})
    assert found == [
        "s.label: is required (here or in WINDOW_LABEL)",
        "s.code: must name a code",
    ]


def test_cross_field_checks_run_after_the_keys() -> None:
    _, found = read_problems(Window, {"low": 11, "label": "", "code": "c"})
    assert found == ["s.low: must not exceed high", "s.label: must not be empty"]


def test_a_cross_field_problem_on_a_path_with_a_problem_already_is_dropped() -> None:
    _, found = read_problems(Window, {"low": "x", "high": -1, "label": 3, "code": "c"})
    # label failed to read (blank ""): its own problem is the one reported.
    assert found == ["s.low: must be an integer", "s.label: must be a string"]
    _, found = read_problems(Window, {"low": 11, "code": "c"})
    assert found == [
        "s.label: is required (here or in WINDOW_LABEL)",
        "s.low: must not exceed high",
    ]


def test_refused_keys_say_why() -> None:
    _, found = read_problems(Window, {"label": "l", "code": "c", "secret": "s"})
    assert found == ["s.secret: never here"]


@dataclass(frozen=True, slots=True)
class Core:
    """A core object that is not a declared section."""

    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreSettings:
    a: int = setting(1, "first part")
    b: int = setting(2, "second part")

    def build(self) -> Core:
        return Core(self.a + self.b)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySource:
    key_file: str | None = setting(None, "a file", key="file")
    key_url: str | None = setting(None, "a URL", key="url")

    def __check__(self, path: str) -> Iterable[str]:
        if (self.key_file is None) == (self.key_url is None):
            yield problem(path, "needs exactly one of file, url")


@dataclass(frozen=True, slots=True)
class Flat:
    core: Core = setting(inline=True, shape=CoreSettings)
    source: KeySource = setting(inline=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    one: Core = setting(Core(3), "built", shape=CoreSettings, shown="3")
    maybe: Core | None = setting(None, "optional core", shape=CoreSettings)
    all: tuple[Core, ...] = setting((), "a list of them", shape=CoreSettings)
    by_name: Mapping[str, Core] = setting(factory=dict, doc="named", shape=CoreSettings)
    flat: tuple[Flat, ...] = setting(())


def test_shaped_fields_are_read_as_their_settings_and_built() -> None:
    data = {
        "one": {"a": 5},
        "maybe": {"b": 0},
        "all": [{}, {"a": 0, "b": 0}],
        "by_name": {"x": {"a": 10}},
    }
    out, found = read_problems(Holder, data, "")
    assert found == []
    assert out == Holder(
        one=Core(7), maybe=Core(1), all=(Core(3), Core(0)), by_name={"x": Core(12)}
    )
    out, found = read_problems(Holder, {}, "")
    assert (out.one, found) == (Core(3), [])
    _, found = read_problems(Holder, {"one": {"c": 1}, "all": [{"a": "x"}]}, "")
    assert found == ["one.c: unknown key", "all[0].a: must be an integer"]


def test_inline_sections_read_the_parents_table() -> None:
    data = {"flat": [{"a": 1, "b": 1, "file": "/k"}, {"url": "u", "file": "f", "other": 1}]}
    out, found = read_problems(Holder, data, "")
    assert out.flat[0] == Flat(Core(2), KeySource(key_file="/k"))
    assert found == ["flat[1]: needs exactly one of file, url", "flat[1].other: unknown key"]
    assert keys(Flat) == {"a", "b", "file", "url"}


def test_rows_document_every_key_with_its_path_and_default() -> None:
    assert list(rows(Tree)) == [
        Row("leaf.size", "required", "required"),
        Row("leaf.note", '`""`', "optional"),
        Row("optional", "—", "an optional table"),
        Row("optional.size", "required", "required"),
        Row("optional.note", '`""`', "optional"),
        Row("many[].size", "required", "required"),
        Row("many[].note", '`""`', "optional"),
        Row("named.<name>.size", "required", "required"),
        Row("named.<name>.note", '`""`', "optional"),
    ]
    assert [r.key for r in rows(Holder, "h")] == [
        "h.one",
        "h.one.a",
        "h.one.b",
        "h.maybe",
        "h.maybe.a",
        "h.maybe.b",
        "h.all",
        "h.all[].a",
        "h.all[].b",
        "h.by_name",
        "h.by_name.<name>.a",
        "h.by_name.<name>.b",
        "h.flat[].a",
        "h.flat[].b",
        "h.flat[].file",
        "h.flat[].url",
    ]
    shown = {r.key: r.default for r in rows(Scalars)}
    assert shown == {
        "name": '`"x"`',
        "count": "`3`",
        "ratio": "`0.5`",
        "flag": "`false`",
        "mode": '`"a"`',
        "maybe": "—",
    }
    assert [r.default for r in rows(Lists)] == ['`["a"]`', "`[]`", "`[]`"]


def test_an_undocumented_or_undeclared_field_is_a_declaration_error() -> None:
    @dataclass(frozen=True)
    class NoDoc:
        x: int = setting(1)

    @dataclass(frozen=True)
    class Plain:
        x: int = 1

    with pytest.raises(TypeError, match=r"NoDoc\.x has no doc"):
        list(rows(NoDoc))
    with pytest.raises(TypeError, match=r"Plain\.x is not declared with setting"):
        read(Plain, {}, "", Problems())

    @dataclass(frozen=True)
    class Bare:
        cores: tuple[Core, ...] = setting((), "a core type without shape=")
        numbers: tuple[int, ...] = setting((), "only string lists")

    with pytest.raises(TypeError, match=r"Core\.total is not declared with setting"):
        read(Bare, {"cores": [{"total": 1}]}, "", Problems())
    with pytest.raises(TypeError, match="neither a section nor given a shape"):
        read(Bare, {"numbers": [1]}, "", Problems())


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    host: str = setting("h", "host", env="L_HOST")
    port: int = setting(1, "port", env="L_PORT")


@dataclass(frozen=True, slots=True, kw_only=True)
class Root:
    listener: Listener = setting(Listener())
    many: tuple[Listener, ...] = setting(())  # not overridable from the environment
    flat: Flat = setting(inline=True)


def test_env_overrides_come_from_the_declarations() -> None:
    assert list(env_overrides(Root)) == [
        ("L_HOST", ("listener", "host"), str),
        ("L_PORT", ("listener", "port"), int),
    ]


def test_declarations_stay_plain_dataclasses() -> None:
    # Direct construction (tests, benchmarks) keeps working without reading anything.
    assert Window(label="l", code="c").high == 10
    assert dataclasses.replace(Scalars(), count=99).count == 99  # no validation here
