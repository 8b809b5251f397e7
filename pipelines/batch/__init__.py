"""Batch runs over a manifest: overlap of stages, a resumable ledger, sharding over ranks, a report.

A batch run sends every case of one manifest split through the same :class:`~pipelines.segment.Segmenter`
as ``medseg segment`` and writes ``OUTDIR/<case_id>/``. Around that it keeps what a study needs to
stop, resume and audit a run of hundreds of cases:

* ``OUTDIR/ledger.jsonl``: one JSON record per finished case (ok or failed), appended, flushed and
  fsynced as each case ends. A case is done only when its record says so. Under ``torchrun`` each
  rank appends to ``OUTDIR/ledger.rank<r>.jsonl`` and rank 0 merges the shards into ``ledger.jsonl``
  at the end; the merged file keeps every record in time order and the latest record of a case
  decides its state.
* ``OUTDIR/batch.json``: the bundle (name, version, model sha256) the folder belongs to. A run of a
  different bundle into the same folder is refused.
* ``OUTDIR/logs/batch-<UTC time>-rank<r>.log``: the log of each run and rank, with tracebacks.
* ``OUTDIR/report.csv`` and ``OUTDIR/report.html``: per-structure volumes of every case, and a
  self-contained page (summary, provenance, failures, previews embedded as data URIs).
* ``OUTDIR/.medseg-batch.lock``: present while a run holds the folder (``fcntl.flock``, naming the
  holder's host and PID); a second run on the folder, resuming or not, is refused at once. Staging
  folders a killed run left behind are removed when the next run starts.

Modules, each one job (import names from the module that defines them; this file imports nothing):

* :mod:`pipelines.batch.options`: :class:`BatchOptions`, :class:`BatchSummary`, the splits (light: the
  command line imports it while parsing).
* :mod:`pipelines.batch.ledger`: reading, merging and appending ledger records.
* :mod:`pipelines.batch.lock`: the exclusive lock on the output folder (and what it holds on NFS).
* :mod:`pipelines.batch.folder`: the output-folder checks, stale staging, and ``batch.json``.
* :mod:`pipelines.batch.ranks`: the few torch.distributed steps a run over several ranks needs.
* :mod:`pipelines.batch.pipeline`: the load / infer / write threads of one rank.
* :mod:`pipelines.batch.run`: :func:`run_batch`, which ties them together.
* :mod:`pipelines.batch.report`: ``report.csv`` and ``report.html`` from an output folder.
"""
