"""Shared leaves: the row schema, options, drop counts, grading, JSON lines, citations, redaction, decontamination and failure reports. They import nothing of ours outside this folder."""
