"""llama-cpp-python's own Llama and server, loaded under Hoshikage's rules so they run on every CPU (issue 20).

Tests compare Hoshikage with llama-cpp-python's ``Llama`` run directly, and the
benchmarks with ``python -m llama_cpp.server``. Both would crash on an AMX host
(llama.cpp's AMX weight buffer, llama.cpp issue #20824) and find no CPU backend
in a portable build, so both go through here:

    reference_llama(model_path=..., ...)          a Llama whose weights follow the rule
    python -m tests.llama_reference SERVER-ARGS   llama_cpp.server, likewise
"""

from __future__ import annotations

import contextlib
import runpy
import sys
from unittest import mock


def repack_allowed() -> bool:
    """What the daemon's default (cpu_weight_repack: auto) allows on this host; loads llama.cpp's backends."""
    from hoshikage.engine.cpu_weights import for_this_host

    return for_this_host("auto").allowed


@contextlib.contextmanager
def under_the_rule():
    """While open, every model llama-cpp-python's Llama loads follows the rule."""
    import llama_cpp.llama_cpp as bindings

    allowed = repack_allowed()
    default = bindings.llama_model_default_params

    def model_params():
        params = default()
        params.use_extra_bufts = allowed
        return params

    with mock.patch.object(bindings, "llama_model_default_params", model_params):
        yield


def reference_llama(*args, **kwargs):
    import llama_cpp

    with under_the_rule():
        return llama_cpp.Llama(*args, **kwargs)


if __name__ == "__main__":
    with under_the_rule():
        sys.argv = ["llama_cpp.server", *sys.argv[1:]]
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
