"""Model Spec tooling: parse a spec, generate midtraining documents, AFT demonstrations and
held-out eval items from it, and check the evals for contamination. Guide:
docs/spec_tooling.md; command line: `python -m mtspec.spec --help`."""

from mtspec.spec.parse import Rule, Section, Spec, SpecError, parse_file, parse_text, render

__all__ = ['Rule', 'Section', 'Spec', 'SpecError', 'parse_file', 'parse_text', 'render']
