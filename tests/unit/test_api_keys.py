"""Named API keys: parsing, hashing, and which identity a presented key is."""

import pytest

from hoshikage.api_keys import SINGLE_KEY_NAME, find_key, hash_key, parse_api_keys, with_single_key
from hoshikage.config import ConfigError, load_settings


def test_plain_hashed_and_admin_keys_each_name_an_identity():
    keys = parse_api_keys({"alice": "alice-secret-1", "bob": hash_key("bob-secret-22"),
                           "ops": {"key": "ops-secret-333", "admin": True}})
    assert find_key(keys, "alice-secret-1").name == "alice"
    assert find_key(keys, "bob-secret-22").name == "bob"
    assert find_key(keys, hash_key("bob-secret-22")) is None  # the hash is not itself a key
    assert find_key(keys, "ops-secret-333").admin and not find_key(keys, "alice-secret-1").admin
    assert find_key(keys, "nobody's key") is None


def test_the_environment_form_and_its_mistakes():
    assert [key.name for key in parse_api_keys("a=key-number-1, b=key-number-2")] == ["a", "b"]
    for bad in ("justakey", {"a b": "key-number-1"}, {"a": "short"}, {"a": {"key": "key-number-1", "admin": 1}},
                {"a": {"key": "key-number-1", "role": "x"}}, ["a"]):
        with pytest.raises(ValueError):
            parse_api_keys(bad)


def test_the_single_api_key_is_one_admin_identity_and_may_not_clash():
    keys = with_single_key(parse_api_keys({"alice": "alice-secret-1"}), "the-old-single-key")
    found = find_key(keys, "the-old-single-key")
    assert found.name == SINGLE_KEY_NAME and found.admin
    with pytest.raises(ConfigError, match="api_keys"):
        load_settings(config_file=None, environ={"HOSHIKAGE_CONFIG": "/dev/null", "HOSHIKAGE_API_KEY": "k" * 10,
                                                 "HOSHIKAGE_API_KEYS": f"{SINGLE_KEY_NAME}=another-key-1"})
