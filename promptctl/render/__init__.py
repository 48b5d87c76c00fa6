"""Presentation of library results: terminal tables, JSON, Markdown, JUnit (and an HTML report).

Text from data reaches any of them only through the function of `inert` for that output
(the console applies it to everything it prints; JSON keeps the exact text, strictly
encoded); report files are written whole with `files.write_atomic`.
"""
