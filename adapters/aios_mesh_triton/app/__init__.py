"""The server side of the Triton adapter, shipped as a file, not imported here.

``pytriton_app.py`` runs as a script (``PYTHON path/to/pytriton_app.py``) with the Triton
environment's interpreter (PyTriton, numpy<2), never in the process that imports
:mod:`aios_mesh_triton`; :func:`aios_mesh_triton.launch.server_script` finds it. It sits alone
in this folder so that, run as a script, nothing beside it shadows a module it imports.
"""
