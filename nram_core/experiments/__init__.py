"""Experiment suites: the paper's comparison and its open questions, one command each.

``run_suite`` trains every model of a suite on the same data with the same budget
(preset, epochs, seeds, caps), evaluates each on dev with the official metrics, overall
and per segment of user history length, and writes into the suite folder

  suite.json           the settings (a rerun with other settings is refused)
  runs/MODEL/seedS/    one Trainer run folder per model and seed; result.json, written
                       last, is the done marker: a rerun skips finished runs and resumes
                       an interrupted one from its last finished epoch
  results.csv          one row per model and seed (metrics, training time, parameters)
  segments.csv         the same metrics per history-length segment
  results.md           mean ± std over seeds, per-segment AUC, attention figures, and
                       whether the paper's ordering NRAM > DKN > Wide&Deep holds

The app's Experiments page draws the charts from the same rows.

Protocol: every model trains ``epochs`` epochs and is evaluated once, after the last
epoch; there is no early stopping and no epoch picked on dev, for NRAM or the baselines.

Modules: ``suites`` (which models, which overrides), ``runner`` (the data loaded once for
every model by ``load_suite_data``, each run set up by ``train.prepare_run``, evaluation, the
resumable folder) and ``report`` (CSV and Markdown).
"""
from .report import (ATTENTION_KEYS, RESULT_FILE, paper_ordering, read_records, results_markdown, results_rows,
                     segment_rows, summarise, write_reports)
from .runner import (Cancelled, Progress, SuiteData, default_out, experiments_dir, list_suites, load_suite_data,
                     run_one, run_suite, suite_run_key)
from .suites import (HEADS, NEGATIVES, SUITE_NAMES, ModelSpec, SuiteSettings, heads_width, model_label,
                     run_configs, suite_groups, suite_specs)

__all__ = ["ATTENTION_KEYS", "RESULT_FILE", "paper_ordering", "read_records", "results_markdown", "results_rows",
           "segment_rows", "summarise", "write_reports", "Cancelled", "Progress", "SuiteData", "default_out",
           "experiments_dir", "list_suites", "load_suite_data", "run_one", "run_suite",
           "suite_run_key", "HEADS", "NEGATIVES", "SUITE_NAMES", "ModelSpec", "SuiteSettings", "heads_width",
           "model_label", "run_configs", "suite_groups", "suite_specs"]
