"""Reports rendered from ``results.json`` data only: the HTML report, the multi-target matrix and run diffs.

- :func:`conformance.reports.html.write_html` -- one self-contained ``report.html`` per run;
- :func:`conformance.reports.matrix.write_matrix` / :func:`~conformance.reports.matrix.matrix_markdown` --
  several runs side by side;
- :func:`conformance.reports.diff.diff` / :func:`~conformance.reports.diff.render_diff` -- what changed
  between two runs;
- :mod:`conformance.reports.commands` -- the ``report`` and ``diff`` commands of the CLI;
- :mod:`conformance.reports.schema` -- loading and validating ``results.json`` against
  ``spec/results.schema.json``.
"""
