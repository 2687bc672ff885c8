"""conrec_lib: the helper library of the CoNRec tutorial (LLM-based negative recommendation).

Each module holds one concept (see README.md, "Library map"); notebooks import them as
`import conrec_lib.data.simulate as simulate` and call one function per heavy step.
"""

__version__ = "0.1.0"
