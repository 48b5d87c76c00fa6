"""Presentation of library results: terminal tables, JSON, Markdown, JUnit (and an HTML report).

Text from data reaches any of them only through the function of `inert` for that output
(the console applies it to everything it prints; JSON keeps the exact text, strictly
encoded); report files are written whole with `files.write_atomic`.
"""

# Characters of one text (a completion, an input, an answer...) a cell of the HTML report shows
# by default; the rest is counted. 2,000 characters are a long page of prose, and a row of five
# such cells is about 10 kB of the file. Here, not in `html`, so that the CLI's option can
# default to it without loading Jinja2 for `--help`.
TEXT_LIMIT = 2_000
