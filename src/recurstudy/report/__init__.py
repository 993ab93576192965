"""The study report: everything the report notebook (``workflow/notebooks/report.py.ipynb``)
computes, tested here rather than in the notebook, which only reads result files and calls:

- :mod:`~recurstudy.report.disclosure`: ``<5`` cells, secondary suppression, the footnote;
- :mod:`~recurstudy.report.tables`: flow, Table 1, rates, claims, models, each model's extra
  tables (from the model's own description), pain means, provenance tables;
- :mod:`~recurstudy.report.figures`: Kaplan-Meier, mean cumulative function, forest plot, pain
  trajectories, placeholder; deterministic PNG bytes and ``<figure>`` HTML;
- :mod:`~recurstudy.report.text`: title, headings, summary and methods, captions, in the
  study's own words (``study_text``);
- :mod:`~recurstudy.report.render`: nbclient execution, offline HTML, escaped tables;
- :mod:`~recurstudy.report.formatting`: numbers, and escaping of text from the config or data.

Hashes, versions and the manifest are in :mod:`recurstudy.provenance`. The submodules (and
provenance, which the notebook also reads) are imported here so that the report rule's code hash
(``recurstudy.settings.source_hash("recurstudy.report")``, which follows imports) covers them.
"""

from recurstudy import provenance
from recurstudy.report import disclosure, figures, formatting, render, tables, text

__all__ = ["disclosure", "figures", "formatting", "provenance", "render", "tables", "text"]
