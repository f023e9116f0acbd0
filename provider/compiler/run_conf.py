"""Checks a run's conf against the DAG's Params before any task does work.

Airflow validates the conf keys that are Params (HTTP 400 at the trigger) but accepts any other key, and
offers no hook that refuses a trigger for one (3.3: ``SerializedParamsDict.deep_merge`` adds unknown keys as
free Params; dag and task policies run at parse time). A misspelt key would then be ignored and the run
would make images from the defaults without a word, so each compiled task refuses such a conf first.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Optional

from invokeai_provider.errors import RunConfError

__all__ = ["check_run_conf"]


def check_run_conf(conf: Optional[Mapping[str, Any]], accepted: Iterable[str]) -> None:
    """Raises `RunConfError` listing the conf's unknown keys (with the closest Param name) and the accepted ones."""
    names = sorted(set(accepted))
    unknown = sorted(set(conf or {}) - set(names))
    if not unknown:
        return
    described = []
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1)
        described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    raise RunConfError(f"run conf: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(described)}; this DAG's "
                       f"Params are: {', '.join(names) or '(none)'}")
