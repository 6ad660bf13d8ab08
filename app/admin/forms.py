"""Portal forms, checked by the JSON API's own models, with errors keyed by field.

A text field left empty is the empty text; any other field left empty means "the default" (or
"none" for the limits: max_value, closed_through, the number rules and warn_remaining). So the
same model validates what a browser sends and what an API client sends, and says the same thing
about it.
"""

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.problems import Problem

Model = TypeVar("Model", bound=BaseModel)

# Errors keyed by field name; "" holds what concerns the whole form.
FieldErrors = dict[str, str]

TEXT = frozenset({"name", "format", "description", "reason"})
NULLABLE = frozenset(
    {
        "max_value",
        "closed_through",
        "number_profile",
        "max_length",
        "allowed_characters",
        "warn_remaining",
    }
)


class FormInvalid(Exception):
    def __init__(self, errors: FieldErrors) -> None:
        super().__init__(errors)
        self.errors = errors


def parse(model: type[Model], form: Mapping[str, str], fields: tuple[str, ...]) -> Model:
    """Validate the named fields of a form with ``model``; raise FormInvalid on any error."""
    data: dict[str, Any] = {}
    for name in fields:
        if name not in form:
            continue
        value = form[name].strip()
        if value or name in TEXT:
            data[name] = value
        elif name in NULLABLE:
            data[name] = None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise FormInvalid(validation_errors(error)) from None


def validation_errors(error: ValidationError) -> FieldErrors:
    errors: FieldErrors = {}
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        errors.setdefault(field, item["msg"])
    return errors


def problem_errors(
    problem: Problem, *, beside: Mapping[type[Problem], str] | None = None
) -> FieldErrors:
    """A refused change as form errors: beside the field it names, beside the field ``beside``
    gives for its kind of problem, or over the whole form."""
    if problem.errors:
        return {str(e["field"]): str(e["message"]) for e in problem.errors}
    for kind, field in (beside or {}).items():
        if isinstance(problem, kind):
            return {field: problem.detail}
    return {"": problem.detail}


def values(form: Mapping[str, str], defaults: Mapping[str, Any]) -> dict[str, str]:
    """What to show in the form's inputs: what was sent, else the defaults."""
    shown = {k: _shown(v) for k, v in defaults.items()}
    shown.update(form)
    return shown


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
