"""SCIM JSON ⇄ the JSON text fields of the core's protos (`resource_json`,
`user_json`, `group_json`, `value_json`), for the core and the gateway alike.

JSON text, not google.protobuf.Struct: both ends hold the document as Python
dicts, and json is about five times cheaper than building or reading a
Struct (which also turns every number into a double). Text from the wire is
checked to be JSON of the expected shape (core.fields); anything else is InvalidArgument,
never an exception the caller did not expect.

orjson does the common cases, several times faster than json (a page of 100
users costs about 3 ms less; issue #7), but only where its answer is json's:
- parsing: orjson refuses what json would accept differently (NaN, 1e400,
  lone surrogates, deep nesting), and those fall back to json, whose
  handling is the one documented here; orjson would read an integer of more
  than 64 bits as a float, so text with a run of 19 or more digits goes to
  json, which keeps it exact;
- writing: only documents read back from PostgreSQL (dumps_stored), where
  jsonb cannot hold NaN or Infinity (which orjson would write as null); a
  value orjson cannot write (an integer of more than 64 bits) falls back to json.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# a run of 19 digits; spelt so, it is searched about twice as fast as [0-9]{19}
_LONG_DIGITS = re.compile(r"[0-9][0-9]{18}")


def dumps(value: Any) -> str:
    """JSON text of a SCIM value, ASCII-only so that it is valid UTF-8 whatever
    the strings hold."""
    return json.dumps(value, separators=(",", ":"))


def dumps_stored(value: Any) -> str:
    """JSON text of a document as stored (or built from stored parts)."""
    return dumps_stored_bytes(value).decode()


def dumps_stored_bytes(value: Any) -> bytes:
    """dumps_stored as UTF-8 bytes (what an HTTP body needs)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer of more than 64 bits
        return dumps(value).encode()


def parse(text: str) -> Any:
    """A JSON value as json.loads reads it (rejecting NaN and Infinity
    literals); raises ValueError or RecursionError for what is not JSON."""
    if not _LONG_DIGITS.search(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # json decides, and says why
    return json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
