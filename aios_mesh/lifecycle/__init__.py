"""The model lifecycle: what keeps a capability trustworthy after its first release.

* :mod:`aios_mesh.lifecycle.versions` — capability versions side by side, and the
  compatibility rule a new version of the same major must keep;
* :mod:`aios_mesh.lifecycle.quality` — review outcomes as labels: accuracy against reviewers,
  override and automation rates, calibration of confidence;
* :mod:`aios_mesh.lifecycle.drift` — input and prediction drift against a reference window
  logged with the model;
* :mod:`aios_mesh.lifecycle.pause` — pause an automation (calls go to people or a declared
  fallback) and resume it, honoured by every process sharing the state.

Import from the submodules; this package keeps no state of its own.
"""
