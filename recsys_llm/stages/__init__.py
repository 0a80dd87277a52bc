"""Pipeline stages: each reads its inputs from a run directory and writes one artifact back.

=============  =====================================================  ===============================
stage          module                                                 writes
=============  =====================================================  ===============================
prepare        :mod:`recsys_llm.stages.prepare`                       config.json data/ splits/ text/
finetune       :mod:`recsys_llm.stages.finetune`                      encoder/
embed          :mod:`recsys_llm.stages.embed`                         embeddings[_zeroshot]/
index build    :mod:`recsys_llm.stages.index`                         index/
retrieve       :mod:`recsys_llm.stages.retrieve`                      candidates/
hybrid         :mod:`recsys_llm.stages.hybrid`                        hybrid/
rerank         :mod:`recsys_llm.stages.rerank`                        reranker/ ranked/
select         :mod:`recsys_llm.stages.select`                        served.json
=============  =====================================================  ===============================

:mod:`recsys_llm.pipeline` chains them; the report (:mod:`recsys_llm.report`) reads what they wrote.
"""
