"""A loaded function: the user's callable plus the conversions of each of its bindings.

Everything that can be decided once (which parameter takes which binding, how each value is
converted, where the result goes) is decided here at load time, so an invocation only converts
and calls.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

from funcplane_pyworker.bindings import (
    RETURN_BINDING,
    BindingSpec,
    Decoder,
    Encoder,
    has_implicit_output,
    make_decoder,
    make_encoder,
)


class FunctionLoadError(Exception):
    """The function's code and its bindings do not fit together; the message says how to fix it."""


@dataclass
class LoadedFunction:
    function_id: str
    name: str
    directory: str
    user_function: Callable[..., Any]
    is_async: bool
    # binding name -> how to convert the incoming value into the parameter of that name
    inputs: dict[str, Decoder] = field(default_factory=dict)
    # out parameter name -> how to convert what the function set()
    outputs: dict[str, Encoder] = field(default_factory=dict)
    return_encoder: Encoder | None = None
    context_parameter: str | None = None


def _annotations(user_function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(user_function)
    except Exception:  # unresolvable forward references: fall back to what the signature holds
        return {}


def _out_inner_type(annotation: Any) -> Any:
    """T for an annotation func.Out[T]; None when the annotation is missing or not Out."""
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, func.Out):
        arguments = typing.get_args(annotation)
        return arguments[0] if arguments else None
    return None


def _is_context_parameter(name: str, annotation: Any) -> bool:
    return name == "context" or (isinstance(annotation, type) and issubclass(annotation, func.Context))


def _trigger_of(specs: Iterable[BindingSpec]) -> BindingSpec | None:
    return next((spec for spec in specs if spec.type.lower().endswith("trigger")), None)


def build_function(
    *,
    function_id: str,
    name: str,
    directory: str,
    user_function: Callable[..., Any],
    bindings: list[BindingSpec],
) -> LoadedFunction:
    """Match the callable's parameters with the bindings; raise FunctionLoadError on a mismatch."""
    if not callable(user_function):
        raise FunctionLoadError(
            f"{name}: the entry point is a {type(user_function).__name__}, not a function"
        )
    signature = inspect.signature(user_function)
    hints = _annotations(user_function)
    specs = {spec.name: spec for spec in bindings}
    loaded = LoadedFunction(
        function_id=function_id,
        name=name,
        directory=directory,
        user_function=user_function,
        is_async=inspect.iscoroutinefunction(user_function)
        or inspect.iscoroutinefunction(user_function.__call__),
    )
    parameter_names = set()
    problems: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        parameter_names.add(parameter.name)
        annotation = hints.get(parameter.name, parameter.annotation)
        spec = specs.get(parameter.name)
        if spec is not None and spec.is_output and not spec.is_input:
            loaded.outputs[parameter.name] = make_encoder(spec, _out_inner_type(annotation))
        elif spec is not None:
            loaded.inputs[parameter.name] = make_decoder(spec, annotation)
        elif _is_context_parameter(parameter.name, annotation):
            loaded.context_parameter = parameter.name
        elif parameter.default is parameter.empty:
            problems.append(f"parameter {parameter.name!r} has no binding of that name")
    for spec in bindings:
        if spec.name == RETURN_BINDING:
            if spec.is_output:
                loaded.return_encoder = make_encoder(spec, hints.get("return", signature.return_annotation))
        elif spec.name not in parameter_names:
            problems.append(f"binding {spec.name!r} ({spec.type}) has no parameter of that name")
    if problems:
        raise FunctionLoadError(
            f"{name}: " + "; ".join(problems) + ". Each binding needs a parameter of the same name "
            f"in {getattr(user_function, '__qualname__', name)}() (except '$return'), and each "
            "parameter a binding (except `context` and parameters with defaults)"
        )
    trigger = _trigger_of(bindings)
    if loaded.return_encoder is None and has_implicit_output(trigger):
        assert trigger is not None
        loaded.return_encoder = make_encoder(trigger, hints.get("return"))
    return loaded
