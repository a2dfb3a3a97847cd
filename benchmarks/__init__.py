"""Every measurement of the project (installed as ``introllm.benchmarks``): the engine against Hugging
Face generate (``engine``), the vLLM backend (``vllm_engines``), the paper's Table 3 over contexts
(``contexts``, on a ``random_model`` of the paper's shape), the training step (``train_step``), whole
servers side by side (``servers``), torch dtypes (``torch_dtypes``) and rollout engines
(``rollout_engines``). ``introllm bench`` runs the first four; the others are scripts
(``python -m introllm.benchmarks.servers``). Libraries never import this package."""
