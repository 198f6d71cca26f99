"""The model lifecycle: what keeps a capability trustworthy after its first release
(docs/guides/lifecycle.md).

* :mod:`~aios_mesh.lifecycle.versions` — capability versions side by side, and the
  compatibility rule a new version of the same major must keep;
* :mod:`~aios_mesh.lifecycle.agreement`, :mod:`~aios_mesh.lifecycle.evaluation`,
  :mod:`~aios_mesh.lifecycle.gates` — when two answers agree, scoring model versions on a
  labelled set, and the promotion gates ``aios-mesh promote`` judges;
* :mod:`~aios_mesh.lifecycle.quality` — review outcomes as labels: accuracy against reviewers,
  override and automation rates, calibration of confidence;
* :mod:`~aios_mesh.lifecycle.features`, :mod:`~aios_mesh.lifecycle.drift`,
  :mod:`~aios_mesh.lifecycle.drift_monitor` — input and
  prediction drift against a reference window logged with the model;
* :mod:`~aios_mesh.lifecycle.slo`, :mod:`~aios_mesh.lifecycle.live_quality` — SLO routing
  among candidate backends (with each model version's reviewed accuracy) and burn-rate
  alerts;
* :mod:`~aios_mesh.lifecycle.rollback` — automatic rollback of a canary that breaches its
  gates;
* :mod:`~aios_mesh.lifecycle.pause` — pause an automation (calls go to people or a declared
  fallback) and resume it, honoured by every process sharing the state.

Import from the submodules; this package keeps no state of its own.
"""
