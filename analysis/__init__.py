"""Analysis of a result store: tidy loading, rliable-style statistics, the paper's figures and a report.

Entry point: ``python -m analysis.figures`` (docs/analysis.md). Modules: ``store`` (loading into tidy tables),
``stats`` (IQM, stratified bootstrap, probability of improvement, normalization), ``summary`` (final returns,
curves, per-cell summaries, the diverged rule), ``claims`` (the paper's findings as comparisons, their verdicts),
``plots`` (one function per figure, which grid gets which), ``style`` (colours and byte-stable saving), ``report``
(report.md), ``export`` (each grid's runs.parquet, final.csv and final.tex), ``figures`` (the command line).
"""
