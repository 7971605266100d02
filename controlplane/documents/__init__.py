"""The document layer: parse, validate, canonicalise and diff configuration sections.

Pure: no I/O except reading the schema files shipped in `schemas/` (lazily, once). Imports
fast (the Terraform provider uses it at plan time); jsonschema is loaded on first validation.

    sections = parse_sections(yaml_text, scope="cluster")   # -> [Section]
    # raises InputRejectedError (HTTP 400/413) or DocumentValidationError (HTTP 422)
"""

from .diff import SectionDiff, diff_sections
from .durations import format_duration, parse_duration
from .errors import DocumentValidationError, InputRejectedError, ValidationIssue
from .key_names import is_valid_key_vault_key_name, sanitize_key_vault_name
from .limits import DEFAULT_LIMITS, Limits
from .registry import SCOPES, SectionType, section_types
from .rules import key_manager_type
from .sections import Section, parse_sections, section_from_stored, validate_document
from .tags import key_tag_problems
from .templates import TemplateError, render_key_name_template

__all__ = [
    "DEFAULT_LIMITS",
    "SCOPES",
    "DocumentValidationError",
    "InputRejectedError",
    "Limits",
    "Section",
    "SectionDiff",
    "SectionType",
    "TemplateError",
    "ValidationIssue",
    "diff_sections",
    "format_duration",
    "is_valid_key_vault_key_name",
    "key_tag_problems",
    "key_manager_type",
    "parse_duration",
    "parse_sections",
    "render_key_name_template",
    "sanitize_key_vault_name",
    "section_from_stored",
    "section_types",
    "validate_document",
]
