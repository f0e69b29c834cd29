"""Code generated from protos/ba3c/v1/*.proto by `make protos`. Do not edit by hand."""
