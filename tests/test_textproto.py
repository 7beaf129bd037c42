import pytest

from harness import textproto
from harness.errors import ConfigError


def test_nested_messages_strings_and_lists():
    msg = textproto.parse(
        """model_config_list {
             config { name: 'a' base_path: "/m/a" model_version_policy { specific { versions: 1 versions: 2 } } }
             config < name: "b", base_path: "/m/b" >
           }
           values: [1, 2, 3]  # a comment
        """
    )
    configs = msg["model_config_list"][0]["config"]
    assert [c["name"][0] for c in configs] == ["a", "b"]
    assert configs[0]["model_version_policy"][0]["specific"][0]["versions"] == [1, 2]
    assert msg["values"] == [1, 2, 3]


def test_scalars():
    msg = textproto.parse('a: true b: False c: -3 d: 2.5 e: "x\\"y" f: SOME_ENUM')
    assert msg == {
        "a": [True],
        "b": [False],
        "c": [-3],
        "d": [2.5],
        "e": ['x"y'],
        "f": ["SOME_ENUM"],
    }


def test_errors_carry_source_and_line():
    with pytest.raises(ConfigError, match=r"f.txt:2"):
        textproto.parse("a: 1\n: 2", "f.txt")
