"""Code for the tests and benchmarks, not part of the installed package: tiny offline models (:mod:`.toy`), a
loopback vLLM server (:mod:`.vllm_server`, ``python -m devtools.vllm_cli start|stop``) and a ``w2s-eval serve``
process (:mod:`.serve_process`). Import it from the repository root (pytest's ``pythonpath``; the benchmarks put
the root on ``sys.path``)."""
