"""The library warnings `aloe.core.quiet` silences are exactly the ones it names: the same message
from another module, or another message from the same module, still shows."""

from __future__ import annotations

import logging
import warnings

import pytest

import aloe  # noqa: F401 - importing the package installs the filters
from aloe.core import quiet

SILENCED = [
    ("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
     "transformers.modeling_utils"),
    ("`gradient_checkpointing_enable` is deprecated and will be removed in v6.", FutureWarning,
     "transformers.modeling_utils"),
    ("`gradient_checkpointing_disable` is deprecated and will be removed in v6.", FutureWarning,
     "transformers.modeling_utils"),
    ("`torch.jit.script_method` is deprecated. Please switch to `torch.compile`.",
     DeprecationWarning, "torch.jit._script"),
]


def _shown(message: str, category: type[Warning], module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        quiet._INSTALLED = False  # catch_warnings reset the filters: install them again
        warnings.simplefilter("always")
        quiet.install()
        warnings.warn_explicit(message, category, filename=f"{module}.py", lineno=1,
                               module=module)
    return bool(caught)


@pytest.mark.parametrize("message, category, module", SILENCED)
def test_each_named_warning_is_silenced_only_where_it_is_raised(message: str, category: type,
                                                                module: str) -> None:
    assert not _shown(message, category, module)
    assert _shown(message, category, "aloe.stages.training")  # the same words from elsewhere
    assert _shown("`something_else` is deprecated", category, module)


def test_bitsandbytes_optional_kernel_notice_is_dropped_and_nothing_else() -> None:
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    kept: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s", "x")
        logger.warning("Something else went wrong")
    finally:
        logger.removeHandler(handler)
    assert kept == ["Something else went wrong"]
