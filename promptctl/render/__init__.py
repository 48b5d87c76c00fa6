"""Presentation of library results: terminal, JSON (and later Markdown, JUnit, HTML)."""
