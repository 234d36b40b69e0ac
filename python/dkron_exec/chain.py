"""Runs an execution through a job's processors, in the order the job lists them."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .execution import Execution
from .processors import ProcessContext, Processor

log = logging.getLogger("dkron_exec.chain")


def run_chain(
    processors: Mapping[str, Processor],
    steps: Mapping[str, Mapping[str, str]],
    execution: Execution,
    ctx: ProcessContext,
) -> Execution:
    """Each step gets the previous step's execution and its own config plus ``reporting_node``.

    A processor that is missing or fails costs its own step only: the failure is recorded in
    ``processor_errors`` and the chain goes on with the execution as it was before that step.
    """
    for name, config in steps.items():
        processor = processors.get(name)
        if processor is None:
            execution = _record(execution, f"{name}: processor not found")
            continue
        try:
            execution = processor.process(execution, {**config, "reporting_node": ctx.node_name}, ctx)
        except Exception as exc:
            log.warning("processor %s failed on %s/%s: %s", name, execution.job_name, execution.key, exc)
            execution = _record(execution, f"{name}: {exc}")
    return execution


def _record(execution: Execution, message: str) -> Execution:
    return execution.replace(processor_errors=[*execution.processor_errors, message])
